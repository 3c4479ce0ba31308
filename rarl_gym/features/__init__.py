"""Feature extraction: CNN backbones (images -> feature maps)."""

from rarl_gym.features.backbones import (
    BACKBONE_PREFIXES,
    DEFAULT_BACKBONE,
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE0_WEIGHTS,
    Backbone,
    available_backbones,
    build_backbone,
    convert_efficientnet_lite0_state_dict,
    load_efficientnet_lite0_classifier,
)

__all__ = [
    "BACKBONE_PREFIXES",
    "DEFAULT_BACKBONE",
    "HALF",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_WEIGHTS",
    "Backbone",
    "available_backbones",
    "build_backbone",
    "convert_efficientnet_lite0_state_dict",
    "load_efficientnet_lite0_classifier",
]
