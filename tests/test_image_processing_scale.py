"""ScaleImageProcessor: resize to the square size, rescale to [0, 1], normalise with ImageNet statistics."""

import numpy as np
import torch

from modeling_scale import ScaleImageProcessor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def test_pixels_are_normalised_with_imagenet_statistics():
    colour = np.array([200, 100, 30], dtype=np.uint8)
    image = np.broadcast_to(colour, (40, 60, 3)).copy()  # one flat colour: resizing keeps it exactly
    pixels = ScaleImageProcessor(size={"height": 32, "width": 32})(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    expected = (torch.tensor(colour / 255.0) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixels[0].mean(dim=(1, 2)), expected.float(), atol=1e-3, rtol=0)
    torch.testing.assert_close(pixels[0].amax(dim=(1, 2)), pixels[0].amin(dim=(1, 2)), atol=1e-3, rtol=0)
