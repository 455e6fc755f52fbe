"""Turns what a visitor typed or uploaded into a checked product query.

Everything that can go wrong with user input is caught here, before the model runs, and reported as a
`QueryError` whose message names the modality and the file, so that the page can show it and keep serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from scale_code import (
    MODALITIES,
    MediaDecodingError,
    first_line,
    has_printable_character,
    load_audio,
    load_image,
    load_video_frames,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg", ".m4a")
MAX_IMAGE_PIXELS = 40_000_000
"""Larger images are refused: decoding them would stall a worker that other visitors wait on."""
MAX_CLIP_SECONDS = 600.0
"""The processor only keeps the first seconds of a clip; a longer one is almost certainly a wrong upload."""
CHECK_VIDEO_FPS, CHECK_VIDEO_FRAMES, CHECK_AUDIO_RATE, CHECK_AUDIO_SECONDS = 1.0, 12, 16000, 12.0
"""How much of a clip the upload check decodes: the paper's processor settings (no preset reads more)."""
MAX_TEXT_CHARS = 2_000
"""Longer captions and table cells are refused: the model reads the first few dozen tokens only, and
tokenising megabytes would stall a worker that other visitors wait on."""


class QueryError(ValueError):
    """A query the app cannot search with; the message is meant for the visitor."""


@dataclass
class ProductQuery:
    """The modalities of one query product, in the form the processor takes (None = not given)."""

    text: str | None = None
    table: list[tuple[str, str]] | None = None
    image: Image.Image | None = None
    video: str | None = None
    audio: str | None = None
    ignored: list[str] = field(default_factory=list)
    """Modalities the visitor gave but did not tick in "search with" (worth a warning)."""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)


def read_table(rows: Any) -> list[tuple[str, str]]:
    """Property/value pairs from the editable table: blank rows dropped, half-filled rows refused.

    `rows` is whatever gr.Dataframe hands over (a pandas DataFrame, or a list of rows over the API).
    """
    if rows is None:
        return []
    if hasattr(rows, "to_numpy"):
        rows = rows.to_numpy().tolist()
    elif isinstance(rows, dict):  # the raw {"headers": ..., "data": ...} payload
        rows = rows.get("data") or []
    pairs = []
    for number, row in enumerate(rows, start=1):
        cells = ["" if cell is None or cell != cell else str(cell).strip() for cell in list(row)[:2]]
        key, value = (cells + ["", ""])[:2]
        if not key and not value:
            continue
        if not key or not value:
            missing, given = ("property", value) if not key else ("value", key)
            raise QueryError(f"Table row {number}: {missing} is empty (the row has only {given!r}).")
        for what, cell in (("property", key), ("value", value)):
            _check_text_length(cell, f"The {what} in table row {number}")
        pairs.append((key, value))
    return pairs


def _check_text_length(text: str, what: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise QueryError(
            f"{what} has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,} "
            "(the model reads only the first few dozen words)."
        )


def _reason(error: Exception, path: Path) -> str:
    """The decoder's complaint in one line (no FFmpeg internals or bug-report footers), without the
    server-side folder of the upload (the visitor knows the file's name)."""
    return first_line(error).replace(str(path.parent) + "/", "")


def _check_suffix(path: Path, modality: str, suffixes: Sequence[str]) -> None:
    if path.suffix.lower() not in suffixes:
        raise QueryError(
            f"The {modality} file '{path.name}' has an unsupported format '{path.suffix or '(none)'}'; "
            f"use one of {', '.join(suffixes)}."
        )


def read_image(path: str | Path) -> Image.Image:
    """Fully decodes an uploaded image (a truncated or fake file fails here, not inside the model) the way the
    processor does (16-bit and float images keep their range instead of turning white)."""
    path = Path(path)
    _check_suffix(path, "image", IMAGE_SUFFIXES)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise QueryError(
                    f"The image '{path.name}' is {image.width}x{image.height} pixels; "
                    f"the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels."
                )
            return load_image(image)
    except QueryError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise QueryError(
            f"The image '{path.name}' could not be read ({_reason(error, path)}). Is it a real image file?"
        ) from error


def _check_clip(path: Path, modality: str) -> None:
    """Opens a clip with torchcodec, refuses one that is too long, then decodes what the processor will read
    of it (sampled frames, the first seconds of sound) with the processor's own functions, so that a file
    corrupted after its first frame is refused here with a message about the file, not inside the search."""
    from torchcodec.decoders import AudioDecoder, VideoDecoder

    def refuse(error: Exception) -> QueryError:
        return QueryError(
            f"The {modality} file '{path.name}' could not be decoded ({_reason(error, path)}). "
            f"Is it a real {modality} file?"
        )

    try:
        decoder = VideoDecoder(str(path)) if modality == "video" else AudioDecoder(str(path))
        seconds = decoder.metadata.duration_seconds
    except Exception as error:  # torchcodec raises RuntimeError/ValueError/IndexError depending on the damage
        raise refuse(error) from error
    if seconds is not None and seconds > MAX_CLIP_SECONDS:
        raise QueryError(
            f"The {modality} file '{path.name}' lasts {seconds:.1f} s; the limit is {MAX_CLIP_SECONDS:g} s."
        )
    try:
        if modality == "video":
            load_video_frames(decoder, fps=CHECK_VIDEO_FPS, max_frames=CHECK_VIDEO_FRAMES)
        else:
            load_audio(decoder, sampling_rate=CHECK_AUDIO_RATE, max_seconds=CHECK_AUDIO_SECONDS)
    except Exception as error:
        raise refuse(error) from error


def read_clip(path: str | Path, modality: str) -> str:
    """Checks an uploaded video or audio clip and returns its path for the processor."""
    path = Path(path)
    _check_suffix(path, modality, VIDEO_SUFFIXES if modality == "video" else AUDIO_SUFFIXES)
    _check_clip(path, modality)
    return str(path)


def build_query(
    search_with: Iterable[str],
    text: str | None = None,
    table: Any = None,
    image: str | Path | Image.Image | None = None,
    video: str | Path | None = None,
    audio: str | Path | None = None,
) -> ProductQuery:
    """Validates every given input and keeps those whose modality is ticked in `search_with`.

    Raises:
        QueryError: an unknown modality, a bad file or table row, or nothing left to search with.
    """
    search_with = list(search_with or [])
    unknown = [m for m in search_with if m not in MODALITIES]
    if unknown:
        raise QueryError(f"Unknown modalities {unknown}; choose among {list(MODALITIES)}.")
    text = (text or "").strip() or None
    if text is not None:
        _check_text_length(text, "The caption")
        text = text if has_printable_character(text) else None  # only control / zero-width characters
    given = {
        "text": text,
        "table": read_table(table) or None,
        "image": None,
        "video": read_clip(video, "video") if video else None,
        "audio": read_clip(audio, "audio") if audio else None,
    }
    if isinstance(image, Image.Image):
        try:
            given["image"] = load_image(image)
        except MediaDecodingError as error:
            raise QueryError(f"The image could not be read ({first_line(error)}).") from error
    elif image is not None:
        given["image"] = read_image(image)
    query = ProductQuery(ignored=[m for m in MODALITIES if given[m] is not None and m not in search_with])
    for modality in search_with:
        setattr(query, modality, given[modality])
    if not query.modalities:
        if not search_with:
            raise QueryError("Tick at least one modality under 'Search with'.")
        raise QueryError(
            "Empty query: give a caption, a property table, an image, a video or an audio clip for at least "
            f"one of the ticked modalities ({', '.join(search_with)})."
        )
    return query
