"""SCALE for transformers: public names, and their registration with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoProcessor,
)

from .collator_scale import DataCollatorForScalePretraining
from .configuration_scale import MODALITIES, ScaleConfig
from .feature_extraction_scale import ScaleFeatureExtractor
from .image_processing_scale import ScaleImageProcessor
from .modeling_scale import ScaleForPreTraining, ScaleForProductClassification, ScaleModel
from .processing_scale import ScaleProcessor

AutoConfig.register("scale", ScaleConfig)
AutoModel.register(ScaleConfig, ScaleModel)
AutoModelForPreTraining.register(ScaleConfig, ScaleForPreTraining)
AutoModelForSequenceClassification.register(ScaleConfig, ScaleForProductClassification)
AutoProcessor.register(ScaleConfig, ScaleProcessor)
# the processor's parts too: otherwise AutoProcessor.from_pretrained(saved folder) asks for trust_remote_code
AutoImageProcessor.register(ScaleConfig, slow_image_processor_class=ScaleImageProcessor)
AutoFeatureExtractor.register(ScaleConfig, ScaleFeatureExtractor)

__all__ = [
    "MODALITIES",
    "DataCollatorForScalePretraining",
    "ScaleConfig",
    "ScaleForPreTraining",
    "ScaleForProductClassification",
    "ScaleModel",
    "ScaleProcessor",
]
