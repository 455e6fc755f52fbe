"""ScaleVideoProcessor: frames sampled from a real MP4, processed exactly like images, padded with a mask."""

import numpy as np
import pytest
import torch
from scale_media import make_media

from modeling_scale.image_processing_scale import ScaleImageProcessor
from modeling_scale.video_processing_scale import ScaleVideoProcessor


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("video_media"))


@pytest.fixture
def video_processor():
    return ScaleVideoProcessor(ScaleImageProcessor(size={"height": 32, "width": 32}), fps=1.0, max_frames=4)


def test_frames_are_processed_like_images(media, video_processor):
    frames = video_processor.load(media["mp4"])
    out = video_processor([frames], return_tensors="pt")
    assert out["video_pixel_values"].shape == (1, 3, 3, 32, 32)
    expected = video_processor.image_processor(list(frames), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(out["video_pixel_values"][0], expected)
    # red, green, blue seconds: the dominant normalised channel follows the colour
    assert out["video_pixel_values"][0, :, :, 16, 16].argmax(dim=1).tolist() == [0, 1, 2]


def test_padding_and_mask(video_processor):
    short = np.zeros((1, 10, 12, 3), np.uint8)
    long = np.full((3, 20, 20, 3), 255, np.uint8)
    out = video_processor([short, long], return_tensors="pt")
    assert out["video_pixel_values"].shape == (2, 3, 3, 32, 32)
    assert out["video_mask"].tolist() == [[1, 0, 0], [1, 1, 1]]
    assert out["video_pixel_values"][0, 1:].abs().sum() == 0
    padded = video_processor([short], padding="max_length", return_tensors="np")
    assert padded["video_pixel_values"].shape == (1, 4, 3, 32, 32)
    assert padded["video_mask"].tolist() == [[1, 0, 0, 0]]


def test_max_frames_limits_sampling(media, video_processor):
    video_processor.max_frames = 2
    assert video_processor.load(media["mp4"]).shape[0] == 2


def test_invalid_settings():
    with pytest.raises(ValueError, match="fps"):
        ScaleVideoProcessor(ScaleImageProcessor(), fps=0)
