import filecmp
import json
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from dataset_script.generate_sample import (
    CATEGORIES,
    GROUP_HARMONICS,
    GROUP_NAMES_ZH,
    GROUP_SHAPES,
    GROUPS,
    annotation_record,
    generate_sample,
    make_modality_unreliable,
    plan_sample,
)
from dataset_script.raw_layout import (
    ANNOTATION_FILE,
    SPLIT_FILES,
    media_path,
    parse_pv,
    read_labels,
    read_split_ids,
)


@pytest.fixture(scope="module")
def tiny_sample(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("tiny_raw"))
    summary = generate_sample(out_dir, "tiny", seed=0, num_proc=1)
    return out_dir, summary


def _annotations(raw_dir):
    with open(os.path.join(raw_dir, ANNOTATION_FILE), encoding="utf-8") as handle:
        return json.load(handle)


def _category(record):
    group, material, colour, motion, pitch = record["label"].split("/")
    return {"group": group, "material": material, "colour": colour, "motion": motion, "pitch": pitch}


def test_layout_and_splits_are_consistent(tiny_sample):
    raw_dir, summary = tiny_sample
    annotations = _annotations(raw_dir)
    labels = read_labels(raw_dir)
    assert len(annotations) == summary["num_items"] == 60
    assert len(labels) == len(CATEGORIES) == len(set(labels))
    for record in annotations.values():
        assert record["label"] in labels
        assert record["instance_id"]
        if "pv" in record:
            pairs, malformed = parse_pv(record["pv"])
            assert pairs and not malformed
    for config, split in SPLIT_FILES:
        ids = read_split_ids(raw_dir, config, split)
        assert ids, f"{config}/{split} is empty"
        assert set(ids) <= set(annotations)
    pretrain = set(read_split_ids(raw_dir, "pretrain", "train"))
    evaluation = {
        item_id
        for config in ("retrieval_coarse", "retrieval_fine")
        for split in ("gallery", "query")
        for item_id in read_split_ids(raw_dir, config, split)
    }
    assert not pretrain & evaluation, "pretraining must not see retrieval items"


def test_fine_queries_have_a_positive_of_the_same_instance(tiny_sample):
    raw_dir, _ = tiny_sample
    annotations = _annotations(raw_dir)
    gallery_instances = Counter(
        annotations[i]["instance_id"] for i in read_split_ids(raw_dir, "retrieval_fine", "gallery")
    )
    queries = read_split_ids(raw_dir, "retrieval_fine", "query")
    assert queries
    for item_id in queries:
        assert gallery_instances[annotations[item_id]["instance_id"]] >= 1


def test_media_are_real_files_that_decode(tiny_sample):
    from torchcodec.decoders import AudioDecoder, VideoDecoder

    raw_dir, summary = tiny_sample
    annotations = _annotations(raw_dir)
    counts = Counter()
    for item_id in annotations:
        for modality in ("image", "video", "audio"):
            counts[modality] += os.path.exists(media_path(raw_dir, modality, item_id))
    assert counts["image"] == summary["modality_counts"]["image"]
    assert counts["video"] == summary["modality_counts"]["video"] > 0
    assert counts["audio"] == summary["modality_counts"]["audio"] > 0
    assert counts["video"] < len(annotations) and counts["audio"] < len(annotations)
    item_id = next(i for i in annotations if os.path.exists(media_path(raw_dir, "video", i)))
    video = VideoDecoder(media_path(raw_dir, "video", item_id))
    assert 8 <= video.metadata.num_frames <= 16 and video[0].shape == (3, 64, 64)
    item_id = next(i for i in annotations if os.path.exists(media_path(raw_dir, "audio", i)))
    samples = AudioDecoder(media_path(raw_dir, "audio", item_id)).get_all_samples()
    assert samples.sample_rate == 16000 and samples.data.shape[-1] >= 2 * 16000 * 0.9


def test_same_seed_same_sample_other_seed_other_sample(tiny_sample, tmp_path):
    raw_dir, _ = tiny_sample
    again = tmp_path / "again"
    generate_sample(str(again), "tiny", seed=0, num_proc=1)
    for name in (ANNOTATION_FILE, "labels.txt", *SPLIT_FILES.values()):
        assert filecmp.cmp(os.path.join(raw_dir, name), again / name, shallow=False), name
    # libx264 output is not always byte-identical across processes, so only images and audio are compared
    for folder in ("images", "audios"):
        names = sorted(os.listdir(os.path.join(raw_dir, folder)))
        assert names == sorted(os.listdir(again / folder))
        _, mismatch, errors = filecmp.cmpfiles(os.path.join(raw_dir, folder), again / folder, names, False)
        assert not mismatch and not errors
    other = tmp_path / "other"
    generate_sample(str(other), "tiny", seed=1, num_proc=1)
    assert _annotations(str(other)) != _annotations(raw_dir)


def _shape_colour(path):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).reshape(-1, 3)
    saturation = (pixels.max(1) - pixels.min(1)) / np.maximum(pixels.max(1), 1)
    red, _, blue = pixels[saturation > 0.4].mean(0)  # the background is grey: only the shape is saturated
    return "red" if red > blue else "blue"


def _motion_direction(path):
    from torchcodec.decoders import VideoDecoder

    frames = VideoDecoder(path)[:].data.float().mean(1).numpy()  # (T, H, W); the square is the bright part
    columns = [(frame > frame.mean() + 40).sum(0) for frame in frames]
    centres = [(column * np.arange(len(column))).sum() / max(column.sum(), 1) for column in columns]
    return "left_to_right" if centres[-1] > centres[0] else "right_to_left"


def _spectrum(path):
    from torchcodec.decoders import AudioDecoder

    samples = AudioDecoder(path).get_all_samples()
    spectrum = np.abs(np.fft.rfft(samples.data[0].numpy()))
    return np.fft.rfftfreq(samples.data.shape[-1], 1 / samples.sample_rate), spectrum


def _fundamental(path):
    frequencies, spectrum = _spectrum(path)
    return float(frequencies[spectrum.argmax()])


def _partials(path, multiples=(2, 2.76, 3, 4, 5, 5.4)):
    """The multiples of the fundamental that carry a partial of at least 20 % of its amplitude."""
    frequencies, spectrum = _spectrum(path)
    fundamental = frequencies[spectrum.argmax()]
    near = [np.abs(frequencies / fundamental - m) < 0.03 * m for m in multiples]
    return {m for m, band in zip(multiples, near, strict=True) if spectrum[band].max() > 0.2 * spectrum.max()}


def test_each_modality_carries_its_own_category_factor(tiny_sample):
    """The design the "more modalities help" experiment relies on, checked on the decoded files."""
    raw_dir, _ = tiny_sample
    annotations = _annotations(raw_dir)
    checked = Counter()
    for item_id, record in annotations.items():
        factors = _category(record)
        en_nouns, zh_nouns, materials = GROUPS[factors["group"]]
        material_zh = {en: zh for zh, en in materials}[factors["material"]]
        if "pv" in record:
            pairs = parse_pv(record["pv"])[0]
            assert {"key": "材质", "value": material_zh} in pairs
            assert pairs[0] == {"key": "类目", "value": GROUP_NAMES_ZH[factors["group"]]}, "group cue"
            checked["table"] += 1
        if "title" in record:
            checked["text"] += 1
            checked["text_names_group"] += any(noun in record["title"] for noun in (*en_nouns, *zh_nouns))
            all_materials = [word for _, _, pairs in GROUPS.values() for pair in pairs for word in pair]
            assert not any(word in record["title"] for word in all_materials), "text reveals the material"
        image = media_path(raw_dir, "image", item_id)
        if os.path.exists(image):
            assert _shape_colour(image) == factors["colour"], item_id
            checked["image"] += 1
        video = media_path(raw_dir, "video", item_id)
        if os.path.exists(video):
            assert _motion_direction(video) == factors["motion"], item_id
            checked["video"] += 1
        audio = media_path(raw_dir, "audio", item_id)
        if os.path.exists(audio):
            assert ("low" if _fundamental(audio) < 450 else "high") == factors["pitch"], item_id
            expected = {m for m, _ in GROUP_HARMONICS[factors["group"]]} - {1}
            assert _partials(audio) == expected, f"{item_id}: timbre is the group cue"
            checked["audio"] += 1
    assert min(checked[m] for m in ("text", "table", "image", "video", "audio")) > 10
    # captions name the group, except the few deliberately noisy ones
    assert checked["text_names_group"] >= 0.85 * checked["text"]


def test_default_plan_has_the_papers_imperfections():
    items, splits = plan_sample(3000, seed=0)
    assert len(items) == 3000
    unimodal = sum(len(item.modalities) == 1 for item in items) / len(items)
    assert 0.03 < unimodal < 0.08
    assert sum("video" in item.modalities for item in items) / len(items) < 0.6
    assert sum("audio" in item.modalities for item in items) / len(items) < 0.6
    per_category = Counter(item.category for item in items)
    assert len(per_category) == len(CATEGORIES)
    assert max(per_category.values()) > 10 * min(per_category.values()), "categories must be long-tailed"
    listings = Counter(item.instance_id for item in items)
    assert sum(count > 1 for count in listings.values()) > 50
    assert len(splits["pretrain", "train"]) > len(items) / 2
    # several listings of one instance share a brand and model but are paraphrased
    instance = next(i for i, count in listings.items() if count >= 3)
    titles = [item.title for item in items if item.instance_id == instance]
    assert len(set(titles)) > 1 and len({title.split()[0] for title in titles}) == 1
    # the shared cues cross-modal contrastive learning can align: the group's shape in image and video, and
    # an instance's listings drawn alike (size, tint) with only small jitter
    assert all(item.shape == GROUP_SHAPES[CATEGORIES[item.category].group] for item in items)
    same = [item for item in items if item.instance_id == instance]
    assert max(item.shape_radius for item in same) - min(item.shape_radius for item in same) <= 2
    assert max(item.hue for item in same) - min(item.hue for item in same) <= 0.04


def test_a_noisy_modality_shows_unrelated_content_for_the_chosen_fraction(tiny_sample, tmp_path):
    """--noisy_modality audio --noisy_fraction 0.5: half the listings with audio sound like another instance's
    listing (its pitch and timbre, not their own category's); everything else is the default sample's."""
    raw_dir, _ = tiny_sample
    noisy_dir = str(tmp_path / "noisy")
    summary = generate_sample(
        noisy_dir, "tiny", seed=0, num_proc=1, noisy_modality="audio", noisy_fraction=0.5
    )
    with open(os.path.join(noisy_dir, "sample_info.json"), encoding="utf-8") as handle:
        assert json.load(handle)["noisy_items"] == summary["noisy_items"]
    assert (summary["noisy_modality"], summary["noisy_fraction"]) == ("audio", 0.5)
    annotations = _annotations(noisy_dir)
    with_audio = [i for i in annotations if os.path.exists(media_path(noisy_dir, "audio", i))]
    noisy = summary["noisy_items"]
    assert set(noisy) <= set(with_audio) and len(noisy) == round(0.5 * len(with_audio)) > 5

    own_cues = 0  # noisy listings whose audio happens to sound like their own category (group and pitch)
    for item_id in with_audio:
        path = media_path(noisy_dir, "audio", item_id)
        if item_id not in noisy:
            assert filecmp.cmp(path, media_path(raw_dir, "audio", item_id), shallow=False), item_id
            continue
        source = annotations[noisy[item_id]]
        assert source["instance_id"] != annotations[item_id]["instance_id"]
        factors = _category(source)
        pitch = "low" if _fundamental(path) < 450 else "high"
        assert pitch == factors["pitch"], item_id
        assert _partials(path) == {m for m, _ in GROUP_HARMONICS[factors["group"]]} - {1}, item_id
        own = _category(annotations[item_id])
        own_cues += (pitch, factors["group"]) == (own["pitch"], own["group"])
    assert own_cues <= 0.3 * len(noisy), (
        "unrelated content must follow the listing's own category only by chance"
    )
    assert _annotations(raw_dir) == annotations
    images = sorted(os.listdir(os.path.join(raw_dir, "images")))
    _, mismatch, errors = filecmp.cmpfiles(
        os.path.join(raw_dir, "images"), os.path.join(noisy_dir, "images"), images, shallow=False
    )
    assert not mismatch and not errors


def test_a_noisy_caption_or_table_comes_from_another_instance():
    items, _ = plan_sample(60, seed=0)
    sources = make_modality_unreliable(items, "text", 1.0, seed=0)
    by_id = {item.item_id: item for item in items}
    assert set(sources) == {item.item_id for item in items if "text" in item.modalities}
    for item_id, source_id in sources.items():
        record = annotation_record(by_id[item_id])
        assert record["title"] == by_id[source_id].title != by_id[item_id].title
        assert record["instance_id"] == by_id[item_id].instance_id != by_id[source_id].instance_id
        assert record["label"] == CATEGORIES[by_id[item_id].category].name
    with pytest.raises(ValueError, match="noisy modality"):
        make_modality_unreliable(items, "smell", 0.5, seed=0)
    with pytest.raises(ValueError, match="noisy fraction"):
        make_modality_unreliable(items, "table", 1.5, seed=0)
