"""Configuration of SCALE, the five-modality product model of M5Product (CVPR 2022)."""

from __future__ import annotations

from transformers import PreTrainedConfig

MODALITIES: tuple[str, ...] = ("text", "table", "image", "video", "audio")
"""Modality order used everywhere: `modality_mask[:, i]`, `alignment_scores[:, i, j]`, loss names."""

ALIGNMENT_MODES = ("feature", "learned", "bounded", "embedding", "relative")
CONTRASTIVE_DENOMINATORS = ("negatives", "all")
CONTRASTIVE_REDUCTIONS = ("mean", "sum")
SIMCL_WEIGHTINGS = ("both", "contrastive", "masked", "none")
"""Which terms S weighs (the paper's Table 6): contrastive pairs and masked tasks, one of them, or none."""
SIMCL_WEIGHT_READINGS = ("logits", "loss")
VIDEO_FRAME_ENCODERS = ("patches", "pooled")
TABLE_MASKINGS = ("entity", "token")
"""How the table's masked task masks (the paper's Table 7): whole entities (MEM) or single tokens (MLM)."""


class ScaleConfig(PreTrainedConfig):
    r"""
    Configuration of [`ScaleModel`]. Defaults follow the paper: hidden size 768, 6 transformer layers per
    modality encoder and 6 in the Joint Co-Transformer (JCT), captions of 36 tokens, tables of 64 tokens,
    36 image regions, 12 video frames (one per second), 15 % masking, temperature 0.07.

    Args:
        vocab_size: WordPiece vocabulary shared by the text and table tokenizers (each encoder has its own
            embedding table). 21128 is bert-base-chinese's vocabulary.
        hidden_size, num_attention_heads, intermediate_size, hidden_act, hidden_dropout_prob,
        attention_probs_dropout_prob, layer_norm_eps, initializer_range: BERT-style transformer settings,
            shared by every encoder and the JCT.
        num_encoder_layers: layers of each single-modality encoder.
        num_text_encoder_layers: layers of the caption encoder (default: `num_encoder_layers`). A BERT
            initialisation keeps what it knows only when all of its layers are kept (the sample preset uses
            all 6 of MiniLM-L6 and 2 layers for the other modalities).
        num_fusion_layers: layers of the Joint Co-Transformer over the concatenated tokens.
        max_text_length: caption tokens (36 in the paper).
        max_table_length: serialised table tokens (64 in the paper).
        image_size, patch_size, num_channels: raw-pixel path of the image encoder (Conv2d patches) and the
            video encoder (one token per frame, see `video_frame_encoder`).
        video_frame_encoder: how a video frame's pixels become its token. `"pooled"` (default): the
            frame average-pooled by `patch_size`, then a Linear (48 numbers at the sample preset).
            `"patches"` adds a patch path of the video encoder's own (Conv2d patches, a spatial position per
            patch, a Linear over the patch grid, starting at zero), so the token keeps where the product is in
            finer detail than the average. On the sample both read the direction the product moves equally
            well (linear probe of the pretrained video-only features: 99.2 % pooled, 99.1 % patches, see
            `train/video_motion_probe.py`), so the default keeps the stem 3.0 M parameters smaller at the
            paper's size.
        image_feature_dim, image_box_dim, max_image_regions: precomputed region path (Faster R-CNN
            features of 2048-d with a 5-d box, up to 36 regions in the paper).
        video_feature_dim, max_video_frames: precomputed per-frame path (S3D, 1024-d, up to 12 frames).
        audio_feature_dim, max_audio_frames: MFCC / log-mel frames fed to the audio encoder (80 bins,
            12 s at 16 kHz with hop 256 gives 750 frames).
        audio_subsampling: the audio stem embeds non-overlapping groups of this many frames (a Linear on the
            flattened group, i.e. a Conv1d with kernel = stride), so that 750 frames become 188 tokens.
        projection_dim: size of the per-modality contrastive features (`product_embeds` keep `hidden_size`).
        alignment: how SIMCL's modality alignment matrix S is obtained. The three bounded modes put scores
            through a softmax over the sample's present pairs and, on the diagonal, over its present
            modalities, times their number, so the weights are >= 0 and average 1: S can neither scale every
            term up nor switch every term off. `"relative"` (default; the abstract's "importance of each
            modality learned directly from the modality embeddings"): the score of a pair is how many standard
            deviations the sample's cosine between the two modality features stands above their cosines with
            the batch's other products (detached, so the loss never rewards the encoders for misaligning a
            pair to shrink its weight). A level every product's pair shares cancels, so the pairs that do not
            tell the product from the others lose weight (on a sample where half of the tables are another
            product's: 0.85 of weight against 1.10 for the listings' own); in eval mode, once the model's
            `ScaleAlignmentReference` is fitted, the cosines are read against each pair's spread across many
            products instead, so a product's S is its own. `"embedding"`: the cosines themselves, divided by
            `temperature` (at 1 the 0.05-0.17 cosines of 4 pretraining epochs left every weight within 5 % of
            1); they follow the shared level (unrelated tables 1.25, own 1.35-1.39 on that sample).
            `"bounded"`: a free 5x5 parameter through the same normalisation (still trained on the loss it
            weights, so it moves weight towards the lowest-loss terms). `"learned"` (the paper's text): a free
            5x5 parameter, S <- k * S * softmax(S) over the k present modalities, initialised at ones so every
            term starts with weight 1 (the paper's zero initialisation would multiply every logit by 0);
            nothing bounds it: it scales the logits of aligned pairs up without limit and switches unaligned
            ones off. `"feature"` (the authors' released code, per sample): the cosine similarities of the
            pre-JCT modality features, S <- S * softmax(S), rows L2-normalised; freshly initialised encoders
            give cross-modal cosines near 0, hence S near the identity and contrastive logits scaled by near
            0, so the contrastive loss cannot leave chance.
        temperature: InfoNCE temperature tau.
        relative_alignment_temperature: `alignment="relative"` only: divides the scores (standard deviations)
            before the softmaxes, so below 1 a pair that does not tell the product apart keeps less weight
            against one that does.
        contrastive_denominator: `"negatives"` is the paper's Eq. 2 (only the 2(N-1) cross-modal negatives in
            the denominator); `"all"` is the standard symmetric InfoNCE (as CLIP), whose softmax keeps the
            positive.
        use_simcl: weight the losses by S (Eq. 3); `False` gives plain unweighted contrastive + masked losses,
            the ablation of the paper (the same as `simcl_weighting="none"`).
        simcl_weighting: which terms S weighs, the four rows of the paper's Table 6: `"both"` (Eq. 3: the
            contrastive pairs by S[i, j], the masked tasks by S[i, i]), `"contrastive"`, `"masked"`, `"none"`.
        simcl_weight_reading: how S weighs a term. `"loss"` (default, Eq. 3's intent): it multiplies each
            sample's loss in the term, so the gradient a term sends to the encoders scales with its weight.
            `"logits"` (Eq. 3's letter): it scales the pair's contrastive logits (an inverse temperature) and
            the masked task's logits, which for the regression tasks (MRP, MFP, MAM) are the head's
            predictions, a gain the head learns to cancel.
        contrastive_reduction: how the modality pairs' contrastive losses combine: `"mean"` over the usable
            pairs, or `"sum"` as Eq. 3 writes it (with five modalities ten pair terms against five masked
            tasks, and no pair's weight depending on how many pairs the batch holds).
        mask_probability: masking rate of every pretext task (MLM, MEM, MRP, MFP, MAM).
        table_masking: what the table's masked task hides: `"entity"` (the paper's MEM: a whole key or value,
            so it must be recovered from the rest of the product, not from its own other word pieces) or
            `"token"` (single word pieces as in MLM, the paper's Table 7 ablation).
        subset_loss_weight: weight of the subset-consistency term of pretraining (0 switches it off): each
            product is fused again from `num_subset_views` random subsets of its modalities, and NT-Xent over
            the batch (`multiview_contrastive_loss`) pulls each product's views together and away from every
            view of the other products, so a query holding some modalities finds products by content, not by
            which modalities they have.
        subset_keep_probability: chance that each present modality stays in a subset view (at least one
            always stays).
        num_subset_views: subset views drawn per product besides the full one (each costs one more JCT pass).
        distillation_loss_weight: weight of the relational distillation term of pretraining (0 switches it
            off; it also needs `teacher_embeds`, which `train/pretrain.py` computes with the frozen text
            encoder the model starts from): each product's softmax over its similarities to the batch, from
            its full and subset `product_embeds`, is held to the teacher's, so pretraining on a small
            catalogue keeps what the text encoder knew about which products are alike.
        distillation_temperature: temperature of both softmaxes of that term.
        sparse_prediction: the MLM / MEM vocabulary heads read only the labelled tokens (as ModernBERT's
            `sparse_prediction`), so the (tokens x vocabulary) product is paid for ~15 % of them; the
            pretraining output's `mlm_logits` / `mem_logits` are then (N labelled, vocab_size). Off, they
            are (B, L, vocab_size), as in BERT. The loss is the same either way.
        pack_tokens: run every encoder and the JCT on each sample's kept tokens only (moved to the front of
            the row, the batch cut to its longest row; rows keeping nothing skipped), so padding and absent
            modalities cost (almost) nothing; `False` runs the padded batch. The outputs that are read
            (kept tokens, pooled features, losses) are the same either way; with `output_hidden_states` /
            `output_attentions` the padded path runs, so the recorded tensors keep their padded layout.
    """

    model_type = "scale"

    def __init__(
        self,
        vocab_size: int = 21128,
        hidden_size: int = 768,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        num_encoder_layers: int = 6,
        num_fusion_layers: int = 6,
        num_text_encoder_layers: int | None = None,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        max_text_length: int = 36,
        max_table_length: int = 64,
        image_size: int = 224,
        patch_size: int = 32,
        num_channels: int = 3,
        image_feature_dim: int = 2048,
        image_box_dim: int = 5,
        max_image_regions: int = 36,
        video_feature_dim: int = 1024,
        max_video_frames: int = 12,
        audio_feature_dim: int = 80,
        max_audio_frames: int = 750,
        audio_subsampling: int = 4,
        projection_dim: int = 256,
        alignment: str = "relative",
        temperature: float = 0.07,
        relative_alignment_temperature: float = 1.0,
        contrastive_denominator: str = "negatives",
        use_simcl: bool = True,
        simcl_weighting: str = "both",
        simcl_weight_reading: str = "loss",
        contrastive_reduction: str = "mean",
        mask_probability: float = 0.15,
        table_masking: str = "entity",
        subset_loss_weight: float = 1.0,
        subset_keep_probability: float = 0.5,
        num_subset_views: int = 2,
        distillation_loss_weight: float = 0.3,
        distillation_temperature: float = 0.05,
        sparse_prediction: bool = False,
        pack_tokens: bool = True,
        video_frame_encoder: str = "pooled",
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_encoder_layers = num_encoder_layers
        self.num_fusion_layers = num_fusion_layers
        self.num_text_encoder_layers = num_text_encoder_layers or num_encoder_layers
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.max_text_length = max_text_length
        self.max_table_length = max_table_length
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.image_feature_dim = image_feature_dim
        self.image_box_dim = image_box_dim
        self.max_image_regions = max_image_regions
        self.video_feature_dim = video_feature_dim
        self.max_video_frames = max_video_frames
        self.audio_feature_dim = audio_feature_dim
        self.max_audio_frames = max_audio_frames
        self.audio_subsampling = audio_subsampling
        self.projection_dim = projection_dim
        self.alignment = alignment
        self.temperature = temperature
        self.relative_alignment_temperature = relative_alignment_temperature
        self.contrastive_denominator = contrastive_denominator
        # `use_simcl=False` is Table 6's "none" row: either spelling gives the same, consistent pair of fields
        self.simcl_weighting = "none" if not use_simcl and simcl_weighting == "both" else simcl_weighting
        self.use_simcl = bool(use_simcl) and self.simcl_weighting != "none"
        self.simcl_weight_reading = simcl_weight_reading
        self.contrastive_reduction = contrastive_reduction
        self.mask_probability = mask_probability
        self.table_masking = table_masking
        self.subset_loss_weight = subset_loss_weight
        self.subset_keep_probability = subset_keep_probability
        self.num_subset_views = num_subset_views
        self.distillation_loss_weight = distillation_loss_weight
        self.distillation_temperature = distillation_temperature
        self.sparse_prediction = sparse_prediction
        self.pack_tokens = pack_tokens
        self.video_frame_encoder = video_frame_encoder
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self._check_consistency()

    def _get_generation_parameters(self) -> dict:
        """`temperature` is SIMCL's InfoNCE temperature, not a sampling setting: keep it out of the check that
        stops generation settings from being saved in a model config."""
        parameters = super()._get_generation_parameters()
        parameters.pop("temperature", None)
        return parameters

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def _check_consistency(self) -> None:
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            problems.append(
                f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        if self.alignment not in ALIGNMENT_MODES:
            problems.append(f"alignment must be one of {ALIGNMENT_MODES}, got {self.alignment!r}")
        if self.contrastive_denominator not in CONTRASTIVE_DENOMINATORS:
            problems.append(
                f"contrastive_denominator must be one of {CONTRASTIVE_DENOMINATORS}, "
                f"got {self.contrastive_denominator!r}"
            )
        for name, allowed in (
            ("simcl_weighting", SIMCL_WEIGHTINGS),
            ("simcl_weight_reading", SIMCL_WEIGHT_READINGS),
            ("contrastive_reduction", CONTRASTIVE_REDUCTIONS),
            ("video_frame_encoder", VIDEO_FRAME_ENCODERS),
            ("table_masking", TABLE_MASKINGS),
        ):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.use_simcl != (self.simcl_weighting != "none"):
            problems.append(f"use_simcl=False contradicts simcl_weighting={self.simcl_weighting!r}")
        if not 0.0 < self.mask_probability < 1.0:
            problems.append(f"mask_probability must lie in (0, 1), got {self.mask_probability}")
        if not 0.0 < self.subset_keep_probability <= 1.0:
            problems.append(f"subset_keep_probability must lie in (0, 1], got {self.subset_keep_probability}")
        if self.num_subset_views < 1:
            problems.append(f"num_subset_views must be >= 1, got {self.num_subset_views}")
        if self.subset_loss_weight < 0:
            problems.append(f"subset_loss_weight must be >= 0, got {self.subset_loss_weight}")
        if self.distillation_loss_weight < 0:
            problems.append(f"distillation_loss_weight must be >= 0, got {self.distillation_loss_weight}")
        if self.distillation_temperature <= 0:
            problems.append(f"distillation_temperature must be positive, got {self.distillation_temperature}")
        if self.temperature <= 0:
            problems.append(f"temperature must be positive, got {self.temperature}")
        if self.relative_alignment_temperature <= 0:
            problems.append(
                f"relative_alignment_temperature must be positive, got {self.relative_alignment_temperature}"
            )
        for name in (
            "num_encoder_layers",
            "num_fusion_layers",
            "num_text_encoder_layers",
            "max_text_length",
            "max_table_length",
            "max_image_regions",
            "max_video_frames",
            "max_audio_frames",
            "audio_subsampling",
            "projection_dim",
            "vocab_size",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("Invalid ScaleConfig: " + "; ".join(problems))


ScaleConfig.register_for_auto_class()

__all__ = ["MODALITIES", "ScaleConfig"]
