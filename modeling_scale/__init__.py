"""SCALE for transformers: public names, and their registration with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from .configuration_scale import MODALITIES, ScaleConfig
from .modeling_scale import ScaleForPreTraining, ScaleForProductClassification, ScaleModel

AutoConfig.register("scale", ScaleConfig)
AutoModel.register(ScaleConfig, ScaleModel)
AutoModelForPreTraining.register(ScaleConfig, ScaleForPreTraining)
AutoModelForSequenceClassification.register(ScaleConfig, ScaleForProductClassification)

__all__ = [
    "MODALITIES",
    "ScaleConfig",
    "ScaleForPreTraining",
    "ScaleForProductClassification",
    "ScaleModel",
]
