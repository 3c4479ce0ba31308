"""Glimpses: anchor boxes around a centre, their bilinear crop from a feature map, and fusion.

Coordinates. Centres and boxes live in *image coordinates*: ``[-1, 1]`` on both axes, ``(-1, -1)``
the top-left corner of the image and ``(1, 1)`` the bottom-right one, whatever the image's size in
pixels. Boxes are ``(x1, y1, x2, y2)``. Because the backbone sees the image resized to a square,
a box in image coordinates maps onto the feature map by a plain affine map (:func:`crop`) and onto
the original picture by :func:`boxes_to_pixels`.

Every function here is batched: no Python loop over images or boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import roi_align

# The paper's anchors for an N = 512 input: areas 80^2, 160^2, 320^2 pixels, i.e. square sides of
# 80/512, 160/512 and 320/512 of the image side; aspect ratios (w:h) 2:1, 1:1, 1:2.
DEFAULT_SCALES: tuple[float, ...] = (80 / 512, 160 / 512, 320 / 512)
DEFAULT_RATIOS: tuple[float, ...] = (2.0, 1.0, 0.5)

WHOLE_IMAGE = (-1.0, -1.0, 1.0, 1.0)

#: A fixed set of windows: the image middle, then the centres of the four quadrants (cycling).
FIXED_GRID: tuple[tuple[float, float], ...] = ((0.0, 0.0), (-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5))
#: Where the glimpse centres come from in an evaluation: the agent's policy, uniform random, the
#: image middle, or :data:`FIXED_GRID` (step t: ``FIXED_GRID[t % 5]``).
CENTER_POLICIES: tuple[str, ...] = ("learned", "random", "center", "grid")


def anchor_offsets(
    scales: Sequence[float] = DEFAULT_SCALES,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Half-extents of the K = len(scales) * len(ratios) anchors, scale-major.

    A scale ``s`` is the side of the square of the same area, as a fraction of the image side;
    a ratio ``r`` is width / height. The anchor is ``s * sqrt(r)`` wide and ``s / sqrt(r)`` high
    (fractions of the image), i.e. half-extents ``(s sqrt(r), s / sqrt(r))`` in ``[-1, 1]`` units.

    Returns:
        offsets: ``[K, 2]`` half-width and half-height in image coordinates.
    """
    s = torch.as_tensor(scales, dtype=dtype, device=device)
    r = torch.as_tensor(ratios, dtype=dtype, device=device).sqrt()
    half_w = (s[:, None] * r[None, :]).reshape(-1)
    half_h = (s[:, None] / r[None, :]).reshape(-1)
    return torch.stack([half_w, half_h], dim=-1)


def anchor_boxes(
    centers: torch.Tensor,
    scales: Sequence[float] = DEFAULT_SCALES,
    ratios: Sequence[float] = DEFAULT_RATIOS,
) -> torch.Tensor:
    """The K anchor boxes around each centre, clipped to the image.

    Args:
        centers: ``[B, 2]`` glimpse centres ``(x, y)`` in ``[-1, 1]`` image coordinates.
        scales: square-equivalent sides as fractions of the image side.
        ratios: aspect ratios width / height.

    Returns:
        boxes: ``[B, K, 4]`` ``(x1, y1, x2, y2)`` in image coordinates, clipped to ``[-1, 1]``.
    """
    offsets = anchor_offsets(scales, ratios, device=centers.device, dtype=centers.dtype)  # [K,2]
    c = centers[:, None, :]  # [B,1,2]
    boxes = torch.cat([c - offsets, c + offsets], dim=-1)  # [B,K,4]
    return boxes.clamp(-1.0, 1.0)


def whole_image_boxes(
    batch: int, k: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[B, K, 4]`` boxes that all cover the whole image (the observation of step 0)."""
    return torch.tensor(WHOLE_IMAGE, device=device, dtype=dtype).expand(batch, k, 4).clone()


def crop_weights(
    boxes: torch.Tensor, height: int, width: int, size: int, sampling_ratio: int = -1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The separable bilinear weights of ``roi_align(..., aligned=True)`` for boxes on an ``height x width`` map.

    RoI-align averages ``n_y x n_x`` bilinear samples per output bin; each sample's weights are a
    product of a row weight and a column weight, so the weight of map cell ``(y, x)`` in output
    bin ``(i, j)`` is ``wy[i, y] * wx[j, x]``. This reproduces torchvision's CPU/CUDA kernels (the
    adaptive grid ``n = ceil(roi / size)``, the clamping at the map's last row, samples beyond
    half a cell outside the map counting as zero).

    Args:
        boxes: ``[B, K, 4]`` in image coordinates.
        sampling_ratio: samples per bin and axis; ``-1`` adapts it to the box (``ceil(roi / size)``).

    Returns:
        ``wy [B, K, s, H]`` and ``wx [B, K, s, W]``.
    """
    b, k, _ = boxes.shape
    flat = boxes.reshape(b * k, 4)
    if height == width:  # both axes in one pass
        w = _axis_weights(flat[:, [1, 0]].T.reshape(-1), flat[:, [3, 2]].T.reshape(-1), width, size, sampling_ratio)
        return w[: b * k].reshape(b, k, size, height), w[b * k :].reshape(b, k, size, width)
    wy = _axis_weights(flat[:, 1], flat[:, 3], height, size, sampling_ratio).reshape(b, k, size, height)
    wx = _axis_weights(flat[:, 0], flat[:, 2], width, size, sampling_ratio).reshape(b, k, size, width)
    return wy, wx


def _axis_weights(lo: torch.Tensor, hi: torch.Tensor, cells: int, size: int, sampling_ratio: int) -> torch.Tensor:
    """``[N, size, cells]`` RoI-align weights along one axis for the intervals ``[lo, hi]`` (image coordinates)."""
    start = (lo + 1.0) * (cells / 2.0) - 0.5  # aligned=True: pixel centres at half-integers
    length = (hi - lo) * (cells / 2.0)
    bin_len = length / size
    if sampling_ratio > 0:
        n = torch.full_like(length, float(sampling_ratio))
    else:
        n = torch.ceil(length / size)
    n_max = max(int(n.max().item()) if n.numel() else 1, 1)
    i = torch.arange(size, device=lo.device, dtype=lo.dtype)[None, :, None]
    j = torch.arange(n_max, device=lo.device, dtype=lo.dtype)[None, None, :]
    pos = start[:, None, None] + i * bin_len[:, None, None] + (j + 0.5) * (bin_len / n.clamp(min=1))[:, None, None]  # [N,s,n]
    valid = (j < n[:, None, None]) & (pos >= -1.0) & (pos <= cells)
    pos = pos.clamp(min=0.0)
    low = pos.floor().clamp(max=cells - 1)
    pos = torch.where(low >= cells - 1, low, pos)
    frac = pos - low
    high = (low + 1).clamp(max=cells - 1)
    scale = valid.to(lo.dtype) / n.clamp(min=1)[:, None, None]
    w = torch.zeros(lo.shape[0], size, cells, device=lo.device, dtype=lo.dtype)
    w.scatter_add_(2, low.long(), (1.0 - frac) * scale)
    w.scatter_add_(2, high.long(), frac * scale)
    return w


def crop(
    feature_maps: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    *,
    sampling_ratio: int = -1,
    method: str = "auto",
    out: torch.Tensor | None = None,
    region_means: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bilinear RoI crop (``torchvision.ops.roi_align``, ``aligned=True``) of K boxes per feature map.

    Differentiable with respect to ``feature_maps`` (but for ``method="native"``), so a
    fine-tuned backbone learns through it.

    Args:
        feature_maps: ``[B, C, H, W]``; the map covers the whole image. A channels-last tensor
            (``torch.channels_last``) saves the ``"native"`` and ``"matmul"`` paths a transpose;
            the ``"native"`` kernel also reads float16 maps (the cache's precision) directly.
        boxes: ``[B, K, 4]`` in image coordinates (see module docstring).
        size: output side ``s``: each region is resampled to ``s x s``.
        sampling_ratio: bilinear samples per output bin and axis; ``-1`` adapts it to the box
            size, so that ``s = 1`` is the mean of the region (RoI average pooling).
        method: the same numbers by three routes:

            * ``"roi_align"``: torchvision's kernel on the C channels;
            * ``"matmul"``: the separable RoI-align weights of every map cell
              (:func:`crop_weights`) applied to the C channels as one batched matrix product;
            * ``"native"``: the same weights applied sparsely by the compiled CPU kernel of
              :mod:`rarl_gym.native` (CPU, float32 or float16 maps, no gradient);
            * ``"auto"``: ``"native"`` where it applies and is available, else ``"matmul"`` when
              C > H*W (1280 channels on a 10 x 10 map), else ``"roi_align"``.
        out: optional ``[B, K, C, s, s]`` float tensor to write the result into.
        region_means: optional ``[B, K, C]`` tensor, filled with each region's mean over its
            ``s x s`` bins (what a linear :class:`rarl_gym.scorer.RegionScorer` reads); the
            ``"native"`` kernel computes it in the same pass.

    Returns:
        glimpses: ``[B, K, C, s, s]`` (``out`` when given).
    """
    if method == "auto":
        method = _auto_method(feature_maps)
    if method == "native":
        result, means_filled = _crop_native(feature_maps, boxes, size, sampling_ratio, out, region_means)
    elif method in _TORCH_CROPS:
        if feature_maps.device.type == "cpu" and feature_maps.dtype == torch.float16:
            feature_maps = feature_maps.float()  # torch's CPU kernels want float32
        result, means_filled = _TORCH_CROPS[method](feature_maps, boxes.to(feature_maps.dtype), size, sampling_ratio), False
    else:
        raise ValueError(f"method must be 'auto', 'native', 'roi_align' or 'matmul', got {method!r}")
    if region_means is not None and not means_filled:
        region_means.copy_(result.mean(dim=(-2, -1)))
    if out is None:
        return result.contiguous()
    if result is not out:
        out.copy_(result)
    return out


def _auto_method(feature_maps: torch.Tensor) -> str:
    """``crop(method="auto")``: ``"native"`` where it applies and is available, else ``"matmul"``
    when C > H*W, else ``"roi_align"``."""
    _, c, h, w = feature_maps.shape
    native_ok = (
        feature_maps.device.type == "cpu"
        and feature_maps.dtype in (torch.float32, torch.float16)
        and not (torch.is_grad_enabled() and feature_maps.requires_grad)
    )
    if native_ok:
        from rarl_gym import native

        native_ok = native.available()
    return "native" if native_ok else "matmul" if c > h * w else "roi_align"


def _crop_roi_align(feature_maps: torch.Tensor, boxes: torch.Tensor, size: int, sampling_ratio: int) -> torch.Tensor:
    """torchvision's ``roi_align`` kernel on the C channels: ``[B, C, H, W]``, ``[B, K, 4]`` -> ``[B, K, C, s, s]``."""
    b, c, h, w = feature_maps.shape
    k = boxes.shape[1]
    scale = boxes.new_tensor([w, h, w, h]) / 2.0
    px = ((boxes + 1.0) * scale).reshape(b * k, 4)  # feature-map pixels (pixel edges at integers)
    index = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)
    rois = torch.cat([index[:, None], px], dim=1)  # [B*K, 5]
    return roi_align(feature_maps, rois, (size, size), 1.0, sampling_ratio, aligned=True).reshape(b, k, c, size, size)


def _crop_matmul(feature_maps: torch.Tensor, boxes: torch.Tensor, size: int, sampling_ratio: int) -> torch.Tensor:
    """The separable RoI-align weights (:func:`crop_weights`) applied to the C channels as one
    batched matrix product: ``[B, C, H, W]``, ``[B, K, 4]`` -> ``[B, K, C, s, s]``."""
    b, c, h, w = feature_maps.shape
    k = boxes.shape[1]
    wy, wx = crop_weights(boxes, h, w, size, sampling_ratio)
    weights = (wy[:, :, :, None, :, None] * wx[:, :, None, :, None, :]).reshape(b, k * size * size, h * w)
    cells = feature_maps.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view for channels-last maps
    return torch.bmm(weights, cells).reshape(b, k, size, size, c).permute(0, 1, 4, 2, 3)  # [B,K,C,s,s]


#: The differentiable backends of :func:`crop`: method -> (maps, boxes in the maps' dtype, size, sampling_ratio) -> glimpses.
_TORCH_CROPS = {"roi_align": _crop_roi_align, "matmul": _crop_matmul}


def _crop_native(
    feature_maps: torch.Tensor,
    boxes: torch.Tensor,
    size: int,
    sampling_ratio: int,
    out: torch.Tensor | None,
    region_means: torch.Tensor | None,
) -> tuple[torch.Tensor, bool]:
    """The compiled CPU kernel (:mod:`rarl_gym.native`, float32 or float16 maps, no gradient).

    Writes straight into ``out`` and ``region_means`` when they are contiguous float32 tensors.
    Returns the glimpses ``[B, K, C, s, s]`` and whether ``region_means`` was filled.
    """
    from rarl_gym import native

    b, c = feature_maps.shape[:2]
    k = boxes.shape[1]
    target = (
        out if out is not None and out.is_contiguous() and out.dtype == torch.float32 else torch.empty(b, k, c, size, size)
    )
    means = (
        region_means
        if region_means is not None and region_means.is_contiguous() and region_means.dtype == torch.float32
        else None
    )
    native.crop_nhwc(
        feature_maps.detach().permute(0, 2, 3, 1).contiguous(),  # free for channels-last maps
        torch.arange(b).repeat_interleave(k),
        boxes.to(torch.float32).detach().reshape(b * k, 4).contiguous(),
        target.view(b * k, c, size, size),
        None if means is None else means.view(b * k, c),
        sampling_ratio,
    )
    return target, means is not None


def fuse(scores: torch.Tensor, dims: int | Sequence[int] = 1) -> torch.Tensor:
    """Category-wise max-pooling of region scores.

    Args:
        scores: ``[B, ..., L]`` scores of several regions (and steps) per image.
        dims: the region / step dimensions to pool over (all but the batch and the class
            dimension for ``[B, T, K, L]``: ``dims=(1, 2)``).

    Returns:
        fused: ``[B, L]`` the maximum over the pooled dimensions, per class.
    """
    if isinstance(dims, int):
        dims = (dims,)
    return torch.amax(scores, dim=tuple(dims))


def boxes_to_pixels(boxes: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor) -> torch.Tensor:
    """Image-coordinate boxes ``[..., 4]`` to pixel boxes of a ``width x height`` picture; per-image
    sizes ``width``, ``height`` ``[B]`` map boxes ``[B, ..., 4]`` image by image."""
    if isinstance(width, torch.Tensor) or isinstance(height, torch.Tensor):
        w, h = torch.as_tensor(width, dtype=boxes.dtype), torch.as_tensor(height, dtype=boxes.dtype)
        scale = torch.stack([w, h, w, h], -1).reshape(-1, *([1] * (boxes.dim() - 2)), 4) / 2.0  # [B, 1.., 4]
    else:
        scale = boxes.new_tensor([width, height, width, height]) / 2.0
    return (boxes + 1.0) * scale


def view_to_image(boxes: torch.Tensor, views: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
    """Map boxes given in a view's coordinates to image coordinates.

    A *view* is a sub-window of the image (the crop of a data augmentation or of ten-view
    testing), optionally mirrored. Cropping the feature map at the mapped boxes is the same as
    cropping the view's feature map, without resampling the whole map.

    Args:
        boxes: ``[B, K, 4]`` boxes in view coordinates (``[-1, 1]`` over the view).
        views: ``[B, 4]`` the view windows in image coordinates.
        flips: ``[B]`` bool, views that are mirrored left-right (default: none).

    Returns:
        ``[B, K, 4]`` boxes in image coordinates.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    if flips is not None:
        f = flips[:, None]
        x1, x2 = torch.where(f, -x2, x1), torch.where(f, -x1, x2)
    center = (views[:, None, :2] + views[:, None, 2:]) / 2  # [B,1,2]
    half = (views[:, None, 2:] - views[:, None, :2]) / 2
    cx, cy, hx, hy = center[..., 0], center[..., 1], half[..., 0], half[..., 1]
    return torch.stack([cx + x1 * hx, cy + y1 * hy, cx + x2 * hx, cy + y2 * hy], dim=-1)


def random_views(
    batch: int, crop: float, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training augmentation: a random square crop of side ``crop`` (fraction of the image) and a
    random left-right flip per image, as the paper's random (N - 64)-crop and flip.

    Returns:
        views ``[B, 4]`` in image coordinates and flips ``[B]`` bool.
    """
    side = 2.0 * crop
    lo = torch.rand(batch, 2, generator=generator, device=device) * (2.0 - side) - 1.0
    views = torch.cat([lo, lo + side], dim=1)
    flips = torch.rand(batch, generator=generator, device=device) < 0.5
    return views, flips


def ten_views(crop: float, *, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ten test views: 4 corner crops and the centre crop of side ``crop``, and their mirrors.

    Returns:
        views ``[10, 4]`` in image coordinates and flips ``[10]`` bool.
    """
    side = 2.0 * crop
    lo = torch.tensor(
        [[-1.0, -1.0], [1.0 - side, -1.0], [-1.0, 1.0 - side], [1.0 - side, 1.0 - side], [-side / 2, -side / 2]],
        device=device,
    )
    five = torch.cat([lo, lo + side], dim=1)
    views = torch.cat([five, five], dim=0)
    flips = torch.arange(10, device=device) >= 5
    return views, flips


__all__ = [
    "CENTER_POLICIES",
    "DEFAULT_RATIOS",
    "DEFAULT_SCALES",
    "FIXED_GRID",
    "anchor_boxes",
    "anchor_offsets",
    "boxes_to_pixels",
    "crop",
    "crop_weights",
    "fuse",
    "random_views",
    "ten_views",
    "view_to_image",
    "whole_image_boxes",
]
