"""SCALE for transformers: public names, and their registration with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoProcessor,
)

# the real class: on transformers 5.17 without torchvision, `transformers.AutoImageProcessor` is a placeholder
from transformers.models.auto.image_processing_auto import AutoImageProcessor

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
