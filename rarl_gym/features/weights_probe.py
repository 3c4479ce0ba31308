"""Getting pretrained weights without a long hang, and probing a network's map.

torchvision and timm weights come from the torch hub cache / Hugging Face cache, or are
downloaded. Before a download the host is probed (a TCP connection within a few seconds, skipped
behind a proxy) and every socket operation of the download is bounded, so a machine without
network gets a :class:`~rarl_gym.errors.ConfigError` that says what failed and how to fix it.
:func:`probe_shape` finds the channels and stride of a network's feature map by one dummy forward.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from rarl_gym.errors import ConfigError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# Seconds allowed for the reachability probe and for each socket operation of a download.
PROBE_TIMEOUT_S = 5.0
DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation of a download (urllib uses the default timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def uses_proxy() -> bool:
    """Whether a proxy is set in the environment (a direct TCP probe then says nothing)."""
    return any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"))


def reachable(url: str) -> tuple[bool, str]:
    """Whether ``url``'s host accepts a TCP connection within a few seconds (skipped behind a proxy)."""
    if uses_proxy():
        return True, ""
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        return False, f"{parsed.hostname} is unreachable ({e})"
    return True, ""


def offline_fix() -> str:
    """The fix every missing-weights error ends with: the backbone whose weights ship offline."""
    return "or use backbone='efficientnet_lite0', whose ImageNet weights ship offline"


def torchvision_state_dict(weights: WeightsEnum, arch: str) -> dict[str, torch.Tensor]:
    """Weights from the torch hub cache, else downloaded with bounded waits, else ConfigError."""
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    fix = (
        f"on a machine with internet, download {weights.url} and put it at {path} "
        f"(torch.hub.get_dir()/checkpoints/{filename}); {offline_fix()}"
    )
    if not os.path.exists(path):
        ok, why = reachable(weights.url)
        if not ok:
            raise ConfigError(f"cannot download the ImageNet weights of torchvision {arch}: {why}", fix)
    try:
        with socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
            return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network, hash and unpickling errors all mean "no weights"
        what = "read" if os.path.exists(path) else "download"
        extra = f" (delete {path} if it is a partial or corrupt download)" if os.path.exists(path) else ""
        raise ConfigError(f"cannot {what} the ImageNet weights of torchvision {arch} ({weights.url}): {e}{extra}", fix) from e


def timm_fix(model_name: str) -> str:
    """How to get a timm model's weights onto a machine without network."""
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except Exception:  # a cache lookup failure just means "not cached"
        cache = "~/.cache/huggingface/hub"
    return (
        f"on a machine with internet run timm.create_model({model_name!r}, pretrained=True) and copy the "
        f"Hugging Face cache ({cache}) and torch hub checkpoints ({torch.hub.get_dir()}/checkpoints) here; "
        f"{offline_fix()}"
    )


def timm_cached_file(cfg: dict) -> str | None:
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


def timm_check_reachable(model_name: str, cfg: dict) -> None:
    """Raise a :class:`ConfigError` unless a host that serves the model's weights answers."""
    urls = []
    if cfg.get("hf_hub_id"):
        urls.append("https://huggingface.co/")
    if cfg.get("url"):
        urls.append(cfg["url"])
    if not urls:
        raise ConfigError(f"timm model {model_name!r} has no pretrained weights", "pass pretrained=False")
    reasons = []
    for url in urls:
        ok, why = reachable(url)
        if ok:
            return
        reasons.append(why)
    raise ConfigError(
        f"cannot download the pretrained weights of timm model {model_name!r}: {'; '.join(reasons)}", timm_fix(model_name)
    )


def probe_shape(module: nn.Module, name: str, size: int = 224) -> tuple[int, int]:
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
    "DOWNLOAD_SOCKET_TIMEOUT_S",
    "PROBE_TIMEOUT_S",
    "offline_fix",
    "probe_shape",
    "reachable",
    "socket_timeout",
    "timm_cached_file",
    "timm_check_reachable",
    "timm_fix",
    "torchvision_state_dict",
    "uses_proxy",
]
