"""Fine-tune a pretrained SCALE for product category classification (`ScaleForProductClassification`).

    accelerate launch --config_file train/configs/single_gpu.yaml train/finetune.py \
        --model_name_or_path outputs/pretrain --data_dir outputs/m5product --output_dir outputs/finetune

Trains on the `classification` split `train` (every modality the products have), reports the accuracy on
`test`, and saves model + processor with `save_pretrained` (loadable with
`AutoModelForSequenceClassification.from_pretrained`) and a model card. Same checkpointing, exact resume,
tracking and accelerate configs as pretrain.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from modeling_scale import MODALITIES, ScaleForProductClassification
from train.components import DEFAULT_DATA_DIR, load_split
from train.data import IndexedDataset, ScaleBatchCollator, check_modalities, only_columns_of
from train.evaluation import classifier_accuracy
from train.model_card import portable_reference, write_model_card
from train.publish import add_hub_arguments, push_training_output
from train.training_loop import add_training_arguments, make_accelerator, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path", default="outputs/pretrain", help="pretrained SCALE folder")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--output_dir", default="outputs/finetune")
    parser.add_argument("--modalities", default=",".join(MODALITIES), help="comma-separated")
    parser.add_argument("--eval_batch_size", type=int, default=64)
    add_training_arguments(parser)
    add_hub_arguments(parser)
    parser.set_defaults(num_epochs=3, learning_rate=5e-4, text_encoder_lr_scale=0.2, warmup_ratio=0.1)
    args = parser.parse_args(argv)
    args.modalities = check_modalities(args.modalities.split(","))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    from accelerate.utils import set_seed
    from transformers import AutoProcessor

    set_seed(args.seed)
    train_split = load_split(args.data_dir, "classification", "train")
    train_split = train_split.filter(lambda label: label >= 0, input_columns="label")
    label_names = train_split.features["label"].names
    processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    model = ScaleForProductClassification.from_pretrained(
        args.model_name_or_path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
    )
    accelerator.print(f"fine-tuning on {len(train_split)} products, {len(label_names)} classes")
    collate_fn = ScaleBatchCollator(
        processor, modalities=args.modalities, label_column="label", seed=args.seed
    )
    state = train(
        args,
        accelerator,
        model,
        IndexedDataset(only_columns_of(train_split, args.modalities)),
        collate_fn,
        loss_names=("loss",),
        tracker_project="scale_finetune",
    )

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(
        args.output_dir,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        state_dict=accelerator.get_state_dict(model),
    )
    if accelerator.is_main_process:
        processor.save_pretrained(args.output_dir)
        test_split = load_split(args.data_dir, "classification", "test")
        accuracy = classifier_accuracy(
            unwrapped, processor, test_split, args.modalities, args.eval_batch_size, accelerator.device
        )
        accelerator.print(f"test accuracy ({'+'.join(args.modalities)}): {accuracy:.2f}")
        summary = {
            "updates": state.global_step,
            "products": len(train_split),
            "classes": len(label_names),
            "pretrained": portable_reference(args.model_name_or_path),
            "modalities": list(args.modalities),
            "seed": args.seed,
            "per_device_batch_size": args.per_device_batch_size,
            "num_processes": accelerator.num_processes,
            "learning_rate": args.learning_rate,
            "test_accuracy": accuracy,
            "input_failures": state.extra["input_failures"],
        }
        with open(os.path.join(args.output_dir, "training_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=1)
        write_model_card(args.output_dir, task="classification", training=summary)
        if args.push_to_hub:
            accelerator.print(f"pushed to https://huggingface.co/{push_training_output(args)}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group


if __name__ == "__main__":
    main(sys.argv[1:])
