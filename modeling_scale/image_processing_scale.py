"""Image processor of SCALE: resize to a square, rescale, normalise; PIL backend, so no torchvision needed."""

from typing import Any

import numpy as np
import PIL.Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

from .media_decoding_scale import load_image


class ScaleImageProcessor(PilBackend):
    r"""
    Turns product images into `pixel_values` (B, 3, H, W) for SCALE's patch encoder. Products are photographed
    at any aspect ratio and the item is usually centred, so the whole image is resized to `size` (no crop; the
    paper's 224 by default) and normalised with ImageNet statistics. Video frames go through the same steps
    (see [`ScaleVideoProcessor`]), so images and frames share one encoder input format.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def __init__(self, **kwargs: Unpack[ImagesKwargs]):
        super().__init__(**kwargs)

    def load(self, image: Any) -> PIL.Image.Image | np.ndarray:
        """Decode one image (path, bytes, PIL image, array) for this processor: encoded images are decoded
        at the smallest size >= `size` (JPEG DCT scaling, `Image.reduce` otherwise), not in full."""
        return load_image(image, min_size=(self.size.height, self.size.width))

    def _preprocess(self, images: list[np.ndarray], **kwargs) -> BatchFeature:
        """
        PilBackend's steps, fused for the common case (uint8 RGB images resized to a fixed size, no crop or
        pad): one PIL resize per image, then rescale and normalise the whole batch in one float32
        multiply-add instead of PilBackend's float64 round trips per image and per step. About 3x faster on
        224 px images; equal to PilBackend up to float32 rounding (tests/test_image_processing_scale.py).
        Anything else goes through PilBackend unchanged.
        """
        size = kwargs["size"]
        if (
            not kwargs["do_resize"]
            or not (size.height and size.width)
            or kwargs["do_center_crop"]
            or kwargs["do_pad"]
            or not all(
                image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] == 3 for image in images
            )
        ):
            return super()._preprocess(images, **kwargs)
        scale = np.full(3, kwargs["rescale_factor"] if kwargs["do_rescale"] else 1.0, dtype=np.float64)
        offset = np.zeros(3, dtype=np.float64)
        if kwargs["do_normalize"]:
            std = np.broadcast_to(np.asarray(kwargs["image_std"], dtype=np.float64), (3,))
            scale, offset = scale / std, -np.broadcast_to(kwargs["image_mean"], (3,)) / std
        pixels = np.empty((len(images), 3, size.height, size.width), dtype=np.float32)
        resample = kwargs["resample"] if kwargs["resample"] is not None else PIL.Image.BILINEAR
        for row, image in enumerate(images):
            if image.shape[1:] == (size.height, size.width):  # video frames decoded at this size
                pixels[row] = image  # what PIL's resize to the same size returns: a copy
                continue
            resized = PIL.Image.fromarray(np.moveaxis(image, 0, -1)).resize(
                (size.width, size.height), resample
            )
            pixels[row] = np.moveaxis(np.asarray(resized), -1, 0)
        pixels *= scale.astype(np.float32)[:, None, None]
        pixels += offset.astype(np.float32)[:, None, None]
        values = pixels if kwargs["return_tensors"] else list(pixels)
        return BatchFeature(data={"pixel_values": values}, tensor_type=kwargs["return_tensors"])


ScaleImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["ScaleImageProcessor"]
