"""SCALE for transformers: public names, and their registration with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoProcessor,
)

from .collator_scale import DataCollatorForScalePretraining
from .configuration_scale import MODALITIES, ScaleConfig
from .modeling_scale import ScaleForPreTraining, ScaleForProductClassification, ScaleModel
from .processing_scale import ScaleProcessor

AutoConfig.register("scale", ScaleConfig)
AutoModel.register(ScaleConfig, ScaleModel)
AutoModelForPreTraining.register(ScaleConfig, ScaleForPreTraining)
AutoModelForSequenceClassification.register(ScaleConfig, ScaleForProductClassification)
AutoProcessor.register(ScaleConfig, ScaleProcessor)

__all__ = [
    "MODALITIES",
    "DataCollatorForScalePretraining",
    "ScaleConfig",
    "ScaleForPreTraining",
    "ScaleForProductClassification",
    "ScaleModel",
    "ScaleProcessor",
]
