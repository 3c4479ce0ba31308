"""The backbone at its best speed, for feature extraction and prediction alike.

* :func:`forward`: one batch of pixels -> float16 feature maps (the cache's precision), under
  ``torch.inference_mode``. On the CPU the backbone runs channels-last
  (:meth:`rarl_gym.features.backbones.Backbone.__call__`); on CUDA the input is sent
  ``non_blocking`` from pinned memory and the network runs channels-last under float16 autocast.
* :class:`PixelRows`: a ``torch.utils.data.Dataset`` that decodes and resizes images to uint8
  pixels, for a ``DataLoader`` whose workers overlap decoding and resizing with the forward
  (:func:`pixel_loader`). A worker never raises: a failure travels back as a value and the
  caller decides (extraction re-raises it, ``predict`` reports the file and goes on).
* :func:`open_image` / :func:`as_images`: a user's inputs (paths, PIL images, tensors) as RGB
  PIL images, with a :class:`~rarl_gym.errors.CorruptFileError` that names a bad file.

Measured choices (2 CPU cores, EfficientNet-Lite0 at 320 px; BENCHMARKS.md, "Inference speed"):
channels-last is 1.6-1.8x faster than NCHW on the CPU; the batch size matters less once
channels-last; one loader worker keeps the forward fed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rarl_gym.errors import ConfigError, CorruptFileError
from rarl_gym.features.backbones import Backbone

#: What a loader worker returns for an item it could not make: the exception, to raise or report.
Failure = BaseException

_T = TypeVar("_T")


def open_image(path: str | Path) -> Image.Image:
    """The RGB image at ``path``, fully decoded; a missing, truncated or non-image file raises
    :class:`CorruptFileError` naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError as err:
        raise CorruptFileError(f"no image at {path}", "check the path") from err
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptFileError(
            f"{path} is not a readable image ({type(err).__name__}: {err})", "skip or replace the file"
        ) from err


def as_images(
    images: str | Path | Image.Image | np.ndarray | torch.Tensor | Iterable[str | Path | Image.Image],
) -> list[str | Path | Image.Image]:
    """A user's inputs as a list whose items are paths (str / Path) or RGB PIL images.

    Accepts one or a sequence of paths or PIL images, or a tensor batch ``[B, 3, H, W]`` (or one
    image ``[3, H, W]``), uint8 or float in ``[0, 1]``, RGB. Tensors become PIL images, so that they
    go through the run's own preprocessing (resize, normalisation) like files do.
    """
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        x = images.detach().cpu()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(
                f"an image tensor must be [B, 3, H, W] or [3, H, W], got {tuple(images.shape)}",
                "pass RGB images, channels first",
            )
        if x.dtype != torch.uint8:
            x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
        return [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).numpy()]
    items = list(images)
    for im in items:
        if not isinstance(im, (str, Path, Image.Image)):
            raise ConfigError(
                f"cannot predict on a {type(im).__name__}", "pass image paths, PIL images or an image tensor [B, 3, H, W]"
            )
    return items


class PixelRows(torch.utils.data.Dataset):
    """Item ``i``: ``(i, pixels uint8 [3, size, size], (width, height))`` of ``load(i)``, or
    ``(i, exception, None)`` when it fails (never raised in a worker: pickling or re-raising a
    worker's exception would lose its type and message)."""

    def __init__(self, load: Callable[[int], Image.Image], count: int, size: int):
        self.load, self.count, self.size = load, count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, tuple[int, int]] | tuple[int, Failure, None]:
        try:
            image = self.load(i)
            return i, Backbone.pixels([image], self.size)[0], image.size
        except BaseException as err:  # handed to the caller, who raises or reports it
            return i, err, None


def _collate(items: list[_T]) -> list[_T]:
    return items  # batches stay lists: a failed item has no pixels to stack


def default_workers() -> int:
    """Loader workers: one per core beyond the first two (the forward uses those), at least one,
    at most four; ``RARL_LOADER_WORKERS`` overrides (0 = decode in the main process)."""
    env = os.environ.get("RARL_LOADER_WORKERS")
    if env is not None:
        return max(0, int(env))
    return min(4, max(1, (os.cpu_count() or 1) - 2))


def pixel_loader(
    rows: PixelRows, batch_size: int, *, workers: int | None = None, device: torch.device | str = "cpu"
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``rows`` in order, ``batch_size`` items a batch (lists, see :class:`PixelRows`)."""
    workers = default_workers() if workers is None else workers
    return torch.utils.data.DataLoader(
        rows,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        multiprocessing_context="fork" if workers and "fork" in torch.multiprocessing.get_all_start_methods() else None,
    )


def stack_pixels(
    items: Sequence[tuple[int, torch.Tensor, tuple[int, int]]], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The uint8 pixels of a batch's good items as one ``[B, 3, N, N]`` tensor, pinned for a GPU."""
    x = torch.stack([p for _, p, _ in items])
    if torch.device(device).type == "cuda":
        x = x.pin_memory()
    return x


@torch.inference_mode()
def forward(backbone: Backbone, pixels: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Feature maps ``[B, C, H, W]`` float16 on the CPU of uint8 ``pixels [B, 3, N, N]``.

    The pixels are normalised on ``device`` (default: the backbone's). On the CPU the network
    runs channels-last in float32; on CUDA channels-last under float16 autocast (the output is
    stored in float16 anyway).
    """
    device = torch.device(device) if device is not None else backbone.device
    x = backbone.normalise(pixels.to(device, non_blocking=True))
    if device.type == "cuda":
        if not getattr(backbone, "_cuda_ready", False):
            backbone.module.to(memory_format=torch.channels_last)
            backbone._cuda_ready = True
        with torch.autocast("cuda", dtype=torch.float16):
            out = backbone(x.contiguous(memory_format=torch.channels_last))
    else:
        out = backbone(x)
    return out.to("cpu", torch.float16).contiguous()


def features_of_images(
    backbone: Backbone, images: Sequence[Image.Image], size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """``forward`` of PIL images, in the main process: ``[B, C, H, W]`` float16."""
    return forward(backbone, Backbone.pixels(list(images), size), device)


__all__ = [
    "PixelRows",
    "as_images",
    "default_workers",
    "features_of_images",
    "forward",
    "open_image",
    "pixel_loader",
    "stack_pixels",
]
