"""A `datasets` builder that reads the raw M5Product release layout directly.

`datasets` >= 4 no longer runs loading scripts, so `load_dataset` cannot use this class by name; instantiate
it instead (handy for a quick look at a raw folder, or to let `datasets` write Arrow/Parquet itself)::

    from dataset_script.builder import M5ProductRaw

    builder = M5ProductRaw(data_dir="outputs/sample_raw", config_name="retrieval_coarse")
    builder.download_and_prepare()
    gallery = builder.as_dataset(split="gallery")

For the shareable, resumable, multi-machine conversion use `python -m dataset_script.convert`, which reads
items with the same code (`raw_layout.build_example`) and writes the same features.
"""

from __future__ import annotations

import os

import datasets

from .features import m5product_features
from .raw_layout import CONFIG_SPLITS, build_example, load_annotations, read_labels, read_split_ids

logger = datasets.logging.get_logger(__name__)

_DESCRIPTION = "M5Product: five-modality e-commerce products (caption, table, image, video, audio)."
_CITATION = """@inproceedings{dong2022m5product,
  title={M5Product: Self-harmonized Contrastive Learning for E-commercial Multi-modal Pretraining},
  author={Dong, Xiao and Zhan, Xunlin and Wu, Yangxin and Wei, Yunchao and Kampffmeyer, Michael C. and
          Wei, Xiaoyong and Lu, Minlong and Wang, Yaowei and Liang, Xiaodan},
  booktitle={CVPR}, year={2022}}"""
_LICENSE = "M5Product: non-commercial research only, no redistribution."
IDS_PER_GENERATOR_CHUNK = 1000


class M5ProductRaw(datasets.GeneratorBasedBuilder):
    """Configs `pretrain` (train), `retrieval_coarse` / `retrieval_fine` (gallery, query), `classification`
    (train, test); pass the downloaded release folder as `data_dir`."""

    BUILDER_CONFIGS = [datasets.BuilderConfig(name=name) for name in CONFIG_SPLITS]
    DEFAULT_CONFIG_NAME = "pretrain"

    def _info(self) -> datasets.DatasetInfo:
        if not self.config.data_dir:
            raise ValueError("M5ProductRaw needs data_dir=<the raw release folder>")
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=m5product_features(read_labels(self.config.data_dir)),
            citation=_CITATION,
            license=_LICENSE,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        data_dir = os.path.abspath(os.path.expanduser(self.config.data_dir))
        generators = []
        for split in CONFIG_SPLITS[self.config.name]:
            ids = list(dict.fromkeys(read_split_ids(data_dir, self.config.name, split)))
            # a list in gen_kwargs lets download_and_prepare(num_proc=N) spread the chunks over processes
            step = IDS_PER_GENERATOR_CHUNK
            chunks = [ids[start : start + step] for start in range(0, len(ids), step)]
            generators.append(
                datasets.SplitGenerator(name=split, gen_kwargs={"data_dir": data_dir, "id_chunks": chunks})
            )
        return generators

    def _generate_examples(self, data_dir: str, id_chunks: list[list[str]]):
        label_ids = {name: index for index, name in enumerate(self.info.features["label"].names)}
        for ids in id_chunks:
            records = load_annotations(data_dir, set(ids))
            for item_id in ids:
                record = records.get(item_id)
                if record is None:
                    logger.warning(f"item {item_id}: in a split file but not in the annotation; skipped")
                    continue
                example, issues = build_example(data_dir, item_id, record, label_ids)
                if issues.record_problems:
                    logger.warning(f"item {item_id}: {'; '.join(issues.record_problems)}")
                if issues.corrupt_media or issues.malformed_pv or issues.unknown_label is not None:
                    logger.warning(
                        f"item {item_id}: corrupt media {issues.corrupt_media} (stored as missing), "
                        f"malformed pv segments {issues.malformed_pv}, unknown label {issues.unknown_label!r}"
                    )
                if example is not None:
                    yield item_id, example
