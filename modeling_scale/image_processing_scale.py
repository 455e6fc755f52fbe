"""Image processor of SCALE: resize to a square, rescale, normalise; PIL backend, so no torchvision needed."""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack


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


ScaleImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["ScaleImageProcessor"]
