"""SCALE for transformers: public names, and their registration with the Auto classes."""

from transformers import AutoConfig

from .configuration_scale import MODALITIES, ScaleConfig

AutoConfig.register("scale", ScaleConfig)

__all__ = ["MODALITIES", "ScaleConfig"]
