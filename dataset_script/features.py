"""The converted M5Product schema, shared by the `datasets` builder and the Parquet converter."""

from __future__ import annotations

from datasets import Audio, ClassLabel, Features, Image, List, Value, Video


def m5product_features(label_names: list[str]) -> Features:
    """One product: caption, property/value table, media (embedded bytes; None when missing), labels.

    `label` is -1 when the annotation has no label or one outside the label list (the `datasets` convention
    for "no label"); `instance_id` groups the listings of one product for fine-grained retrieval.
    """
    return Features(
        {
            "item_id": Value("string"),
            "caption": Value("string"),
            "table": List({"key": Value("string"), "value": Value("string")}),
            "image": Image(),
            "video": Video(),
            "audio": Audio(),
            "label": ClassLabel(names=label_names),
            "instance_id": Value("string"),
        }
    )
