"""PyTorch SCALE: five single-modality encoders, the Joint Co-Transformer (JCT), SIMCL pretraining heads.

Inputs follow the shared contract (see `ScaleModel.forward`). A modality is *present* for a sample when
`modality_mask` says so and its inputs were given; everything else about that modality is masked out of
attention, pooling, S and every loss, so its values never influence any output.
"""

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import CompileableContextVar

from .configuration_scale import MODALITIES, ScaleConfig
from .input_validation_scale import check_class_labels, check_model_inputs
from .simcl import (
    alignment_scores,
    multiview_contrastive_loss,
    relational_distillation_loss,
    simcl_contrastive_loss,
)

# ------------------------------------------------------------------------------------------------------------
# Raw token vectors: what one token of a modality "is" before the model embeds it. The model embeds inputs
# with these and turns `{modality}_targets` into the MRP / MFP / MAM regression targets with the same
# functions.
# ------------------------------------------------------------------------------------------------------------


def image_patch_vectors(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)*(W/p), C*p*p): each patch's pixels as (C, p, p), patches row-major."""
    batch, channels, height, width = pixel_values.shape
    patches = pixel_values.reshape(
        batch, channels, height // patch_size, patch_size, width // patch_size, patch_size
    )
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * patch_size * patch_size)


def video_frame_vectors(video_pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, C*(H/p)*(W/p)): each frame average-pooled by the patch size, flattened."""
    batch, frames = video_pixel_values.shape[:2]
    pooled = F.avg_pool2d(video_pixel_values.flatten(0, 1), patch_size)
    return pooled.reshape(batch, frames, -1)


def audio_group_vectors(audio_features: torch.Tensor, group: int) -> torch.Tensor:
    """(B, L, F) -> (B, ceil(L/s), s*F): non-overlapping groups of s frames (the last one zero-padded)."""
    batch, length, bins = audio_features.shape
    padded = F.pad(audio_features, (0, 0, 0, -length % group))
    return padded.reshape(batch, -1, group * bins)


def audio_group_mask(audio_mask: torch.Tensor, group: int) -> torch.Tensor:
    """(B, L) frame mask -> (B, ceil(L/s)) token mask: a group is valid when any of its frames is."""
    padded = F.pad(audio_mask.bool(), (0, -audio_mask.shape[1] % group))
    return padded.reshape(audio_mask.shape[0], -1, group).any(dim=-1)


class ScaleZeroInitLinear(nn.Linear):
    """A Linear that starts at zero: a residual branch that adds nothing until trained (`product_projection`,
    the video patch path's `grid_projection`).

    Its own class, so `_init_weights` zeroes it where it is met: transformers skips `_init_weights` for a
    custom-code module without parameters of its own (as `ScaleModel` is with the default S), so zeroing a
    child from its parent's branch silently did nothing."""


# ------------------------------------------------------------------------------------------------------------
# Transformer layer (BERT's layout and parameter names, so a BERT checkpoint maps onto it one to one).
# ------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class ScaleSelfAttention(nn.Module):
    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(
        self,
        hidden_states: torch.Tensor,
        token_mask: torch.Tensor,
        output_attentions: bool = False,
        slots: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(attention output, attention probabilities (B, heads, L, L) when `output_attentions`, else None).
        Only the eager path computes the probabilities, so `output_attentions` runs this layer eagerly.

        With `slots` (N,), `hidden_states` are N unpadded tokens (N, H) and `token_mask` the (R, L) layout
        they are scattered into for attention alone (`TokenPacking`); the output is unpadded again."""
        input_shape = token_mask.shape if slots is not None else hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        def heads(projection: nn.Linear) -> torch.Tensor:
            values = projection(hidden_states)
            if slots is not None:  # into the attention layout
                values = values.new_zeros(input_shape.numel(), values.shape[-1]).index_copy(0, slots, values)
            return values.view(hidden_shape).transpose(1, 2)

        query, key, value = heads(self.query), heads(self.key), heads(self.value)

        # Additive (B, 1, 1, L) key mask in the dtype attention runs in (autocast included); every row keeps
        # at least one key (see ScaleEncoder), so no softmax is over an empty set.
        additive_mask = torch.zeros(token_mask.shape, dtype=query.dtype, device=query.device)
        additive_mask = additive_mask.masked_fill(~token_mask, torch.finfo(query.dtype).min)[:, None, None, :]

        attention_interface: Callable = eager_attention_forward
        if not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            additive_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        attn_output = attn_output.reshape(*input_shape, -1)
        if slots is not None:
            attn_output = attn_output.flatten(0, 1).index_select(0, slots)
        return attn_output.contiguous(), attn_weights if output_attentions else None


class ScaleSelfOutput(nn.Module):
    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class ScaleAttention(nn.Module):
    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.self = ScaleSelfAttention(config)
        self.output = ScaleSelfOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        token_mask: torch.Tensor,
        output_attentions: bool = False,
        slots: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attention_weights = self.self(hidden_states, token_mask, output_attentions, slots)
        return self.output(attention_output, hidden_states), attention_weights


class ScaleIntermediate(nn.Module):
    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class ScaleOutput(nn.Module):
    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class ScaleLayer(GradientCheckpointingLayer):
    """One post-LN transformer layer; every modality encoder and the JCT are stacks of it."""

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.attention = ScaleAttention(config)
        self.intermediate = ScaleIntermediate(config)
        self.output = ScaleOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        token_mask: torch.Tensor,
        output_attentions: bool = False,
        slots: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`slots`: unpadded tokens (see `ScaleSelfAttention`); every part but attention is per token."""
        attention_output, attention_weights = self.attention(
            hidden_states, token_mask, output_attentions, slots=slots
        )
        return self.output(self.intermediate(attention_output), attention_output), attention_weights


@dataclass
class TokenPacking:
    """The kept tokens of a (B, L) mask as one unpadded sequence: `kept` (N,) their positions in the flattened
    (B * L) batch, in order; `slots` (N,) where each goes in the (R, longest) layout attention runs on (the R
    rows keeping any token, each cut to the longest row); `mask` (R, longest) the filled slots."""

    kept: torch.Tensor
    slots: torch.Tensor
    mask: torch.Tensor


def pack_kept_tokens(token_mask: torch.Tensor) -> TokenPacking:
    """`TokenPacking` of `token_mask` (B, L) bool; one host-device sync (the sizes depend on the data)."""
    counts = token_mask.sum(dim=-1)
    has_any = counts > 0
    num_rows, longest, total = torch.stack([has_any.sum(), counts.max(), counts.sum()]).tolist()
    kept = torch.argsort((~token_mask.flatten()).to(torch.int8), stable=True)[:total]
    slot_of = (has_any.cumsum(0) - 1)[:, None] * longest + token_mask.cumsum(dim=-1) - 1
    slots = slot_of.flatten().index_select(0, kept)
    mask = torch.zeros(num_rows * longest, dtype=torch.bool, device=token_mask.device)
    return TokenPacking(kept=kept, slots=slots, mask=mask.index_fill(0, slots, True).view(num_rows, longest))


class ScaleEncoder(nn.Module):
    def __init__(self, config: ScaleConfig, num_layers: int):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList([ScaleLayer(config) for _ in range(num_layers)])

    def forward(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """`token_mask` (B, L) bool: the keys each token may attend to; the output is read at those tokens
        only. With `config.pack_tokens` the layers run on the kept tokens alone (`pack_kept_tokens`) and the
        other positions come back as zeros. Inside `_recording_outputs`, the encoder runs padded and leaves
        its per-layer hidden states and attention maps with the recorder."""
        recorder = _OUTPUT_RECORDER.get()
        if recorder is None and self.config.pack_tokens:
            return self._packed(hidden_states, token_mask)
        output_attentions = recorder is not None and recorder.attentions
        # a row keeping nothing (a sample without this modality) attends to its token 0 rather than to keys
        # that are all masked, whose fill plus a large score can round to -inf (then NaN) in float16
        first = torch.arange(token_mask.shape[1], device=token_mask.device) == 0
        token_mask = token_mask | (~token_mask.any(dim=-1, keepdim=True) & first)
        states, maps = [hidden_states], []
        for layer in self.layer:
            hidden_states, attention_weights = layer(hidden_states, token_mask, output_attentions)
            if recorder is not None:
                states.append(hidden_states)
                maps.append(attention_weights)
        if recorder is not None:
            recorder.record(self, tuple(states), tuple(maps))
        return hidden_states

    def _packed(self, hidden_states: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        packing = pack_kept_tokens(token_mask)
        flat = hidden_states.flatten(0, 1)
        if packing.kept.numel() == 0:  # nothing kept anywhere
            return torch.zeros_like(hidden_states)
        tokens = flat.index_select(0, packing.kept)
        for layer in self.layer:
            tokens = layer(tokens, packing.mask, slots=packing.slots)[0]
        return flat.new_zeros(flat.shape).index_copy(0, packing.kept, tokens).view(hidden_states.shape)


class _OutputRecorder:
    """Per-layer outputs of each `ScaleEncoder` that ran during one forward pass (its first run only: the
    pretraining subset view runs the JCT a second time)."""

    def __init__(self, hidden_states: bool, attentions: bool):
        self.hidden_states = hidden_states
        self.attentions = attentions
        self.outputs: dict[nn.Module, tuple[tuple, tuple]] = {}

    def record(self, encoder: nn.Module, states: tuple, maps: tuple) -> None:
        self.outputs.setdefault(encoder, (states, maps))

    def of(self, encoder: nn.Module) -> dict[str, tuple | None]:
        """`{"hidden_states": (input, layer 1, ...), "attentions": (layer 1, ...)}`, None where not asked for
        or where the encoder did not run."""
        states, maps = self.outputs.get(encoder, (None, None))
        return {
            "hidden_states": states if self.hidden_states else None,
            "attentions": maps if self.attentions else None,
        }


_OUTPUT_RECORDER = CompileableContextVar("scale_output_recorder")
"""Set by `_recording_outputs` for the duration of one forward call; a context variable, so that concurrent
calls on one model (threads of a server) record only their own outputs (transformers' compile-safe kind)."""


@contextmanager
def _recording_outputs(hidden_states: bool, attentions: bool) -> Iterator[_OutputRecorder | None]:
    """Records the encoders' per-layer outputs while active when either flag is set (else yields None)."""
    recorder = _OutputRecorder(hidden_states, attentions) if hidden_states or attentions else None
    token = _OUTPUT_RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _OUTPUT_RECORDER.reset(token)


# ------------------------------------------------------------------------------------------------------------
# Per-modality embeddings. Each returns (B, L, H) tokens after LayerNorm and dropout; image, video and audio
# prepend a learned CLS token (text and table already start with the tokenizer's [CLS]).
# ------------------------------------------------------------------------------------------------------------


def _check_length(field: str, length: int, limit: int, limit_name: str) -> None:
    if length > limit:
        raise ValueError(f"`{field}` has {length} positions, more than config.{limit_name} = {limit}")


class ModalityTokens(NamedTuple):
    """One modality's embedded inputs: what its encoder reads."""

    tokens: torch.Tensor  # (B, L, hidden_size)
    mask: torch.Tensor  # (B, L) bool: real tokens (a media modality's leading CLS always counts)
    has_content: torch.Tensor  # (B,) bool: the sample has this modality at all


def _media_tokens(tokens: torch.Tensor, mask: torch.Tensor | None) -> ModalityTokens:
    """A media modality's tokens ([CLS] first): has content when any token after the CLS is real."""
    mask = _with_cls(_mask_or_ones(mask, tokens[:, 1:]))
    return ModalityTokens(tokens, mask, mask[:, 1:].any(dim=-1))


class ScaleTokenEmbeddings(nn.Module):
    """Word + position embeddings of the caption or the serialised table; the table adds a role embedding."""

    def __init__(self, config: ScaleConfig, max_length: int, max_length_name: str, num_roles: int = 0):
        super().__init__()
        self.max_length_name = max_length_name
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(max_length, config.hidden_size)
        self.role_embeddings = nn.Embedding(num_roles, config.hidden_size) if num_roles else None
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, field: str, roles: torch.Tensor | None = None) -> torch.Tensor:
        length = input_ids.shape[1]
        _check_length(field, length, self.position_embeddings.num_embeddings, self.max_length_name)
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings.weight[:length]
        if self.role_embeddings is not None:
            embeddings = embeddings + self.role_embeddings(roles)
        return self.dropout(self.LayerNorm(embeddings))


def table_roles(table_entity_ids: torch.Tensor) -> torch.Tensor:
    """Entity ids -> roles: 0 for [CLS]/[SEP]/separators/padding (id 0), 1 key (odd id), 2 value (even)."""
    return torch.where(table_entity_ids == 0, 0, 2 - table_entity_ids % 2)


class ScaleTextEmbeddings(ScaleTokenEmbeddings):
    """The caption's word pieces."""

    input_names = ("input_ids", "attention_mask")

    def __init__(self, config: ScaleConfig):
        super().__init__(config, config.max_text_length, "max_text_length")

    def embed_inputs(self, inputs: dict) -> ModalityTokens | None:
        if inputs.get("input_ids") is None:
            return None
        tokens = self(inputs["input_ids"], "input_ids")
        mask = _mask_or_ones(inputs.get("attention_mask"), tokens)
        return ModalityTokens(tokens, mask, mask.any(dim=-1))


class ScaleTableEmbeddings(ScaleTokenEmbeddings):
    """The serialised table's word pieces, each with its role (separator, key or value)."""

    input_names = ("table_input_ids", "table_attention_mask", "table_entity_ids")

    def __init__(self, config: ScaleConfig):
        super().__init__(config, config.max_table_length, "max_table_length", num_roles=3)

    def embed_inputs(self, inputs: dict) -> ModalityTokens | None:
        if inputs.get("table_input_ids") is None:
            return None
        if inputs.get("table_entity_ids") is None:
            raise ValueError(
                "`table_input_ids` need their `table_entity_ids` (the table roles come from them)"
            )
        roles = table_roles(inputs["table_entity_ids"])
        tokens = self(inputs["table_input_ids"], "table_input_ids", roles)
        mask = _mask_or_ones(inputs.get("table_attention_mask"), tokens)
        return ModalityTokens(tokens, mask, mask.any(dim=-1))


class ScaleImageEmbeddings(nn.Module):
    """Pixels -> patch tokens (Conv2d + positions), or detector regions -> Linear(feature) + Linear(box)."""

    input_names = ("pixel_values", "image_features", "image_boxes", "image_mask")

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.image_size = config.image_size
        self.cls_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.position_embeddings = nn.Embedding(config.num_patches + 1, config.hidden_size)
        self.feature_projection = nn.Linear(config.image_feature_dim, config.hidden_size)
        self.box_projection = nn.Linear(config.image_box_dim, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_boxes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if pixel_values is not None:
            if tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"`pixel_values` are {tuple(pixel_values.shape[-2:])}, "
                    f"config.image_size is {self.image_size}"
                )
            tokens = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
            tokens = tokens.flatten(2).transpose(1, 2) + self.position_embeddings.weight[1:]
        else:
            if image_boxes is None:
                raise ValueError("`image_features` need their `image_boxes` (B, R, config.image_box_dim)")
            dtype = self.feature_projection.weight.dtype
            tokens = self.feature_projection(image_features.to(dtype)) + self.box_projection(
                image_boxes.to(dtype)
            )
        cls = (self.cls_embedding + self.position_embeddings.weight[0]).expand(tokens.shape[0], 1, -1)
        return self.dropout(self.LayerNorm(torch.cat([cls.to(tokens.dtype), tokens], dim=1)))

    def embed_inputs(self, inputs: dict) -> ModalityTokens | None:
        pixel_values, image_features = inputs.get("pixel_values"), inputs.get("image_features")
        if pixel_values is not None and image_features is not None:
            raise ValueError("give either `pixel_values` or `image_features`, not both")
        if pixel_values is None and image_features is None:
            return None
        return _media_tokens(
            self(pixel_values, image_features, inputs.get("image_boxes")), inputs.get("image_mask")
        )


class ScaleVideoEmbeddings(nn.Module):
    """Frames -> one token each (from pixels by `config.video_frame_encoder`), or a per-frame feature.

    `"pooled"` (checkpoints saved before the option): the frame average-pooled by the patch size -> Linear
    (`frame_projection`), the frame's layout at 1/patch_size resolution (3 x 4 x 4 numbers at the sample
    preset).

    `"patches"` (default) adds a patch path to that token: each frame is cut into `patch_size` patches by a
    Conv2d of its own (not shared with the image encoder), a learned spatial position is added to each patch,
    a small shared projection reduces every patch to `patch_reduction.out_features` numbers, and a Linear over
    the concatenated patch grid (row-major, `grid_projection`) is added to the pooled frame's Linear. The
    pooling has to keep *where* things are: motion is a position changing from frame to frame, and the video
    encoder's layers compare the frame tokens over time. A mean (or any other permutation-invariant pooling)
    of the patch tokens is blind to it: a shape moved to another patch gives the same set of patch tokens,
    and a mean of (patch + position) only adds the same mean position to every frame. The grid Linear has its
    own weights for each patch slot, so the token is a function of what is in each patch and of which patch
    it is in, and within a patch the Conv2d sees the sub-patch position that an average blurs. The reduction
    keeps that Linear near hidden_size^2 parameters (16 patches x 24 numbers at the sample preset, 49 x 16 at
    the paper's). `grid_projection` starts at zero, so the patch path starts as the pooled stem and only adds
    what training finds useful: with random patch weights in its place, a linear probe of the sample's motion
    on the untrained video features fell from 99.7 % to 88-92 % (train/video_motion_probe.py).

    Either way the frame tokens get a temporal position embedding, and MFP reconstructs the average-pooled
    frame (`video_frame_vectors`); the video encoder shares no weights with the image encoder.
    """

    input_names = ("video_pixel_values", "video_features", "video_mask")

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.frame_encoder = config.video_frame_encoder
        self.cls_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        pooled_frame_size = config.num_channels * (config.image_size // config.patch_size) ** 2
        self.frame_projection = nn.Linear(pooled_frame_size, config.hidden_size)
        if self.frame_encoder == "patches":
            num_patches, hidden = config.num_patches, config.hidden_size
            reduced = max(8, -(-hidden // num_patches))
            self.patch_embedding = nn.Conv2d(
                config.num_channels, hidden, kernel_size=config.patch_size, stride=config.patch_size
            )
            self.spatial_position_embeddings = nn.Embedding(num_patches, hidden)
            self.patch_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
            self.patch_reduction = nn.Linear(hidden, reduced)
            self.grid_projection = ScaleZeroInitLinear(num_patches * reduced, hidden)
        self.feature_projection = nn.Linear(config.video_feature_dim, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_video_frames + 1, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def frame_tokens(self, video_pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) frames -> (B, T, hidden_size) frame tokens, before the temporal positions."""
        pooled = video_frame_vectors(video_pixel_values, self.patch_size)
        tokens = self.frame_projection(pooled.to(self.frame_projection.weight.dtype))
        if self.frame_encoder == "pooled":
            return tokens
        pixels = video_pixel_values.flatten(0, 1).to(self.patch_embedding.weight.dtype)
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B*T, N, H), row-major
        patches = F.gelu(self.patch_norm(patches + self.spatial_position_embeddings.weight))
        grid = self.patch_reduction(patches).flatten(1)  # (B*T, N * reduced): each slot keeps its place
        return tokens + self.grid_projection(grid).view(tokens.shape)

    def forward(
        self, video_pixel_values: torch.Tensor | None = None, video_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        if video_pixel_values is not None:
            if tuple(video_pixel_values.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"`video_pixel_values` frames are {tuple(video_pixel_values.shape[-2:])}, "
                    f"config.image_size is {self.image_size}"
                )
            tokens = self.frame_tokens(video_pixel_values)
            field = "video_pixel_values"
        else:
            tokens = self.feature_projection(video_features.to(self.feature_projection.weight.dtype))
            field = "video_features"
        frames = tokens.shape[1]
        _check_length(field, frames, self.position_embeddings.num_embeddings - 1, "max_video_frames")
        tokens = tokens + self.position_embeddings.weight[1 : frames + 1]
        cls = (self.cls_embedding + self.position_embeddings.weight[0]).expand(tokens.shape[0], 1, -1)
        return self.dropout(self.LayerNorm(torch.cat([cls.to(tokens.dtype), tokens], dim=1)))

    def embed_inputs(self, inputs: dict) -> ModalityTokens | None:
        video_pixel_values, video_features = inputs.get("video_pixel_values"), inputs.get("video_features")
        if video_pixel_values is not None and video_features is not None:
            raise ValueError("give either `video_pixel_values` or `video_features`, not both")
        if video_pixel_values is None and video_features is None:
            return None
        return _media_tokens(self(video_pixel_values, video_features), inputs.get("video_mask"))


class ScaleAudioEmbeddings(nn.Module):
    """MFCC / log-mel frames -> tokens: each non-overlapping group of `audio_subsampling` frames -> Linear."""

    input_names = ("audio_features", "audio_mask")

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.group = config.audio_subsampling
        self.max_tokens = math.ceil(config.max_audio_frames / config.audio_subsampling)
        self.cls_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.frame_projection = nn.Linear(
            config.audio_subsampling * config.audio_feature_dim, config.hidden_size
        )
        self.position_embeddings = nn.Embedding(self.max_tokens + 1, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        _check_length(
            "audio_features", audio_features.shape[1], self.max_tokens * self.group, "max_audio_frames"
        )
        groups = audio_group_vectors(audio_features, self.group)
        tokens = self.frame_projection(groups.to(self.frame_projection.weight.dtype))
        tokens = tokens + self.position_embeddings.weight[1 : tokens.shape[1] + 1]
        cls = (self.cls_embedding + self.position_embeddings.weight[0]).expand(tokens.shape[0], 1, -1)
        return self.dropout(self.LayerNorm(torch.cat([cls.to(tokens.dtype), tokens], dim=1)))

    def embed_inputs(self, inputs: dict) -> ModalityTokens | None:
        audio_features, audio_mask = inputs.get("audio_features"), inputs.get("audio_mask")
        if audio_features is None:
            return None
        if audio_mask is not None:
            # padding frames inside a partly valid group must not leak into its token
            audio_features = torch.where(audio_mask.bool()[..., None], audio_features, 0.0)
            audio_mask = audio_group_mask(audio_mask, self.group)
        return _media_tokens(self(audio_features), audio_mask)


MODALITY_EMBEDDINGS: dict[str, type[nn.Module]] = {
    "text": ScaleTextEmbeddings,
    "table": ScaleTableEmbeddings,
    "image": ScaleImageEmbeddings,
    "video": ScaleVideoEmbeddings,
    "audio": ScaleAudioEmbeddings,
}
"""Each modality's embeddings module: it owns its input names (`input_names`) and reads them from the model's
inputs (`embed_inputs`: the modality's tokens, or None when none of its inputs were given)."""

MODEL_INPUT_NAMES = (
    *(name for modality in MODALITIES for name in MODALITY_EMBEDDINGS[modality].input_names),
    "modality_mask",
)
"""Every input `ScaleModel.forward` reads (the shared processor -> model contract)."""


# ------------------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------------------


class ScaleContrastiveProjection(nn.Module):
    """Mean token of a modality encoder (before the JCT) -> contrastive feature.

    The released code uses Linear -> ReLU; we keep that and add a final Linear (SimCLR's two-layer head), so
    the feature is not confined to the non-negative orthant (where no cosine similarity is negative).
    """

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.projection = nn.Linear(config.hidden_size, config.projection_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.projection(F.relu(self.dense(hidden_states)))


class ScalePredictionHead(nn.Module):
    """BERT's prediction head (dense -> act -> LayerNorm -> decoder): token ids or raw-token regression."""

    def __init__(self, config: ScaleConfig, output_size: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, output_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.transform_act_fn(self.dense(hidden_states))))


# ------------------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------------------


def modality_set_codes(modality_mask: torch.Tensor) -> torch.Tensor:
    """(B,) integer code of each sample's modality set from a (B, 5) mask: bit i is `MODALITIES[i]`."""
    bits = 2 ** torch.arange(modality_mask.shape[-1], device=modality_mask.device)
    return (modality_mask.long() * bits).sum(dim=-1)


def _psd_power(matrices: torch.Tensor, power: float) -> torch.Tensor:
    """`matrices` (..., H, H), symmetric positive semi-definite, to the `power` (by their eigenvalues)."""
    values, vectors = torch.linalg.eigh(matrices)
    return (vectors * values.clamp(min=0)[..., None, :] ** power) @ vectors.transpose(-1, -2)


class ScaleModalitySetNorm(nn.Module):
    """Maps `product_embeds` fused from each modality set (one row per set: `modality_set_codes`) onto the
    distribution of the reference listings, products fused from all they have.

    The same product fused from different modality sets lands in regions that differ by a per-set offset,
    spread and shape, so a caption-only query finds the caption-only listings first, whatever they sell (the
    "modality gap" of contrastive models). Each set's embeddings are centred and scaled by the set's mean and
    standard deviation (`mean`, `std`), then moved by `transport`: with the covariances C of the set and R
    of the reference, the optimal-transport (Monge) map between the two Gaussians,
    C^-1/2 (C^1/2 R C^1/2)^1/2 C^-1/2, the linear map that gives the set the reference's covariance while
    moving its embeddings least, expressed between the standardised spaces. As with BatchNorm's running
    statistics, the rows are buffers fitted on the model's own embeddings after training (`fit`;
    `train/modality_set_calibration.py`), not parameters; until then (mean 0, std 1, identity transport) the
    map is the identity."""

    def __init__(self, config: ScaleConfig):
        super().__init__()
        num_sets = 2 ** len(MODALITIES)
        self.register_buffer("mean", torch.zeros(num_sets, config.hidden_size))
        self.register_buffer("std", torch.ones(num_sets, config.hidden_size))
        self.register_buffer("transport", torch.eye(config.hidden_size).repeat(num_sets, 1, 1))

    def forward(self, product_embeds: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        codes = modality_set_codes(modality_mask)
        dtype = product_embeds.dtype
        standardised = (product_embeds - self.mean[codes].to(dtype)) / self.std[codes].to(dtype)
        # every set's map on every row, then each row's own: 32 small matmuls instead of gathering a
        # (B, H, H) stack of maps
        moved = torch.einsum("bh,shk->sbk", standardised, self.transport.to(dtype))
        return moved[codes, torch.arange(len(codes), device=codes.device)]

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the identity (the raw fused embeddings), e.g. before fitting again."""
        self.mean.zero_()
        self.std.fill_(1.0)
        self.transport.copy_(torch.eye(self.transport.shape[-1]).expand_as(self.transport))

    @torch.no_grad()
    def fit(
        self,
        counts: torch.Tensor,
        sums: torch.Tensor,
        products: torch.Tensor,
        reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        prior_count: float = 16.0,
        ridge: float = 0.3,
    ) -> None:
        """Fit every row from statistics of raw `product_embeds` (the identity map's outputs).

        Args:
            counts, sums, products: per set, the (num_sets,) counts, (num_sets, H) sums and (num_sets, H, H)
                sums of outer products x x^T. A set seen n times gets its own mean and second moments with
                weight n / (n + prior_count) and the pooled ones (all sets together) with the rest, so a
                rare set is not mapped by a handful of samples and a set never seen gets the pooled ones.
            reference: the reference views' (num_sets,) counts and (num_sets, H) sums by set and their
                (H, H) sum of outer products; their covariance around their own sets' means is the one every
                set is moved to. None: no transport (each set standardised only).
            ridge: added to both covariances, times the reference's mean variance, before the map (the
                covariance of a set seen a few hundred times in hundreds of dimensions is noisy).
        """
        counts, sums, products = counts.double(), sums.double(), products.double()
        total = counts.sum()
        if total == 0:
            raise ValueError("no embeddings to fit the modality-set statistics on")
        weight = torch.where(counts > 0, counts / (counts + prior_count), 0.0)  # unseen: pooled, even at 0
        seen = counts.clamp(min=1)
        mean = weight[:, None] * sums / seen[:, None] + (1 - weight[:, None]) * sums.sum(0) / total
        second = weight[:, None, None] * products / seen[:, None, None]
        second = second + (1 - weight[:, None, None]) * products.sum(0) / total
        covariance = second - mean[:, :, None] * mean[:, None, :]
        std = covariance.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt().clamp(min=1e-6)
        self.mean.copy_(mean)
        self.std.copy_(std)
        eye = torch.eye(mean.shape[1], dtype=torch.float64, device=mean.device)
        if reference is None:
            self.transport.copy_(eye.expand_as(self.transport))
            return
        reference_counts, reference_sums, reference_products = (t.double() for t in reference)
        if reference_counts.sum() == 0:
            raise ValueError("no reference embeddings to fit the modality-set transport on")
        # sum over the reference views of (x - mean of its set)(x - mean of its set)^T
        cross = reference_sums.T @ mean
        target = reference_products - cross - cross.T + (mean.T * reference_counts) @ mean
        target = target / reference_counts.sum()
        shift = ridge * target.diagonal().mean() * eye
        source = covariance + shift
        root, inverse_root = _psd_power(source, 0.5), _psd_power(source, -0.5)
        monge = inverse_root @ _psd_power(root @ (target + shift) @ root, 0.5) @ inverse_root
        target_std = target.diagonal().clamp(min=0).sqrt().clamp(min=1e-6)
        self.transport.copy_(std[:, :, None] * monge / target_std)


class ScaleModalityWeights(nn.Module):
    """Each modality's weight in `product_embeds` ((5,) buffer, all ones until fitted: the plain mean).

    A modality that says less about the product than the others (a photo encoder trained from scratch beside
    a pretrained text encoder, an attribute table filled with boilerplate) would otherwise count as much as
    they do. The weights come from the modalities' own embeddings, without labels (`fit`;
    `train/modality_set_calibration.py`): a modality weighs the share of its product-to-product similarities
    that the other modalities together predict, so a modality that agrees with nothing (pure noise) gets
    weight 0, and one that agrees with a single other modality (a video with its photo) keeps its weight."""

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.register_buffer("weights", torch.ones(len(MODALITIES)))

    @torch.no_grad()
    def reset(self) -> None:
        self.weights.fill_(1.0)

    @torch.no_grad()
    def fit(self, agreement: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
        """Fit the weights from the (5, 5) `agreement` of each modality pair (the correlation of the two
        modalities' product-to-product similarities), read only where `measured` (5, 5) bool.

        Each modality's shared share is its squared multiple correlation with the others (the R^2 of its
        similarities regressed on theirs: 1 - 1 / diag(R^-1) of the agreement matrix R, unmeasured or negative
        agreements read as 0); the weights are those shares scaled to mean 1 over the modalities measured
        against another. A modality measured against none keeps weight 1. Returns the shares."""
        size = len(agreement)
        off_diagonal = measured.bool() & ~torch.eye(size, dtype=torch.bool, device=measured.device)
        has_pair = off_diagonal.any(dim=1)
        shares = torch.zeros(size, dtype=torch.float64, device=agreement.device)
        if not has_pair.any():
            self.reset()
            return shares
        kept = has_pair.nonzero().flatten()
        correlation = torch.where(off_diagonal, agreement.double().clamp(min=0), 0.0)[kept][:, kept]
        correlation = correlation + torch.eye(len(kept), dtype=torch.float64, device=correlation.device)
        shares[kept] = (1 - 1 / torch.linalg.pinv(correlation).diagonal()).clamp(0, 1)
        scale = shares[kept].mean()
        weights = torch.ones_like(shares)
        if scale > 0:
            weights[kept] = shares[kept] / scale
        self.weights.copy_(weights)
        return shares


class ScaleAlignmentReference(nn.Module):
    """The mean and standard deviation of each modality pair's cosines across products ((5, 5) buffers),
    fitted on many products after training (`fit`; `train/modality_set_calibration.py`), as BatchNorm keeps
    running statistics. A model in eval mode reads the relative S against them instead of against the
    batch, so a product's S is its own, whoever it is batched with; `fitted` stays False (batch statistics)
    until then."""

    def __init__(self, config: ScaleConfig):
        super().__init__()
        self.register_buffer("mean", torch.zeros(len(MODALITIES), len(MODALITIES)))
        self.register_buffer("std", torch.ones(len(MODALITIES), len(MODALITIES)))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def reset(self) -> None:
        self.mean.zero_()
        self.std.fill_(1.0)
        self.fitted.fill_(False)

    @torch.no_grad()
    def fit(self, counts: torch.Tensor, sums: torch.Tensor, squares: torch.Tensor) -> None:
        """Set the statistics from the (5, 5) counts, sums and sums of squares of cross-product cosines
        (`simcl.cross_product_cosine_sums`); a pair never seen keeps mean 0, standard deviation 1."""
        counts, sums, squares = counts.double(), sums.double(), squares.double()
        if counts.sum() == 0:
            raise ValueError("no cross-product cosines to fit the alignment reference on")
        seen = counts > 0
        mean = torch.where(seen, sums / counts.clamp(min=1), 0.0)
        variance = torch.where(seen, squares / counts.clamp(min=1) - mean**2, 1.0).clamp(min=0)
        self.mean.copy_(mean)
        self.std.copy_(variance.sqrt().clamp(min=1e-6))
        self.fitted.fill_(True)


@dataclass
class ScaleModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, total_tokens, hidden_size)`):
        JCT output over the concatenated tokens of the given modalities (in `MODALITIES` order); zero at
        tokens that are masked out (padding, missing modalities).
    product_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        Fused product embedding: the mean over the present modalities of each modality's mean post-JCT token,
        weighted by `ScaleModalityWeights` (even until fitted), plus `product_projection` of it, mapped
        from its modality set's distribution onto the full listings' (`ScaleModalitySetNorm`; the identity
        until fitted).
    text_embeds, table_embeds, image_embeds, video_embeds, audio_embeds (`(batch_size, projection_dim)`):
        Contrastive features of each modality (mean of its encoder's tokens before the JCT -> projection
        head), not normalised; zero where the sample lacks the modality.
    alignment_scores (`torch.FloatTensor` of shape `(batch_size, 5, 5)`):
        SIMCL's modality alignment matrix S per sample (rows/columns of missing modalities are zero).
    modality_mask (`torch.LongTensor` of shape `(batch_size, 5)`):
        The modalities each sample was treated as having.
    fusion_attention_mask (`torch.LongTensor` of shape `(batch_size, total_tokens)`):
        Which JCT tokens were attended to.
    hidden_states, attentions (with `output_hidden_states` / `output_attentions`):
        The JCT's input and per-layer outputs `(batch_size, total_tokens, hidden_size)`, and its per-layer
        attention probabilities `(batch_size, num_heads, total_tokens, total_tokens)`.
    {text,table,image,video,audio}_hidden_states, {text,...}_attentions:
        The same for each modality encoder (before the JCT); None for a modality not given.
    """

    last_hidden_state: torch.FloatTensor | None = None
    product_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    table_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    alignment_scores: torch.FloatTensor | None = None
    modality_mask: torch.LongTensor | None = None
    fusion_attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    table_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    table_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    video_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    video_attentions: tuple[torch.FloatTensor, ...] | None = None
    audio_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    audio_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ScaleForPreTrainingOutput(ModelOutput):
    r"""
    loss: sum of the terms below that had something to compute. Each term is 0 when it had nothing to compute
    (no labels / targets given, nothing masked, modality absent).
    mlm_loss, mem_loss: masked language / entity modelling cross-entropy (text, table).
    mrp_loss, mfp_loss, mam_loss: masked region (image), frame (video), audio regression, MSE on raw tokens.
    contrastive_loss: SIMCL inter-modality contrastive loss, mean (or sum, `config.contrastive_reduction`)
        over the usable modality pairs.
    subset_loss: subset consistency (`config.subset_loss_weight` times NT-Xent over each product's
        `product_embeds` fused from all its modalities and from `config.num_subset_views` random subsets).
    distillation_loss: `config.distillation_loss_weight` times the relational distillation of those views
        toward `teacher_embeds` (0 when none are given).
    mlm_logits, mem_logits: token predictions of the text / table tokens (scaled by S[i, i] when S weighs the
        masked tasks' logits): (B, L, vocab_size), or (N, vocab_size) for the N labelled tokens of present
        samples, in order, with `config.sparse_prediction`.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mem_loss: torch.FloatTensor | None = None
    mrp_loss: torch.FloatTensor | None = None
    mfp_loss: torch.FloatTensor | None = None
    mam_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    subset_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mem_logits: torch.FloatTensor | None = None
    product_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    table_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    alignment_scores: torch.FloatTensor | None = None
    modality_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class _ScaleEncoding:
    """Everything one forward pass computes, including the JCT token spans the pretraining heads need."""

    fused: torch.Tensor
    fusion_inputs: torch.Tensor
    fusion_mask: torch.Tensor
    spans: dict[str, tuple[int, int]]
    token_keep: dict[str, torch.Tensor]
    modality_embeds: torch.Tensor
    modality_mask: torch.Tensor
    alignment: torch.Tensor
    pooled_states: torch.Tensor
    pooled_kept: torch.Tensor
    product_embeds: torch.Tensor

    def model_output(self) -> ScaleModelOutput:
        return ScaleModelOutput(
            last_hidden_state=self.fused,
            product_embeds=self.product_embeds,
            **{f"{name}_embeds": self.modality_embeds[:, i] for i, name in enumerate(MODALITIES)},
            alignment_scores=self.alignment,
            modality_mask=self.modality_mask.long(),
            fusion_attention_mask=self.fusion_mask.long(),
        )


# ------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------


class ScalePreTrainedModel(PreTrainedModel):
    config_class = ScaleConfig
    config: ScaleConfig
    base_model_prefix = "scale"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ScaleLayer"]
    # A folder of one head loads into the others (AutoModel on a pretraining checkpoint, fine-tuning from it):
    # the heads it does not have are dropped silently instead of being reported key by key.
    _keys_to_ignore_on_load_unexpected = [
        r"^(mlm_head|mem_head|image_pixel_head|image_feature_head|video_pixel_head|video_feature_head"
        r"|audio_head|classifier)\."
    ]

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`save_pretrained`, with an `auto_map` naming every SCALE class, so that whichever head was saved,
        each Auto class loads the folder by remote code (`trust_remote_code=True`) without this package."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **remote_code_auto_map()}
        super().save_pretrained(save_directory, *args, **kwargs)

    def _resize_token_embeddings(
        self, new_num_tokens: int | None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        """Captions and tables share one vocabulary (`config.vocab_size`): resize both embedding tables (and,
        in `ScaleForPreTraining`, both token decoders), so that the resized model saves and reloads."""
        embeddings = super()._resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        size = embeddings.num_embeddings
        table = self.base_model.embeddings["table"]
        table.word_embeddings = self._get_resized_embeddings(
            table.word_embeddings, size, mean_resizing=mean_resizing
        )
        for head in self._vocabulary_heads():
            head.decoder = self._get_resized_lm_head(head.decoder, size, mean_resizing=mean_resizing)
        return embeddings

    def _vocabulary_heads(self) -> tuple[nn.Module, ...]:
        """Heads that predict token ids over the shared vocabulary."""
        return ()

    def _recording(self, output_hidden_states: bool | None, output_attentions: bool | None):
        """`_recording_outputs` for one forward call; unset flags fall back to the config (transformers')."""
        return _recording_outputs(
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            self.config.output_attentions if output_attentions is None else output_attentions,
        )

    def _recorded_fields(self, recorder: _OutputRecorder | None, per_modality: bool) -> dict[str, tuple]:
        """Output fields from a recorder: the JCT's `hidden_states` / `attentions` and, with `per_modality`,
        `{modality}_hidden_states` / `{modality}_attentions` of each encoder that ran."""
        if recorder is None:
            return {}
        base = self.base_model
        fields = recorder.of(base.fusion_encoder)
        if per_modality:
            for name in MODALITIES:
                recorded = recorder.of(base.encoders[name])
                fields.update({f"{name}_{key}": value for key, value in recorded.items()})
        return {key: value for key, value in fields.items() if value is not None}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, ScaleZeroInitLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (ScaleImageEmbeddings, ScaleVideoEmbeddings, ScaleAudioEmbeddings)):
            init.normal_(module.cls_embedding, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, ScaleModel):
            if module.alignment_parameter is not None:
                # "learned" S starts at all ones (k * S * softmax(S) = 1), "bounded" S at a constant (a
                # uniform softmax times the count = 1): SIMCL starts unweighted.
                init.ones_(module.alignment_parameter)
        elif isinstance(module, ScaleModalityWeights):  # the plain mean until fitted
            init.ones_(module.weights)
        elif isinstance(module, ScaleModalitySetNorm):  # the identity until fitted
            init.zeros_(module.mean)
            init.ones_(module.std)
            init.copy_(module.transport, torch.eye(module.transport.shape[-1]).expand_as(module.transport))
        elif isinstance(module, ScaleAlignmentReference):  # unfitted: S read against the batch
            init.zeros_(module.mean)
            init.ones_(module.std)
            init.zeros_(module.fitted)

    def load_text_encoder_weights(self, bert: "str | os.PathLike | PreTrainedModel") -> list[str]:
        """Initialise the text embeddings and encoder from a BERT checkpoint (the paper starts from BERT).

        Copies the word embeddings, the first `max_text_length` position embeddings (BERT's token-type row 0
        is added to them: every caption token has type 0, so the sum is unchanged), the embedding LayerNorm
        and the first `config.num_text_encoder_layers` layers, parameter by parameter.

        Args:
            bert: a local folder with a BERT checkpoint, or a loaded `BertModel` (or a model wrapping one).

        Returns:
            The names of the SCALE parameters that were overwritten.
        """
        if not isinstance(bert, nn.Module):
            from transformers import BertModel

            bert = BertModel.from_pretrained(bert)
        bert = bert.base_model
        bert_config, config = bert.config, self.config
        if bert_config.num_hidden_layers < config.num_text_encoder_layers:
            raise ValueError(
                f"BERT has {bert_config.num_hidden_layers} layers, config.num_text_encoder_layers is "
                f"{config.num_text_encoder_layers}"
            )
        if bert_config.num_attention_heads != config.num_attention_heads:
            raise ValueError(
                f"BERT has {bert_config.num_attention_heads} attention heads, config.num_attention_heads is "
                f"{config.num_attention_heads}"
            )
        source = bert.state_dict()
        text_positions = source["embeddings.position_embeddings.weight"]
        if text_positions.shape[0] < config.max_text_length:
            raise ValueError(
                f"BERT has {text_positions.shape[0]} positions, "
                f"config.max_text_length is {config.max_text_length}"
            )
        mapping = {
            "embeddings.text.word_embeddings.weight": source["embeddings.word_embeddings.weight"],
            "embeddings.text.position_embeddings.weight": text_positions[: config.max_text_length]
            + source["embeddings.token_type_embeddings.weight"][0],
            "embeddings.text.LayerNorm.weight": source["embeddings.LayerNorm.weight"],
            "embeddings.text.LayerNorm.bias": source["embeddings.LayerNorm.bias"],
        }
        base = self.base_model
        for index, layer in enumerate(base.encoders["text"].layer):
            for name, _ in layer.named_parameters():
                mapping[f"encoders.text.layer.{index}.{name}"] = source[f"encoder.layer.{index}.{name}"]

        target = dict(base.named_parameters())
        for name, tensor in mapping.items():
            if target[name].shape != tensor.shape:
                raise ValueError(
                    f"Cannot load BERT weights into `{name}`: BERT's tensor is {tuple(tensor.shape)}, "
                    f"SCALE's is {tuple(target[name].shape)} "
                    "(check vocab_size, hidden_size, intermediate_size)"
                )
        with torch.no_grad():
            for name, tensor in mapping.items():
                target[name].copy_(tensor)
        prefix = f"{self.base_model_prefix}." if base is not self else ""
        return [prefix + name for name in mapping]


class ScaleModel(ScalePreTrainedModel):
    """SCALE: five single-modality encoders (own weights each), a learned modality-type embedding and the JCT.

    Outputs the fused `product_embeds`, the pre-JCT contrastive feature of each modality and SIMCL's matrix S.
    """

    # checkpoints saved before the alignment reference existed load it unfitted (S read against the batch)
    # and before the modality weights existed, with the plain mean over modalities
    _keys_to_ignore_on_load_missing = [
        r"alignment_reference\.",
        r"modality_weights\.",
        r"modality_set_norm\.transport",
    ]

    def __init__(self, config: ScaleConfig):
        super().__init__(config)
        self.embeddings = nn.ModuleDict({name: MODALITY_EMBEDDINGS[name](config) for name in MODALITIES})
        self.encoders = nn.ModuleDict(
            {
                name: ScaleEncoder(
                    config, config.num_text_encoder_layers if name == "text" else config.num_encoder_layers
                )
                for name in MODALITIES
            }
        )
        self.contrastive_projections = nn.ModuleDict(
            {name: ScaleContrastiveProjection(config) for name in MODALITIES}
        )
        self.modality_type_embeddings = nn.Embedding(len(MODALITIES), config.hidden_size)
        self.fusion_encoder = ScaleEncoder(config, config.num_fusion_layers)
        # The fused token states must keep their modality (the masked tasks read it); this residual map,
        # trained by the subset-consistency loss from zero (identity), lets the product embedding drop it.
        self.product_projection = ScaleZeroInitLinear(config.hidden_size, config.hidden_size)
        self.modality_weights = ScaleModalityWeights(config)
        self.modality_set_norm = ScaleModalitySetNorm(config)
        self.alignment_reference = ScaleAlignmentReference(config)
        self.alignment_parameter = (
            nn.Parameter(torch.ones(len(MODALITIES), len(MODALITIES)))
            if config.alignment in ("learned", "bounded")
            else None
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings["text"].word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings["text"].word_embeddings = value

    def _encode_modality(self, name: str, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Run one modality encoder on the kept tokens (a sample lacking the modality keeps none)."""
        return self.encoders[name](torch.where(keep[..., None], tokens, 0.0), keep)

    def _fuse_modalities(
        self,
        fusion_inputs: torch.Tensor,
        token_keep: dict[str, torch.Tensor],
        spans: dict[str, tuple[int, int]],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The JCT over the kept tokens: fused states zeroed where not kept, the fusion mask, each modality's
        mean post-JCT token (B, 5, H; 0 for those not given) and whether the sample kept it (B, 5)."""
        fusion_mask = torch.cat([token_keep[name] for name in spans], dim=1)
        fused = self.fusion_encoder(fusion_inputs, fusion_mask)
        fused = torch.where(fusion_mask[..., None], fused, 0.0)
        pooled = {
            name: _token_mean(fused[:, first:last], token_keep[name]) for name, (first, last) in spans.items()
        }
        absent = torch.zeros_like(next(iter(pooled.values())))
        pooled = torch.stack([pooled.get(name, absent) for name in MODALITIES], dim=1)
        kept = torch.zeros(fused.shape[0], len(MODALITIES), dtype=torch.bool, device=fused.device)
        kept[:, [MODALITIES.index(name) for name in spans]] = torch.stack(
            [token_keep[name].any(dim=-1) for name in spans], dim=1
        )
        return fused, fusion_mask, pooled, kept

    def _product_embeds(self, pooled: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """`product_embeds` from each modality's pooled JCT state (N, 5, H) and whether it was kept (N, 5):
        the mean over the kept modalities, each weighted by `modality_weights` however many tokens it has,
        plus `product_projection` of that mean, mapped by `modality_set_norm` for the set of modalities kept.
        Apart from the JCT, so the weights and the map can be fitted on pooled states computed once."""
        weights = torch.where(kept, self.modality_weights.weights.to(pooled.dtype), 0.0)
        # a sample whose kept modalities all weigh 0 falls back to their plain mean
        weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, kept.to(pooled.dtype))
        pooled = (weights[..., None] * pooled).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
        return self.modality_set_norm(pooled + self.product_projection(pooled), kept)

    def _subset_token_keep(self, encoding: _ScaleEncoding, keep_modalities: torch.Tensor) -> dict:
        """`encoding`'s kept tokens narrowed to the modalities in `keep_modalities` (B, 5)."""
        return {
            name: keep & keep_modalities[:, MODALITIES.index(name), None].bool()
            for name, keep in encoding.token_keep.items()
        }

    def subset_product_embeds(self, encoding: _ScaleEncoding, keep_modalities: torch.Tensor) -> torch.Tensor:
        """`product_embeds` of the same products fused from only the modalities in `keep_modalities` (B, 5).

        The modality encoders do not see each other, so their outputs are reused; only the JCT runs again.
        Equal to encoding the subset alone (up to the padding the dropped modalities leave in the batch)."""
        token_keep = self._subset_token_keep(encoding, keep_modalities)
        return self._product_embeds(
            *self._fuse_modalities(encoding.fusion_inputs, token_keep, encoding.spans)[2:]
        )

    def _pooled_views(
        self, encoding: _ScaleEncoding, subset_modality_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each modality's pooled JCT state (B, V + 1, 5, H) and whether it was kept (B, V + 1, 5) in the full
        view and in each of the (B, V, 5) subset views, and the modality set each view was fused from
        (B, V + 1, 5) bool: what `_product_embeds` reads. The JCT runs once per subset view."""
        views = subset_modality_mask.bool() & encoding.modality_mask[:, None]
        states = [(encoding.pooled_states, encoding.pooled_kept)] + [
            self._fuse_modalities(
                encoding.fusion_inputs, self._subset_token_keep(encoding, views[:, view]), encoding.spans
            )[2:]
            for view in range(views.shape[1])
        ]
        pooled, kept = (torch.stack(parts, dim=1) for parts in zip(*states, strict=True))
        return pooled, kept, torch.cat([encoding.modality_mask[:, None], views], dim=1)

    def _product_views(
        self, encoding: _ScaleEncoding, subset_modality_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V + 1, hidden_size) `product_embeds` of the full view and of the (B, V, 5) subset views, and
        the modality set each was fused from (B, V + 1, 5) bool."""
        pooled, kept, sets = self._pooled_views(encoding, subset_modality_mask)
        embeds = self._product_embeds(pooled.flatten(0, 1), kept.flatten(0, 1))
        return embeds.unflatten(0, sets.shape[:2]), sets

    def _encode(self, **inputs) -> _ScaleEncoding:
        unknown = sorted(set(inputs) - set(MODEL_INPUT_NAMES))
        if unknown:
            raise TypeError(f"unexpected SCALE inputs {unknown}; the model reads {list(MODEL_INPUT_NAMES)}")
        check_model_inputs(self.config, inputs)
        embedded = {name: self.embeddings[name].embed_inputs(inputs) for name in MODALITIES}
        given = [name for name in MODALITIES if embedded[name] is not None]
        if not given:
            raise ValueError(f"no modality inputs given; expected at least one of {MODALITIES}")
        batch_size = embedded[given[0]][0].shape[0]  # the same for every input (`check_model_inputs`)
        device = embedded[given[0]][0].device

        present = torch.zeros(batch_size, len(MODALITIES), dtype=torch.bool, device=device)
        for name in given:
            present[:, MODALITIES.index(name)] = embedded[name][2]
        modality_mask = inputs.get("modality_mask")
        if modality_mask is not None:
            if tuple(modality_mask.shape) != (batch_size, len(MODALITIES)):
                raise ValueError(
                    f"`modality_mask` must be ({batch_size}, {len(MODALITIES)}), "
                    f"got {tuple(modality_mask.shape)}"
                )
            present = present & modality_mask.bool()

        fusion_tokens, spans, token_keep = [], {}, {}
        features, start = {}, 0
        for index, name in enumerate(MODALITIES):
            if embedded[name] is None:
                continue
            tokens, mask, _ = embedded[name]
            keep = mask & present[:, index, None]
            hidden = self._encode_modality(name, tokens, keep)
            feature = self.contrastive_projections[name](_token_mean(hidden, keep))
            features[name] = torch.where(present[:, index, None], feature, 0.0)
            fusion_tokens.append(hidden + self.modality_type_embeddings.weight[index])
            token_keep[name] = keep
            spans[name] = (start, start + hidden.shape[1])
            start += hidden.shape[1]

        fusion_inputs = torch.cat(fusion_tokens, dim=1)
        fused, fusion_mask, pooled, kept = self._fuse_modalities(fusion_inputs, token_keep, spans)

        absent = torch.zeros_like(features[given[0]])
        modality_embeds = torch.stack([features.get(name, absent) for name in MODALITIES], dim=1)
        relative_temperature = self.config.relative_alignment_temperature
        alignment = alignment_scores(
            modality_embeds,
            present,
            self.config.alignment,
            self.alignment_parameter,
            self.config.temperature,
            relative_temperature=relative_temperature,
        )
        if self.config.alignment == "relative" and not self.training:
            reference = self.alignment_reference
            own = alignment_scores(
                modality_embeds,
                present,
                "relative",
                reference=(reference.mean, reference.std),
                relative_temperature=relative_temperature,
            )
            alignment = torch.where(reference.fitted, own, alignment)  # a tensor: no host sync
        return _ScaleEncoding(
            fused=fused,
            fusion_inputs=fusion_inputs,
            fusion_mask=fusion_mask,
            spans=spans,
            token_keep=token_keep,
            modality_embeds=modality_embeds,
            modality_mask=present,
            alignment=alignment,
            pooled_states=pooled,
            pooled_kept=kept,
            product_embeds=self._product_embeds(pooled, kept),
        )

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        table_input_ids: torch.LongTensor | None = None,
        table_attention_mask: torch.Tensor | None = None,
        table_entity_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        image_boxes: torch.FloatTensor | None = None,
        image_mask: torch.Tensor | None = None,
        video_pixel_values: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_mask: torch.Tensor | None = None,
        modality_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ScaleModelOutput:
        r"""
        Any subset of modalities may be given (see the shared inputs contract); `modality_mask` (B, 5) narrows
        which modalities each sample has. Without it, a sample has a given modality when its mask has any 1.
        `output_hidden_states` / `output_attentions` add every encoder's and the JCT's per-layer states /
        attention maps; `return_dict=False` gives a tuple (the fields that are not None, in order).
        """
        arguments = locals()
        with self._recording(output_hidden_states, output_attentions) as recorder:
            output = self._encode(**{name: arguments[name] for name in MODEL_INPUT_NAMES}).model_output()
        for key, value in self._recorded_fields(recorder, per_modality=True).items():
            output[key] = value
        return output

    def get_product_embeddings(self, **inputs) -> torch.Tensor:
        """(B, hidden_size) fused product embeddings of whatever modalities are given / unmasked."""
        return self._encode(**inputs).product_embeds

    def get_subset_product_embeddings(
        self, subset_modality_mask: torch.Tensor, **inputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each product fused from all its modalities and from each of its subset views.

        Args:
            subset_modality_mask: (B, V, 5) the modalities of each view (those a product lacks are ignored).
            inputs: the model's inputs, as for `forward`.

        Returns:
            `product_embeds` (B, V + 1, hidden_size), the full view first, and the modality set each view was
            fused from (B, V + 1, 5) bool. The modality encoders run once, the JCT once per view.
        """
        return self._product_views(self._encode(**inputs), subset_modality_mask)

    def _modality_features(self, name: str, inputs: dict) -> torch.Tensor:
        """Contrastive feature of one modality alone (its encoder and projection only, no JCT)."""
        check_model_inputs(self.config, inputs)
        embedded = self.embeddings[name].embed_inputs(inputs)
        if embedded is None:
            raise ValueError(f"no {name} inputs given")
        tokens, mask, has_content = embedded
        keep = mask & has_content[:, None]
        hidden = self._encode_modality(name, tokens, keep)
        return torch.where(
            has_content[:, None], self.contrastive_projections[name](_token_mean(hidden, keep)), 0.0
        )

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._modality_features("text", {"input_ids": input_ids, "attention_mask": attention_mask})

    def get_table_features(
        self,
        table_input_ids: torch.LongTensor,
        table_entity_ids: torch.LongTensor,
        table_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._modality_features(
            "table",
            {
                "table_input_ids": table_input_ids,
                "table_entity_ids": table_entity_ids,
                "table_attention_mask": table_attention_mask,
            },
        )

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        image_boxes: torch.FloatTensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._modality_features(
            "image",
            {
                "pixel_values": pixel_values,
                "image_features": image_features,
                "image_boxes": image_boxes,
                "image_mask": image_mask,
            },
        )

    def get_video_features(
        self,
        video_pixel_values: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._modality_features(
            "video",
            {
                "video_pixel_values": video_pixel_values,
                "video_features": video_features,
                "video_mask": video_mask,
            },
        )

    def get_audio_features(
        self, audio_features: torch.FloatTensor, audio_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self._modality_features("audio", {"audio_features": audio_features, "audio_mask": audio_mask})


def _mask_or_ones(mask: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    if tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape[:2])}")
    return mask.bool()


def _with_cls(mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)


def _token_mean(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, H) mean of the kept tokens of (B, L, H) states; 0 for a sample without any. No host-device sync."""
    weights = keep.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask`; 0 (with zero gradient) when nothing is selected. No host-device sync."""
    mask = mask.bool()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


class ScaleForPreTraining(ScalePreTrainedModel):
    """SCALE with the five masked tasks (MLM, MEM, MRP, MFP, MAM) and SIMCL, weighted by S as in Eq. 3."""

    def __init__(self, config: ScaleConfig):
        super().__init__(config)
        self.scale = ScaleModel(config)
        patch_pixels = config.num_channels * config.patch_size**2
        pooled_frame = config.num_channels * (config.image_size // config.patch_size) ** 2
        self.mlm_head = ScalePredictionHead(config, config.vocab_size)
        self.mem_head = ScalePredictionHead(config, config.vocab_size)
        self.image_pixel_head = ScalePredictionHead(config, patch_pixels)
        self.image_feature_head = ScalePredictionHead(config, config.image_feature_dim)
        self.video_pixel_head = ScalePredictionHead(config, pooled_frame)
        self.video_feature_head = ScalePredictionHead(config, config.video_feature_dim)
        self.audio_head = ScalePredictionHead(config, config.audio_subsampling * config.audio_feature_dim)
        self.post_init()

    def _vocabulary_heads(self) -> tuple[nn.Module, ...]:
        return (self.mlm_head, self.mem_head)

    def _token_loss(
        self,
        name: str,
        encoding: _ScaleEncoding,
        head: nn.Module,
        labels: torch.Tensor,
        logit_weight: torch.Tensor | None,
        loss_weight: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = encoding.spans[name]
        hidden = encoding.fused[:, start:end]
        counted = (labels != -100) & encoding.token_keep[name]
        # Eq. 3's per-sample weights, per token
        logit_weight, loss_weight = (
            None if weight is None else weight[:, None].expand(labels.shape)
            for weight in (logit_weight, loss_weight)
        )
        if self.config.sparse_prediction:  # only the counted tokens reach the vocabulary head
            hidden, labels = hidden[counted], labels[counted]
            logit_weight, loss_weight = (
                None if weight is None else weight[counted] for weight in (logit_weight, loss_weight)
            )
            counted = torch.ones_like(labels, dtype=torch.bool)
        logits = head(hidden)
        if logit_weight is not None:
            logits = logits * logit_weight[..., None].to(logits.dtype)
        per_token = F.cross_entropy(
            logits.float().flatten(0, -2), torch.where(counted, labels, 0).flatten(), reduction="none"
        ).view(labels.shape)
        if loss_weight is not None:
            per_token = per_token * loss_weight.float()
        return _masked_mean(per_token, counted), logits

    def _regression_loss(
        self,
        name: str,
        encoding: _ScaleEncoding,
        head: nn.Module,
        targets: torch.Tensor,
        positions: torch.Tensor,
        logit_weight: torch.Tensor | None,
        loss_weight: torch.Tensor | None,
        element_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MSE over the masked tokens of present samples; `element_mask` (B, N, D) leaves out the padded parts
        of a token (the padding frames of a partly valid audio group). `logit_weight` scales the predictions
        (Eq. 3's letter), `loss_weight` each sample's squared errors."""
        start, end = encoding.spans[name]
        predictions = head(encoding.fused[:, start + 1 : end])  # the model's CLS is never masked
        if logit_weight is not None:
            predictions = predictions * logit_weight[:, None, None].to(predictions.dtype)
        if tuple(positions.shape) != tuple(predictions.shape[:2]):
            raise ValueError(
                f"`masked_{name}_positions` must be {tuple(predictions.shape[:2])} "
                f"(one flag per {name} token), got {tuple(positions.shape)}"
            )
        if targets.shape[-1] != predictions.shape[-1] or targets.shape[1] != predictions.shape[1]:
            raise ValueError(
                f"`{name}_targets` give {tuple(targets.shape[1:])} raw tokens, the {name} tokens are "
                f"{tuple(predictions.shape[1:])}"
            )
        counted = positions.bool() & encoding.token_keep[name][:, 1:]
        elements = counted[..., None].expand(predictions.shape)
        if element_mask is not None:
            elements = elements & element_mask.bool()
        difference = torch.where(elements, predictions.float() - targets.float(), 0.0)
        per_token = difference.pow(2).sum(dim=-1) / elements.sum(dim=-1).clamp(min=1)
        if loss_weight is not None:
            per_token = per_token * loss_weight[:, None].float()
        return _masked_mean(per_token, counted)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        table_input_ids: torch.LongTensor | None = None,
        table_attention_mask: torch.Tensor | None = None,
        table_entity_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        image_boxes: torch.FloatTensor | None = None,
        image_mask: torch.Tensor | None = None,
        video_pixel_values: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_mask: torch.Tensor | None = None,
        modality_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        table_labels: torch.LongTensor | None = None,
        masked_image_positions: torch.Tensor | None = None,
        image_targets: torch.FloatTensor | None = None,
        masked_video_positions: torch.Tensor | None = None,
        video_targets: torch.FloatTensor | None = None,
        masked_audio_positions: torch.Tensor | None = None,
        audio_targets: torch.FloatTensor | None = None,
        subset_modality_mask: torch.Tensor | None = None,
        teacher_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> ScaleForPreTrainingOutput:
        r"""
        labels (`(B, Lt)`), table_labels (`(B, Ltab)`): MLM / MEM targets, -100 where not masked.
        masked_{image,video,audio}_positions (`(B, N)` bool) and {image,video,audio}_targets (unmasked copy of
        the input tensor): MRP / MFP / MAM. The targets are turned into raw token vectors with the functions
        the model embeds its inputs with; the loss is the MSE over the masked, present tokens.

        subset_modality_mask (`(B, V, 5)` or `(B, 5)` for one view): the modalities of each product's subset
        views (the collator draws them); `subset_loss` (our addition, see `ScaleConfig.subset_loss_weight`)
        pulls a product's `product_embeds` from those views and from all its modalities together.

        teacher_embeds (`(B, Dt)`): a frozen teacher's embedding of each product's caption (the text encoder
        the model starts from; `train/pretrain.py` computes them); `distillation_loss` holds the relations
        between the products' `product_embeds` (every view) to the teacher's, over products with a caption.

        S weights the terms `config.simcl_weighting` names (by default every term, as in Eq. 3): pair (i, j)
        (i < j) by S[i, j] and modality i's masked task by S[i, i]. With `simcl_weight_reading="logits"`
        (Eq. 3's letter) it scales their logits, which for the regression tasks are the predicted raw tokens;
        with `"loss"` it multiplies each sample's loss in the term.
        """
        arguments = locals()
        with self._recording(output_hidden_states, output_attentions) as recorder:
            encoding = self.scale._encode(**{name: arguments[name] for name in MODEL_INPUT_NAMES})
        weighting = self.config.simcl_weighting if self.config.use_simcl else "none"
        pair_scores = encoding.alignment if weighting in ("both", "contrastive") else None
        task_scores = encoding.alignment if weighting in ("both", "masked") else None
        reading = self.config.simcl_weight_reading

        def weight(name: str) -> dict[str, torch.Tensor | None]:
            index = MODALITIES.index(name)
            scores = None if task_scores is None else task_scores[:, index, index]
            return {
                "logit_weight": scores if reading == "logits" else None,
                "loss_weight": scores if reading == "loss" else None,
            }

        zero = encoding.fused.new_zeros((), dtype=torch.float32)
        terms = dict.fromkeys(("mlm_loss", "mem_loss", "mrp_loss", "mfp_loss", "mam_loss"), zero)
        mlm_logits = mem_logits = None
        if labels is not None and "text" in encoding.spans:
            terms["mlm_loss"], mlm_logits = self._token_loss(
                "text", encoding, self.mlm_head, labels, **weight("text")
            )
        if table_labels is not None and "table" in encoding.spans:
            terms["mem_loss"], mem_logits = self._token_loss(
                "table", encoding, self.mem_head, table_labels, **weight("table")
            )
        patch_size = self.config.patch_size
        if masked_image_positions is not None and image_targets is not None and "image" in encoding.spans:
            if pixel_values is not None:
                head, targets = self.image_pixel_head, image_patch_vectors(image_targets, patch_size)
            else:
                head, targets = self.image_feature_head, image_targets
            terms["mrp_loss"] = self._regression_loss(
                "image", encoding, head, targets, masked_image_positions, **weight("image")
            )
        if masked_video_positions is not None and video_targets is not None and "video" in encoding.spans:
            if video_pixel_values is not None:
                head, targets = self.video_pixel_head, video_frame_vectors(video_targets, patch_size)
            else:
                head, targets = self.video_feature_head, video_targets
            terms["mfp_loss"] = self._regression_loss(
                "video", encoding, head, targets, masked_video_positions, **weight("video")
            )
        if masked_audio_positions is not None and audio_targets is not None and "audio" in encoding.spans:
            group = self.config.audio_subsampling
            targets = audio_group_vectors(audio_targets, group)
            frame_valid = None
            if audio_mask is not None:
                frame_valid = audio_group_vectors(audio_mask[..., None].expand(audio_targets.shape), group)
            terms["mam_loss"] = self._regression_loss(
                "audio",
                encoding,
                self.audio_head,
                targets,
                masked_audio_positions,
                element_mask=frame_valid,
                **weight("audio"),
            )
        terms["contrastive_loss"] = simcl_contrastive_loss(
            encoding.modality_embeds,
            encoding.modality_mask,
            self.config.temperature,
            self.config.contrastive_denominator,
            pair_scores,
            self.config.contrastive_reduction,
            reading,
        )
        views = encoding.product_embeds[:, None]  # (B, 1 + subset views, hidden)
        terms["subset_loss"] = zero
        if subset_modality_mask is not None and self.config.subset_loss_weight > 0:
            subsets = (
                subset_modality_mask if subset_modality_mask.dim() == 3 else subset_modality_mask[:, None]
            )
            views = self.scale._product_views(encoding, subsets)[0]
            terms["subset_loss"] = self.config.subset_loss_weight * multiview_contrastive_loss(
                views, encoding.modality_mask.any(dim=-1), self.config.temperature
            )
        terms["distillation_loss"] = zero
        if teacher_embeds is not None and self.config.distillation_loss_weight > 0:
            terms["distillation_loss"] = self.config.distillation_loss_weight * relational_distillation_loss(
                views,
                teacher_embeds,
                encoding.modality_mask[:, MODALITIES.index("text")],
                self.config.distillation_temperature,
            )
        model_output = encoding.model_output()
        return ScaleForPreTrainingOutput(
            loss=sum(terms.values()),
            **terms,
            mlm_logits=mlm_logits,
            mem_logits=mem_logits,
            product_embeds=model_output.product_embeds,
            **{f"{name}_embeds": model_output[f"{name}_embeds"] for name in MODALITIES},
            alignment_scores=model_output.alignment_scores,
            modality_mask=model_output.modality_mask,
            **self._recorded_fields(recorder, per_modality=False),
        )


class ScaleForProductClassification(ScalePreTrainedModel):
    """SCALE with a linear classifier on the fused `product_embeds` (M5Product's category classification)."""

    def __init__(self, config: ScaleConfig):
        super().__init__(config)
        self.scale = ScaleModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        table_input_ids: torch.LongTensor | None = None,
        table_attention_mask: torch.Tensor | None = None,
        table_entity_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        image_boxes: torch.FloatTensor | None = None,
        image_mask: torch.Tensor | None = None,
        video_pixel_values: torch.FloatTensor | None = None,
        video_features: torch.FloatTensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_mask: torch.Tensor | None = None,
        modality_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> SequenceClassifierOutput:
        r"""
        labels (`(B,)`): class ids; the loss is their cross-entropy, averaged over the samples with a label (a
            negative id, such as the converted dataset's -1 for "no label", is ignored like transformers'
            -100; a batch without any label gives a loss of 0).
        """
        arguments = locals()
        with self._recording(output_hidden_states, output_attentions) as recorder:
            product_embeds = self.scale._encode(
                **{name: arguments[name] for name in MODEL_INPUT_NAMES}
            ).product_embeds
        logits = self.classifier(self.dropout(product_embeds))
        loss = None
        if labels is not None:
            check_class_labels(labels, self.config.num_labels, logits.shape[0])
            labelled = labels >= 0
            per_sample = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
            loss = torch.where(labelled, per_sample, 0.0).sum() / labelled.sum().clamp(min=1)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, **self._recorded_fields(recorder, per_modality=False)
        )


ScaleModel.register_for_auto_class("AutoModel")
ScaleForPreTraining.register_for_auto_class("AutoModelForPreTraining")
ScaleForProductClassification.register_for_auto_class("AutoModelForSequenceClassification")


def remote_code_auto_map() -> dict[str, str]:
    """`auto_map` entries of the config and of every model class, named as in a saved folder's flat files."""
    classes = (ScaleConfig, ScaleModel, ScaleForPreTraining, ScaleForProductClassification)
    return {cls._auto_class: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}" for cls in classes}


__all__ = [
    "MODEL_INPUT_NAMES",
    "ScaleForPreTraining",
    "ScaleForPreTrainingOutput",
    "ScaleForProductClassification",
    "ScaleModalitySetNorm",
    "ScaleAlignmentReference",
    "ScaleModel",
    "ScaleModelOutput",
    "ScalePreTrainedModel",
    "audio_group_mask",
    "audio_group_vectors",
    "image_patch_vectors",
    "modality_set_codes",
    "video_frame_vectors",
]
