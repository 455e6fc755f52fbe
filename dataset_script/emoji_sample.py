"""Real data for development: Noto's emoji (Debian's `ruby-tanuki-emoji`) in M5Product's raw layout.

    python -m dataset_script.emoji_sample outputs/emoji/sample_raw              # the raw layout only
    python -m dataset_script.emoji_sample outputs/emoji/sample_raw --benchmark  # + the main job's recipe

Nobody here wrote this data, so it checks what the synthetic sample cannot: whether SCALE beats the text
encoder it starts from. Each fully-qualified emoji of Unicode's `emoji-test.txt` that has a Noto PNG is a
product: the caption is its CLDR name ("grinning face with big eyes"), the table its gemojione keywords
(one `keyword` row each, where gemojione has any), the image the PNG flattened on white as a JPEG, and the
label its Unicode group (Smileys & Emotion, Food & Drink, ...; the Component group is left out). Skin-tone
variants are listings of one instance (the emoji without its skin-tone modifiers): fine-grained retrieval.
Splits follow the sample's rules (`generate_sample.draw_pool` / `split_pools`).

The package (Apache-2.0 images, Unicode and gemojione metadata) is fetched with `apt-get download` and
unpacked with `dpkg-deb -x` into a work folder; nothing of it is committed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .generate_sample import draw_pool, split_pools, write_annotation_files
from .raw_layout import format_pv, media_path

PACKAGE = "ruby-tanuki-emoji"
SKIN_TONES = {f"1F3F{c}" for c in "BCDEF"}
LEFT_OUT_GROUPS = {"Component"}
MAX_KEYWORDS = 12


@dataclass(frozen=True)
class Emoji:
    codepoints: tuple[str, ...]
    name: str
    group: str
    subgroup: str

    @property
    def item_id(self) -> str:
        return "emoji_" + "-".join(c.lower() for c in self.codepoints)

    @property
    def instance_id(self) -> str:
        """The emoji without its skin-tone modifiers: its skin-tone variants are listings of one product."""
        return "emoji_" + "-".join(c.lower() for c in self.codepoints if c not in SKIN_TONES)

    @property
    def text(self) -> str:
        return "".join(chr(int(c, 16)) for c in self.codepoints)


def fetch_package(work_dir: str) -> Path:
    """Download and unpack the Debian package (once); returns the gem's folder."""
    unpacked = Path(work_dir) / "unpacked"
    gems = glob.glob(str(unpacked / "usr/share/rubygems-integration/all/gems/tanuki_emoji-*"))
    if not gems:
        os.makedirs(work_dir, exist_ok=True)
        download = subprocess.run(
            ["apt-get", "download", PACKAGE], cwd=work_dir, capture_output=True, text=True
        )
        debs = glob.glob(os.path.join(work_dir, f"{PACKAGE}_*.deb"))
        if not debs:
            raise RuntimeError(
                f"`apt-get download {PACKAGE}` gave no package (run `apt-get update` first?): "
                f"{download.stderr.strip()[-300:]}"
            )
        subprocess.run(["dpkg-deb", "-x", debs[0], str(unpacked)], check=True)
        gems = glob.glob(str(unpacked / "usr/share/rubygems-integration/all/gems/tanuki_emoji-*"))
    return Path(gems[0])


def read_emoji_test(path: Path) -> list[Emoji]:
    """The fully-qualified emoji of Unicode's `emoji-test.txt`, with their group and subgroup."""
    emoji, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            codepoints = tuple(line.split(";", 1)[0].split())
            name = line.split("#", 1)[1].split(maxsplit=2)[2].strip()  # "# 😀 E1.0 grinning face"
            emoji.append(Emoji(codepoints, name, group, subgroup))
    return emoji


def keywords_by_emoji(index_path: Path) -> dict[str, list[str]]:
    """gemojione's keywords, keyed by the emoji's characters without variation selectors."""
    index = json.loads(index_path.read_text(encoding="utf-8"))
    return {entry["moji"].replace("\ufe0f", ""): entry.get("keywords", []) for entry in index.values()}


def png_path(images_dir: Path, emoji: Emoji) -> Path | None:
    """Noto names a PNG by its code points without U+FE0F, a flag by its two regional-indicator letters."""
    codepoints = [c.lower() for c in emoji.codepoints if c != "FE0F"]
    candidates = [images_dir / f"emoji_u{'_'.join(codepoints)}.png"]
    if len(codepoints) == 2 and all(0x1F1E6 <= int(c, 16) <= 0x1F1FF for c in codepoints):
        candidates.append(
            images_dir / ("".join(chr(int(c, 16) - 0x1F1E6 + ord("A")) for c in codepoints) + ".png")
        )
    return next((path for path in candidates if path.exists()), None)


def write_jpeg_on_white(source: Path, target: str) -> None:
    from PIL import Image

    with Image.open(source) as image:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(target, format="JPEG", quality=90)


def build_emoji_sample(out_dir: str, work_dir: str | None = None, seed: int = 0) -> dict:
    """Write the raw layout into `out_dir`; returns the summary also written to `sample_info.json`."""
    gem = fetch_package(work_dir or os.path.join(out_dir, "..", "emoji_package"))
    images_dir = gem / "app/assets/images/tanuki_emoji"
    keywords = keywords_by_emoji(gem / "vendor/gemojione/index-4.1.0.json")
    products = []
    for emoji in read_emoji_test(gem / "vendor/unicode/emoji-test.txt"):
        png = png_path(images_dir, emoji)
        if png is not None and emoji.group not in LEFT_OUT_GROUPS:
            products.append((emoji, png))
    groups = sorted({emoji.group for emoji, _ in products})

    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    annotations, instances = {}, {}
    for emoji, png in products:
        write_jpeg_on_white(png, media_path(out_dir, "image", emoji.item_id))
        record = {"title": emoji.name, "label": emoji.group, "instance_id": emoji.instance_id}
        words = keywords.get(emoji.text.replace("\ufe0f", ""), [])[:MAX_KEYWORDS]
        if words:
            record["pv"] = format_pv(("keyword", word) for word in words)
        annotations[emoji.item_id] = record
        instances.setdefault(emoji.instance_id, []).append(emoji.item_id)

    rng = np.random.default_rng(seed)
    pools: dict[str, list[list[str]]] = {"train": [], "coarse": [], "fine": []}
    for index in rng.permutation(len(instances)):
        ids = list(instances.values())[index]
        pools[draw_pool(len(ids), rng)].append(ids)
    splits = split_pools(pools, rng)

    write_annotation_files(out_dir, annotations, groups, splits)
    summary = {
        "source": f"Debian {PACKAGE} ({gem.name})",
        "num_items": len(annotations),
        "num_instances": len(instances),
        "num_categories": len(groups),
        "category_counts": {group: sum(e.group == group for e, _ in products) for group in groups},
        "items_with_table": sum("pv" in record for record in annotations.values()),
        "splits": {f"{config}/{split}": len(ids) for (config, split), ids in splits.items()},
        "seed": seed,
    }
    with open(os.path.join(out_dir, "sample_info.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", help="where the raw layout goes (e.g. outputs/emoji/sample_raw)")
    parser.add_argument("--work_dir", default=None, help="download / unpack folder (default: beside out_dir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--benchmark",
        action="store_true",
        help="then run the main job's recipe on it (train/main_job.py --raw_dir) and print the tables",
    )
    parser.add_argument("--main_job_args", default="", help="extra train/main_job.py options")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.out_dir, "sample_info.json")):
        print(json.dumps(build_emoji_sample(args.out_dir, args.work_dir, args.seed), indent=1))
    if args.benchmark:
        root = str(Path(args.out_dir).resolve().parent)
        command = [sys.executable, "train/main_job.py", "--raw_dir", args.out_dir, "--output_root", root]
        subprocess.run(
            [*command, *args.main_job_args.split()], check=True, cwd=Path(__file__).resolve().parents[1]
        )


if __name__ == "__main__":
    main(sys.argv[1:])
