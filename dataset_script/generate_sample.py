"""Write a deterministic M5Product-like sample in the raw release layout, with real media files.

Nobody may redistribute M5Product, so every command of the project defaults to this sample. It is built so
that the paper's central finding ("more modalities help") can be checked on it, and so that its pretext
tasks have something to learn. A category is the combination

    group (caption) x material (table) x colour (image) x motion (video) x pitch (audio)

Every modality shows what kind of product it is, as real listings do: the group is named in the caption and
in the table's 类目 row, drawn as the image's shape family (the video shows the same product moving) and heard
as the tone's timbre (harmonic profile). On top of it each modality reveals its own factor, so text alone
cannot tell apart the 16 categories of a group and each added modality halves the ambiguity. Modalities of one
product also share instance cues (brand and model number in caption and table; shape size, position and
colour in image and video), which cross-modal contrastive learning can align. Media stay simple (big flat
shapes, a clearly moving product, a low or high tone) so that a small model trained for minutes on a CPU
picks the signal up, with enough jitter, distractors and missing modalities that it is not trivial.

Imperfections as in the paper: long-tailed category frequencies, ~5 % unimodal items, most items without video
or audio, ~3 % noisy captions. Fine-grained retrieval: a product instance has several listings with jittered
images and paraphrased captions.

Off by default, `--noisy_modality M --noisy_fraction F` makes one modality unreliable, the setting SIMCL's
self-harmonised weights are motivated by: a fraction F of the listings that have M show, for M, the content
of another instance's listing (a seller's stock photo, a wrong table, unrelated audio), so that it agrees with
the listing's own category only by chance. sample_info.json records which listings and whose content; the rest
of the sample is exactly the one generated without the option.

    python -m dataset_script.generate_sample OUT_DIR --size tiny|default --seed 0 [--num-proc N]
        [--noisy_modality audio --noisy_fraction 0.5]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import time
from dataclasses import dataclass, field, replace
from itertools import product
from multiprocessing import Pool

import numpy as np

from .raw_layout import ANNOTATION_FILE, LABELS_FILE, MEDIA, SPLIT_FILES, format_pv, media_path

SIZES = {"tiny": 60, "default": 3000}
COARSE_QUERY_SHARE = 0.4

# group -> (English nouns, Chinese nouns, table materials as (Chinese, English) for its two material values)
GROUPS = {
    "clothing": (
        ("dress", "shirt", "skirt"),
        ("连衣裙", "衬衫", "半身裙"),
        (("纯棉", "cotton"), ("真丝", "silk")),
    ),
    "electronics": (
        ("earphones", "speaker", "charger"),
        ("耳机", "音箱", "充电器"),
        (("塑料", "plastic"), ("金属", "metal")),
    ),
    "kitchen": (("teapot", "bowl", "cup"), ("茶壶", "碗", "杯子"), (("陶瓷", "ceramic"), ("玻璃", "glass"))),
    "toys": (("puzzle", "doll", "robot"), ("拼图", "玩偶", "机器人"), (("木质", "wood"), ("毛绒", "plush"))),
}
COLOURS = {"red": 0.0, "blue": 0.62}  # hue centre; the image shape's colour is drawn around it
MOTIONS = ("left_to_right", "right_to_left")
PITCHES = {"low": (180.0, 260.0), "high": (700.0, 1000.0)}  # Hz range of the tone's fundamental
# the group cue of the non-text modalities: shape family (image and video) and harmonic profile (audio,
# (multiple of the fundamental, amplitude); the fundamental stays the loudest partial)
GROUP_NAMES_ZH = {"clothing": "服装", "electronics": "数码", "kitchen": "厨具", "toys": "玩具"}
GROUP_SHAPES = {"clothing": "triangle", "electronics": "square", "kitchen": "circle", "toys": "diamond"}
GROUP_HARMONICS = {
    "clothing": ((1, 1.0),),
    "electronics": ((1, 1.0), (3, 0.6), (5, 0.4)),
    "kitchen": ((1, 1.0), (2.76, 0.7), (5.4, 0.4)),
    "toys": ((1, 1.0), (2, 0.7), (3, 0.5), (4, 0.35)),
}

EN_FILLERS = ("new", "hot sale", "2021", "free shipping", "official", "best", "gift", "limited", "classic")
ZH_FILLERS = ("新款", "热卖", "包邮", "正品", "官方", "特价", "爆款", "精选", "经典")
BRAND_SYLLABLES = ("nu", "vo", "ka", "li", "mei", "zen", "ta", "ro", "xi", "bo", "an", "de")
ORIGINS = ("浙江", "广东", "江苏", "福建", "上海", "山东")
SEASONS = ("春季", "夏季", "秋季", "冬季", "四季")

IMAGE_SIZE = 64
VIDEO_SIZE = 64
VIDEO_FPS = 4
AUDIO_SAMPLING_RATE = 16000
UNIMODAL_FRACTION = 0.05
NOISY_CAPTION_FRACTION = 0.03
PRESENCE = {"table": 0.85, "image": 0.97, "video": 0.45, "audio": 0.4}
MODALITIES = ("text", "table", "image", "video", "audio")
NOISY_MODALITY_STREAM = 1
"""Second seed word of the random stream that draws the unreliable listings (the sample's own stream is
untouched, so the option changes nothing else)."""


@dataclass(frozen=True)
class Category:
    group: str
    material: int
    colour: str
    motion: str
    pitch: str

    @property
    def name(self) -> str:
        material = GROUPS[self.group][2][self.material][1]
        return f"{self.group}/{material}/{self.colour}/{self.motion}/{self.pitch}"


CATEGORIES = [Category(*combo) for combo in product(GROUPS, (0, 1), COLOURS, MOTIONS, PITCHES)]


@dataclass
class ItemPlan:
    """Everything needed to render one listing; drawn in the main process so workers are deterministic."""

    item_id: str
    instance_id: str
    category: int
    modalities: tuple[str, ...]
    title: str
    pv: str
    shape: str
    hue: float
    saturation: float
    shape_centre: tuple[int, int]
    shape_radius: int
    background: int
    video_row: int
    video_speed: float
    frequency: float
    duration: float
    seed: int
    unrelated: dict[str, ItemPlan] = field(default_factory=dict)
    """modality -> another listing whose content this one shows for it (`make_modality_unreliable`)."""

    def content(self, modality: str) -> ItemPlan:
        """The plan this listing's `modality` is rendered from: its own, or an unrelated listing's."""
        return self.unrelated.get(modality, self)


def _brand(rng: np.random.Generator) -> str:
    return "".join(rng.choice(BRAND_SYLLABLES, size=2)).capitalize()


def _caption(rng: np.random.Generator, group: str, brand: str, model: str, noisy: bool) -> str:
    """A paraphrase of the instance's listing title: only the group noun carries category signal."""
    en_nouns, zh_nouns, _ = GROUPS[group]
    if noisy:  # a listing whose title names the wrong kind of product, as sellers' keyword stuffing does
        group = str(rng.choice([g for g in GROUPS if g != group]))
        en_nouns, zh_nouns, _ = GROUPS[group]
    if rng.random() < 0.5:
        words = [brand, model, str(rng.choice(en_nouns)), *rng.choice(EN_FILLERS, size=2, replace=False)]
    else:
        words = [brand, model, str(rng.choice(zh_nouns)), *rng.choice(ZH_FILLERS, size=2, replace=False)]
    head, tail = words[:2], list(words[2:])
    rng.shuffle(tail)
    return " ".join(head + tail)


def _pv(rng: np.random.Generator, category: Category, brand: str, model: str) -> str:
    """The property table: 类目 (the group) comes first as on Taobao, then the material and the rest in any
    order."""
    material_zh = GROUPS[category.group][2][category.material][0]
    pairs = [("材质", material_zh), ("品牌", brand), ("货号", model), ("产地", str(rng.choice(ORIGINS)))]
    if rng.random() < 0.5:
        pairs.append(("适用季节", str(rng.choice(SEASONS))))
    rng.shuffle(pairs)
    return format_pv([("类目", GROUP_NAMES_ZH[category.group]), *pairs])


def _long_tailed_weights(rng: np.random.Generator, num_categories: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, num_categories + 1) ** 0.9
    return rng.permutation(weights / weights.sum())


def _modalities(rng: np.random.Generator) -> tuple[str, ...]:
    if rng.random() < UNIMODAL_FRACTION:
        return (str(rng.choice(["text", "image"], p=[0.4, 0.6])),)
    present = ["text"] + [m for m, p in PRESENCE.items() if rng.random() < p]
    return tuple(present)


def plan_sample(num_items: int, seed: int) -> tuple[list[ItemPlan], dict[tuple[str, str], list[str]]]:
    """Draw every listing and the split id lists.

    Instances: ~8 % of them have 2-4 listings (fine-grained retrieval); they all go to the fine pool, with
    some single-listing distractors. Of the rest, 20 % form the coarse retrieval pool (query 40 % of it, so
    that the default sample's mAP@1 rests on ~170 queries, a standard error near 3.5 points) and the others
    the pretraining pool. Classification trains on the pretraining pool and tests on the coarse pool.
    """
    rng = np.random.default_rng(seed)
    weights = _long_tailed_weights(rng, len(CATEGORIES))
    items: list[ItemPlan] = []
    pools: dict[str, list[list[str]]] = {"train": [], "coarse": [], "fine": []}
    min_multi = 4
    instance_index = 0
    while len(items) < num_items:
        multi = instance_index < min_multi or rng.random() < 0.08
        listings = int(rng.integers(2, 5)) if multi else 1
        listings = min(listings, num_items - len(items)) or 1
        category_index = int(rng.choice(len(CATEGORIES), p=weights))
        category = CATEGORIES[category_index]
        instance_id = f"inst{instance_index:07d}"
        brand, model = _brand(rng), f"{rng.choice(list('ABCDKMTX'))}{int(rng.integers(100, 999))}"
        hue = (COLOURS[category.colour] + rng.uniform(-0.06, 0.06)) % 1.0
        saturation = float(rng.uniform(0.6, 0.9))
        centre = rng.integers(26, 38, size=2)
        radius = int(rng.integers(14, 21))
        frequency = float(rng.uniform(*PITCHES[category.pitch]))
        ids = []
        for _ in range(listings):
            item_index = len(items)
            item_id = str(560000000000 + item_index * 7919)
            noisy = rng.random() < NOISY_CAPTION_FRACTION
            items.append(
                ItemPlan(
                    item_id=item_id,
                    instance_id=instance_id,
                    category=category_index,
                    modalities=_modalities(rng),
                    title=_caption(rng, category.group, brand, model, noisy),
                    pv=_pv(rng, category, brand, model),
                    shape=GROUP_SHAPES[category.group],
                    hue=float((hue + rng.uniform(-0.02, 0.02)) % 1.0),
                    saturation=float(np.clip(saturation + rng.uniform(-0.05, 0.05), 0.5, 0.95)),
                    shape_centre=tuple(int(c) for c in centre + rng.integers(-2, 3, size=2)),
                    shape_radius=radius + int(rng.integers(-1, 2)),
                    background=int(rng.integers(170, 250)),
                    video_row=int(rng.integers(8, VIDEO_SIZE - 24)),
                    video_speed=float(rng.uniform(0.7, 1.0)),
                    frequency=frequency * float(rng.uniform(0.97, 1.03)),
                    duration=float(rng.choice([2.0, 3.0, 4.0])),
                    seed=int(rng.integers(2**31)),
                )
            )
            ids.append(item_id)
        pools[draw_pool(len(ids), rng)].append(ids)
        instance_index += 1
    return items, split_pools(pools, rng)


def make_modality_unreliable(
    items: list[ItemPlan], modality: str, fraction: float, seed: int
) -> dict[str, str]:
    """Give `round(fraction * n)` of the n listings that have `modality` another instance's content for it
    (each from a listing drawn uniformly among the other instances'); returns listing id -> that listing's id.

    The draws use their own random stream, so every other byte of the sample stays as without the option.
    """
    if modality not in MODALITIES:
        raise ValueError(f"noisy modality must be one of {MODALITIES}, got {modality!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noisy fraction must lie in [0, 1], got {fraction}")
    rng = np.random.default_rng((seed, NOISY_MODALITY_STREAM))
    having = [plan for plan in items if modality in plan.modalities]
    chosen = rng.choice(len(having), size=round(fraction * len(having)), replace=False)
    sources = {}
    for index in sorted(chosen.tolist()):
        plan = having[index]
        source = items[int(rng.integers(len(items)))]
        while source.instance_id == plan.instance_id:
            source = items[int(rng.integers(len(items)))]
        plan.unrelated[modality] = replace(source, unrelated={})
        sources[plan.item_id] = source.item_id
    return sources


def draw_pool(listings: int, rng: np.random.Generator) -> str:
    """The pool of an instance with `listings` listings: every multi-listing instance goes to the
    fine-grained pool; a single listing to pretraining (74 %), the coarse pool (20 %) or the fine gallery as
    a distractor (6 %)."""
    if listings > 1:
        return "fine"
    return str(rng.choice(["train", "coarse", "fine"], p=[0.74, 0.2, 0.06]))


def split_pools(
    pools: dict[str, list[list[str]]], rng: np.random.Generator
) -> dict[tuple[str, str], list[str]]:
    """The release's split files from the pools of `draw_pool` (item ids, instance by instance).

    Fine pool: first listing -> query, the rest -> gallery (a single listing is a gallery distractor). 40 % of
    the coarse pool are queries. Classification trains on the pretraining pool and tests on the coarse pool,
    so pretraining never sees a retrieval or test item."""
    splits: dict[tuple[str, str], list[str]] = {key: [] for key in SPLIT_FILES}
    for ids in pools["fine"]:
        if len(ids) > 1:
            splits["retrieval_fine", "query"].append(ids[0])
        splits["retrieval_fine", "gallery"].extend(ids[1:] if len(ids) > 1 else ids)
    coarse_ids = [item_id for ids in pools["coarse"] for item_id in ids]
    query_mask = rng.random(len(coarse_ids)) < COARSE_QUERY_SHARE
    query_mask[:2] = True  # never an empty query split, even for the tiny sample
    for item_id, is_query in zip(coarse_ids, query_mask, strict=True):
        splits["retrieval_coarse", "query" if is_query else "gallery"].append(item_id)
    train_ids = [item_id for ids in pools["train"] for item_id in ids]
    splits["pretrain", "train"] = train_ids
    splits["classification", "train"] = list(train_ids)
    splits["classification", "test"] = list(coarse_ids)
    return splits


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """(size, size) bool mask of one of the group shapes centred at (cy, cx) with radius r."""
    yy, xx = np.mgrid[0:size, 0:size]
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    return {
        "circle": dy**2 + dx**2 <= r**2,
        "square": (dy <= r * 0.85) & (dx <= r * 0.85),
        "diamond": dy + dx <= r,
        "triangle": (yy - cy <= r * 0.8) & (yy - cy >= -r) & (dx <= (yy - cy + r) * 0.6),
    }[shape]


def render_image(plan: ItemPlan, rng: np.random.Generator) -> np.ndarray:
    """A flat shape on a noisy light background: shape family = the group, colour family = the category's
    colour, size / position / exact tint = the instance."""
    size = IMAGE_SIZE
    cy = plan.shape_centre[0] + int(rng.integers(-2, 3))
    cx = plan.shape_centre[1] + int(rng.integers(-2, 3))
    mask = shape_mask(plan.shape, size, cy, cx, plan.shape_radius)
    image = np.full((size, size, 3), plan.background, dtype=np.float32)
    image += rng.normal(0, 6, size=(size, size, 1))
    colour = np.array(_hsv_to_rgb(plan.hue, plan.saturation, float(rng.uniform(0.7, 0.95))), dtype=np.float32)
    image[mask] = colour + rng.normal(0, 4, size=(int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def render_video_frames(plan: ItemPlan, rng: np.random.Generator) -> np.ndarray:
    """The image's product (same shape and tint, smaller) crossing a dark frame horizontally; its direction is
    the category's motion factor."""
    num_frames = int(plan.duration * VIDEO_FPS)
    size, radius = VIDEO_SIZE, plan.shape_radius * 0.55
    background = rng.integers(5, 45, size=3).astype(np.float32)
    colour = np.array(_hsv_to_rgb(plan.hue, plan.saturation, 0.95), dtype=np.float32)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    travel = (size - 2 * radius) * plan.video_speed
    start = radius + (size - 2 * radius - travel) / 2
    category = CATEGORIES[plan.category]
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        if category.motion == "right_to_left":
            progress = 1.0 - progress
        mask = shape_mask(plan.shape, size, plan.video_row + radius, start + progress * travel, radius)
        frame = np.broadcast_to(background, (size, size, 3)) + rng.normal(0, 5, size=(size, size, 3))
        frame[mask] = colour
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def render_audio(plan: ItemPlan, rng: np.random.Generator) -> np.ndarray:
    """A tone under an attack/decay envelope plus noise: timbre (harmonic profile) = the group, pitch = the
    category's factor."""
    t = np.arange(int(plan.duration * AUDIO_SAMPLING_RATE)) / AUDIO_SAMPLING_RATE
    harmonics = GROUP_HARMONICS[CATEGORIES[plan.category].group]
    tone = sum(amplitude * np.sin(2 * np.pi * plan.frequency * k * t) for k, amplitude in harmonics)
    envelope = np.minimum(1.0, t / 0.05) * np.exp(-t / float(rng.uniform(1.5, 4.0)))
    signal = 0.3 * tone * envelope + rng.normal(0, 0.02, size=t.shape)
    return np.clip(signal, -1, 1).astype(np.float32)


def write_jpeg(path: str, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def write_mp4(path: str, frames: np.ndarray, fps: int = VIDEO_FPS) -> None:
    import av

    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        stream.codec_context.thread_count = 1
        for index, pixels in enumerate(frames):
            # explicit YUV conversion and pts: letting the encoder convert made the bytes differ between runs
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_mp3(path: str, samples: np.ndarray, sampling_rate: int = AUDIO_SAMPLING_RATE) -> None:
    import av

    with av.open(path, "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sampling_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = sampling_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def render_item(args: tuple[str, ItemPlan]) -> str:
    out_dir, plan = args
    rng = np.random.default_rng(plan.seed)
    if "image" in plan.modalities:
        write_jpeg(media_path(out_dir, "image", plan.item_id), render_image(plan.content("image"), rng))
    if "video" in plan.modalities:
        write_mp4(media_path(out_dir, "video", plan.item_id), render_video_frames(plan.content("video"), rng))
    if "audio" in plan.modalities:
        write_mp3(media_path(out_dir, "audio", plan.item_id), render_audio(plan.content("audio"), rng))
    return plan.item_id


def annotation_record(plan: ItemPlan) -> dict:
    record = {"label": CATEGORIES[plan.category].name, "instance_id": plan.instance_id}
    if "text" in plan.modalities:
        record["title"] = plan.content("text").title
    if "table" in plan.modalities:
        record["pv"] = plan.content("table").pv
    return record


def write_annotation_files(
    out_dir: str, annotations: dict, label_names: list[str], splits: dict[tuple[str, str], list[str]]
) -> None:
    """The raw layout's text files: the annotation JSON, `labels.txt` and one id list per split."""
    os.makedirs(os.path.join(out_dir, "splits"), exist_ok=True)
    with open(os.path.join(out_dir, ANNOTATION_FILE), "w", encoding="utf-8") as handle:
        json.dump(annotations, handle, ensure_ascii=False, indent=0)
    with open(os.path.join(out_dir, LABELS_FILE), "w", encoding="utf-8") as handle:
        handle.writelines(f"{name}\n" for name in label_names)
    for key, ids in splits.items():
        with open(os.path.join(out_dir, SPLIT_FILES[key]), "w", encoding="utf-8") as handle:
            handle.writelines(f"{item_id}\n" for item_id in ids)


def generate_sample(
    out_dir: str,
    size: str | int = "tiny",
    seed: int = 0,
    num_proc: int | None = None,
    noisy_modality: str | None = None,
    noisy_fraction: float = 0.5,
) -> dict:
    """Write the sample into `out_dir` and return a summary (counts, per-split sizes, seconds).

    With `noisy_modality`, `noisy_fraction` of the listings that have it show another instance's content for
    it (`make_modality_unreliable`); the summary then records the setting and, under `noisy_items`, each such
    listing's id -> the id of the listing whose content it shows.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    num_items = SIZES[size] if isinstance(size, str) else int(size)
    items, splits = plan_sample(num_items, seed)
    if noisy_modality is not None:
        noisy_items = make_modality_unreliable(items, noisy_modality, noisy_fraction, seed)
    for folder, _ in MEDIA.values():
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)

    num_proc = num_proc or os.cpu_count() or 1
    jobs = [(out_dir, plan) for plan in items]
    if num_proc > 1 and len(items) > 100:
        with Pool(num_proc) as pool:
            rendered = pool.imap_unordered(render_item, jobs, chunksize=16)
            for _ in tqdm(rendered, total=len(jobs), desc="media"):
                pass
    else:
        for job in jobs:
            render_item(job)

    write_annotation_files(
        out_dir,
        {plan.item_id: annotation_record(plan) for plan in items},
        [category.name for category in CATEGORIES],
        splits,
    )

    summary = {
        "num_items": len(items),
        "num_instances": len({plan.instance_id for plan in items}),
        "num_categories": len(CATEGORIES),
        "modality_counts": {
            modality: sum(modality in plan.modalities for plan in items) for modality in MODALITIES
        },
        "unimodal_items": sum(len(plan.modalities) == 1 for plan in items),
        "splits": {f"{config}/{split}": len(ids) for (config, split), ids in splits.items()},
        "seconds": round(time.perf_counter() - start, 2),
        "num_proc": num_proc,
        "seed": seed,
    }
    if noisy_modality is not None:
        summary.update(noisy_modality=noisy_modality, noisy_fraction=noisy_fraction, noisy_items=noisy_items)
    with open(os.path.join(out_dir, "sample_info.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-proc", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument(
        "--noisy_modality",
        default=None,
        choices=MODALITIES,
        help="make this modality unreliable: some listings show another instance's content (default: off)",
    )
    parser.add_argument(
        "--noisy_fraction",
        type=float,
        default=0.5,
        help="share of the listings with --noisy_modality that show unrelated content (default: 0.5)",
    )
    args = parser.parse_args()
    summary = generate_sample(
        args.out_dir, args.size, args.seed, args.num_proc, args.noisy_modality, args.noisy_fraction
    )
    if "noisy_items" in summary:  # one entry per listing: printed as their number, listed in sample_info.json
        summary["noisy_items"] = len(summary["noisy_items"])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
