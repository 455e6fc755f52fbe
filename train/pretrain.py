"""Pretrain SCALE (MLM, MEM, MRP, MFP, MAM + SIMCL) on the converted M5Product `pretrain` split.

    # one CPU / one GPU / several GPUs / several machines: only the accelerate config changes
    accelerate launch --config_file train/configs/single_gpu.yaml train/pretrain.py \
        --data_dir outputs/m5product --output_dir outputs/pretrain --model_config sample

The text encoder (and the tokenizer) come from a BERT checkpoint (`--text_encoder`, default: the offline
MiniLM-L6); every other part starts from scratch, as in the paper. Checkpoints (`accelerator.save_state`) go
to OUTPUT_DIR/checkpoints/step_N; `--resume_from_checkpoint latest` continues exactly where a run stopped.
After training, the modality weights and the per-modality-set map of `product_embeds` are fitted on the
model's own embeddings (`train/modality_set_calibration.py`, `--calibration_products`). The final model and
processor are saved with `save_pretrained` in OUTPUT_DIR (loadable with `AutoModel.from_pretrained`), with a
model card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from modeling_scale import MODALITIES, ScaleForPreTraining
from train.baselines import FrozenTextEncoder
from train.components import (
    DEFAULT_DATA_DIR,
    build_config,
    build_processor,
    corpus_texts,
    default_text_encoder,
    load_preset,
    load_split,
    parse_overrides,
)
from train.data import IndexedDataset, ScaleBatchCollator, check_modalities, only_columns_of
from train.modality_set_calibration import (
    AGREEMENT_PRODUCTS,
    CALIBRATION_PRODUCTS,
    calibrate_modality_sets,
    modality_weight_names,
)
from train.model_card import portable_reference, write_model_card
from train.publish import add_hub_arguments, push_training_output
from train.training_loop import add_training_arguments, make_accelerator, train
from train.vocabulary import extend_vocabulary, trim_vocabulary

LOSS_NAMES = (
    "loss",
    "mlm_loss",
    "mem_loss",
    "mrp_loss",
    "mfp_loss",
    "mam_loss",
    "contrastive_loss",
    "subset_loss",
    "distillation_loss",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="converted M5Product folder")
    parser.add_argument("--output_dir", default="outputs/pretrain")
    parser.add_argument("--model_config", default="sample", help="preset (paper, sample, tiny) or JSON file")
    parser.add_argument("--config_overrides", default=None, help='e.g. "use_simcl=false,num_fusion_layers=4"')
    parser.add_argument(
        "--table_in_caption",
        action="store_true",
        help="the paper's Table 8 T+Tab baseline: the serialised table follows the caption in one sequence "
        "read by the text encoder (and masked by MLM), no table encoder input (processor "
        "table_placement='in_caption', saved with the processor; the text encoder's max_text_length becomes "
        "the caption's plus the table's)",
    )
    parser.add_argument(
        "--text_encoder",
        default=default_text_encoder(),
        help="BERT folder initialising the text encoder; 'none' to start from scratch",
    )
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: --text_encoder's)")
    parser.add_argument(
        "--no_vocabulary_extension",
        action="store_true",
        help="do not append the corpus' CJK characters missing from the tokenizer",
    )
    parser.add_argument(
        "--trim_vocabulary",
        action="store_true",
        help="keep only the tokens the pretraining corpus uses (+ single characters), for a closed "
        "vocabulary such as the generated sample's: other text (evaluation, search queries) whose words the "
        "corpus lacks is split into characters and loses what the pretrained embeddings knew",
    )
    parser.add_argument(
        "--modalities",
        default=",".join(MODALITIES),
        help="comma-separated modalities to pretrain on (default: all five)",
    )
    parser.add_argument(
        "--calibration_products",
        type=int,
        default=CALIBRATION_PRODUCTS,
        help="products whose embeddings (all modalities and random subsets) fit the modality weights and the "
        "per-modality-set map of product_embeds after training "
        "(train/modality_set_calibration.py); 0 skips both",
    )
    parser.add_argument(
        "--agreement_products",
        type=int,
        default=AGREEMENT_PRODUCTS,
        help="products of the calibration that fit the modality weights; 0 keeps the plain mean of the "
        "modalities' embeddings (the paper's fusion)",
    )
    add_training_arguments(parser)
    add_hub_arguments(parser)
    args = parser.parse_args(argv)
    args.modalities = check_modalities(args.modalities.split(","))
    if args.text_encoder in (None, "none") and args.tokenizer is None:
        parser.error("without --text_encoder, give --tokenizer (a BERT-style WordPiece tokenizer folder)")
    return args


def alignment_scalars(outputs, batch) -> dict[str, torch.Tensor]:
    """Mean S[i, j] over the samples that have both modalities i and j (i <= j), for tracking."""
    scores, present = outputs.alignment_scores.detach().float(), outputs.modality_mask.bool()
    scalars = {}
    for i, first in enumerate(MODALITIES):
        for j in range(i, len(MODALITIES)):
            both = present[:, i] & present[:, j]
            if both.any():
                scalars[f"S/{first}-{MODALITIES[j]}"] = scores[both, i, j].mean()
    return scalars


def build_tokenizer(args: argparse.Namespace, dataset) -> tuple:
    """The tokenizer, the number of corpus characters added to it, and (when trimmed) each token's id in the
    original vocabulary."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.text_encoder)
    added, original_ids = 0, None
    needs_corpus = args.trim_vocabulary or not args.no_vocabulary_extension
    texts = corpus_texts(dataset) if needs_corpus else []
    if not args.no_vocabulary_extension:
        tokenizer, added = extend_vocabulary(tokenizer, texts)
    if args.trim_vocabulary:
        tokenizer, original_ids = trim_vocabulary(tokenizer, texts)
    return tokenizer, added, original_ids


def bert_word_embeddings(bert, original_ids: list[int] | None, vocab_size: int, std: float) -> torch.Tensor:
    """BERT's word embeddings re-indexed to our vocabulary: row i is BERT's row `original_ids[i]`; tokens BERT
    does not have (appended corpus characters) get fresh N(0, std) rows."""
    source = bert.get_input_embeddings().weight.detach()
    original = torch.as_tensor(original_ids if original_ids is not None else range(vocab_size))
    weight = torch.randn(vocab_size, source.shape[1]) * std
    known = original < source.shape[0]
    weight[known] = source[original[known]]
    return weight


def build_model(
    args: argparse.Namespace, config, original_ids: list[int] | None
) -> tuple[ScaleForPreTraining, FrozenTextEncoder | None]:
    """The model, its text encoder initialised from `--text_encoder`, and that encoder frozen as the
    distillation teacher (None without a text encoder or with `distillation_loss_weight=0`). The teacher
    reads our vocabulary: corpus characters the encoder never had keep the random rows the model starts
    from, where the frozen baseline row sees [UNK]."""
    model, teacher = ScaleForPreTraining(config), None
    if args.text_encoder not in (None, "none"):
        from transformers import BertModel

        bert = BertModel.from_pretrained(args.text_encoder)
        weight = bert_word_embeddings(bert, original_ids, config.vocab_size, config.initializer_range)
        bert.set_input_embeddings(torch.nn.Embedding.from_pretrained(weight, freeze=False))
        model.load_text_encoder_weights(bert)
        if config.distillation_loss_weight > 0:
            teacher = FrozenTextEncoder(bert)
    return model, teacher


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    from accelerate.utils import set_seed

    set_seed(args.seed)
    dataset = load_split(args.data_dir, "pretrain", "train")
    preset = load_preset(args.model_config)
    if args.table_in_caption:
        preset["processor"]["table_placement"] = "in_caption"
    tokenizer, added_characters, original_ids = build_tokenizer(args, dataset)
    config = build_config(preset, len(tokenizer), parse_overrides(args.config_overrides))
    processor = build_processor(tokenizer, config, preset["processor"])
    model, teacher = build_model(args, config, original_ids)
    accelerator.print(
        f"SCALE: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; "
        f"{len(dataset)} products; {added_characters} corpus characters added to the vocabulary; "
        f"modalities {', '.join(args.modalities)}"
    )

    from modeling_scale.collator_scale import DataCollatorForScalePretraining

    collate_fn = ScaleBatchCollator(
        processor,
        modalities=args.modalities,
        pretraining_collator=DataCollatorForScalePretraining(processor, config=config),
        seed=args.seed,
    )
    state = train(
        args,
        accelerator,
        model,
        IndexedDataset(only_columns_of(dataset, args.modalities)),
        collate_fn,
        loss_names=LOSS_NAMES,
        extra_scalars=alignment_scalars,
        tracker_project="scale_pretrain",
        extra_inputs=None if teacher is None else teacher.to(accelerator.device).teacher_inputs,
    )

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    modality_sets = None
    if args.calibration_products > 0:
        modality_sets = calibrate_modality_sets(
            unwrapped,
            processor,
            dataset,
            args.modalities,
            max_products=args.calibration_products,
            agreement_products=args.agreement_products,
            keep_probability=config.subset_keep_probability,
            batch_size=args.per_device_batch_size,
            num_workers=args.num_workers,
            seed=args.seed,
            accelerator=accelerator,
            show_progress=accelerator.is_local_main_process,
        )
        accelerator.print(f"modality weights {modality_weight_names(unwrapped)}")
        accelerator.print(f"modality-set statistics from {sum(modality_sets.values())} embeddings")
    unwrapped.save_pretrained(
        args.output_dir,
        is_main_process=accelerator.is_main_process,
        save_function=accelerator.save,
        state_dict=accelerator.get_state_dict(model),
    )
    if accelerator.is_main_process:
        processor.save_pretrained(args.output_dir)
        summary = {
            "updates": state.global_step,
            "epochs_started": state.epoch + 1,
            "products": len(dataset),
            "modalities": list(args.modalities),
            "model_config": portable_reference(args.model_config),
            "config_overrides": args.config_overrides,
            "table_placement": processor.table_placement,
            "text_encoder": args.text_encoder and portable_reference(args.text_encoder),
            "added_characters": added_characters,
            "vocabulary": len(tokenizer),
            "seed": args.seed,
            "per_device_batch_size": args.per_device_batch_size,
            "num_processes": accelerator.num_processes,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "learning_rate": args.learning_rate,
            "input_failures": state.extra["input_failures"],
            "modality_set_calibration": modality_sets,
            "modality_weights": modality_weight_names(unwrapped),
        }
        with open(os.path.join(args.output_dir, "training_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=1)
        write_model_card(args.output_dir, task="pretraining", training=summary)
        if args.push_to_hub:
            accelerator.print(f"pushed to https://huggingface.co/{push_training_output(args)}")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and the process group


if __name__ == "__main__":
    main(sys.argv[1:])
