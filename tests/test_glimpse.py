import math
import os
from pathlib import Path

import pytest
import torch

from rarl_gym import native
from rarl_gym.glimpse import (
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    anchor_boxes,
    boxes_to_pixels,
    crop,
    crop_weights,
    fuse,
    random_views,
    ten_views,
    view_to_image,
    whole_image_boxes,
)


def test_anchor_boxes_of_the_paper():
    boxes = anchor_boxes(torch.zeros(1, 2))
    assert boxes.shape == (1, 9, 4)
    # scale 160/512 at ratio 1:1 is a square of side 0.3125 of the image = half-extent 0.3125
    assert torch.allclose(boxes[0, 4], torch.tensor([-0.3125, -0.3125, 0.3125, 0.3125]))
    # ratio 2:1 at scale 80/512: width 2x height, same area as the square
    w = boxes[0, 0, 2] - boxes[0, 0, 0]
    h = boxes[0, 0, 3] - boxes[0, 0, 1]
    assert float(w / h) == pytest.approx(2.0)
    assert float(w * h) == pytest.approx((2 * 80 / 512) ** 2)
    # the 320/512 anchors are 4x the side of the 80/512 ones
    assert float(boxes[0, 6, 2] / boxes[0, 0, 2]) == pytest.approx(4.0)


def test_anchor_boxes_are_clipped_to_the_image():
    boxes = anchor_boxes(torch.tensor([[0.9, -1.0]]))
    assert boxes.min() >= -1 and boxes.max() <= 1
    big = boxes[0, 8]  # 320/512, ratio 1:2: half-extents (0.442, 0.884)
    assert torch.allclose(big, torch.tensor([0.9 - 0.625 / math.sqrt(2), -1.0, 1.0, -1.0 + 0.625 * math.sqrt(2)]), atol=1e-6)


def test_crop_of_one_cell_and_of_the_mean():
    fmap = torch.arange(16.0).reshape(1, 1, 4, 4)
    # the box of feature cell (row 1, col 2) exactly, in image coordinates: x in [0, 0.5], y in [-0.5, 0]
    cell = torch.tensor([[[0.0, -0.5, 0.5, 0.0]]])
    assert crop(fmap, cell, 1).item() == pytest.approx(6.0)
    # s = 1 over the whole image is the global mean (RoI average pooling)
    whole = whole_image_boxes(1, 1)
    assert crop(fmap, whole, 1).item() == pytest.approx(7.5)
    # s = 2 over the whole image: the four 2x2 quadrant means
    quad = crop(fmap, whole, 2)[0, 0, 0]
    assert torch.allclose(quad, torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_crop_is_batched_and_differentiable():
    fmap = torch.randn(3, 5, 6, 6, requires_grad=True)
    boxes = anchor_boxes(torch.rand(3, 2) * 2 - 1)
    out = crop(fmap, boxes, 3)
    assert out.shape == (3, 9, 5, 3, 3)
    out[1].sum().backward()
    assert fmap.grad[1].abs().sum() > 0 and fmap.grad[0].abs().sum() == 0 and fmap.grad[2].abs().sum() == 0
    # each image's crop comes from its own map
    assert torch.allclose(out[2], crop(fmap[2:3].detach(), boxes[2:3], 3)[0], atol=1e-5)


@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("size", [1, 3])
def test_the_crop_methods_agree(size, pool, monkeypatch, request):
    """Every backend gives roi_align's numbers; the compiled kernel on its thread pool and in the
    calling thread alike (``native.PARALLEL_MIN_WORK`` decides which)."""
    monkeypatch.setattr(native, "PARALLEL_MIN_WORK", 0 if pool else 1 << 40)
    if pool:  # the kernel splits the regions between 2 workers
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        request.addfinalizer(lambda: torch.set_num_threads(before))
    fmap = torch.randn(4, 300, 6, 5, requires_grad=True)
    boxes = torch.cat([anchor_boxes(torch.rand(4, 2) * 2 - 1), whole_image_boxes(4, 1)], dim=1)
    a = crop(fmap, boxes, size, method="roi_align")
    b = crop(fmap, boxes, size, method="matmul")
    assert b.shape == (4, 10, 300, size, size)
    assert torch.allclose(a, b, atol=1e-5)
    (ga,) = torch.autograd.grad(a.square().sum(), fmap)
    (gb,) = torch.autograd.grad(b.square().sum(), fmap)
    assert torch.allclose(ga, gb, atol=1e-4)
    if native.available():  # the compiled kernel: no gradient, same numbers, into a given tensor too
        c = crop(fmap.detach(), boxes, size, method="native")
        assert torch.allclose(a, c, atol=1e-5)
        out = torch.full_like(c, float("nan"))
        assert crop(fmap.detach().contiguous(memory_format=torch.channels_last), boxes, size, out=out) is out
        assert torch.allclose(out, c, atol=1e-6)


@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize(("height", "width", "size"), [(10, 10, 3), (7, 12, 2), (5, 3, 7), (14, 14, 1)])
def test_crop_weights_reproduce_roi_align(sampling_ratio, height, width, size):
    """The separable weights of every path equal torchvision's roi_align, boxes at the borders,
    tiny and whole-image boxes included."""
    g = torch.Generator().manual_seed(height * 100 + width + size)
    fmap = torch.randn(3, 11, height, width, generator=g)
    centres = torch.rand(3, 2, generator=g) * 2.4 - 1.2  # some beyond the border: clipped boxes
    edge = torch.tensor([[-1.0, -1.0, 1.0, 1.0], [0.2, 0.3, 0.2001, 0.9], [-1.0, -1.0, -0.99, 1.0], [0.9, 0.9, 1.0, 1.0]])
    boxes = torch.cat([anchor_boxes(centres.clamp(-1, 1)), edge.expand(3, 4, 4)], dim=1)  # [3, 13, 4]
    ref = crop(fmap, boxes, size, sampling_ratio=sampling_ratio, method="roi_align")
    wy, wx = crop_weights(boxes, height, width, size, sampling_ratio)
    assert wy.shape == (3, 13, size, height) and wx.shape == (3, 13, size, width)
    dense = torch.einsum("bkiy,bkjx,bcyx->bkcij", wy, wx, fmap)
    assert torch.allclose(dense, ref, atol=1e-5)
    for method in ("matmul", "native", "roi_align") if native.available() else ("matmul", "roi_align"):
        means = torch.full((3, 13, 11), float("nan"))
        assert torch.allclose(
            crop(fmap, boxes, size, sampling_ratio=sampling_ratio, method=method, region_means=means), ref, atol=1e-5
        )
        assert torch.allclose(means, ref.mean(dim=(-2, -1)), atol=1e-5)  # filled in the same call
    # float16 maps (the cache's precision): the kernel converts on load, torch's paths upcast first
    half = fmap.half().contiguous(memory_format=torch.channels_last)
    ref16 = crop(half.float(), boxes, size, sampling_ratio=sampling_ratio, method="roi_align")
    for method in ("native", "matmul") if native.available() else ("matmul",):
        got = crop(half, boxes, size, sampling_ratio=sampling_ratio, method=method)
        assert got.dtype == torch.float32 and torch.allclose(got, ref16, atol=1e-5)


def test_crop_falls_back_to_torch_without_the_kernel(monkeypatch):
    """No compiler (or RARL_NATIVE=0): ``available()`` is False, ``auto`` crops with torch."""
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("RARL_NATIVE", "0")
    assert not native.available()
    fmap = torch.randn(2, 200, 4, 4)
    boxes = anchor_boxes(torch.zeros(2, 2))
    assert torch.allclose(crop(fmap, boxes, 3), crop(fmap, boxes, 3, method="roi_align"), atol=1e-5)
    with pytest.raises(RuntimeError, match="not available"):
        crop(fmap, boxes, 3, method="native")


def test_a_failing_compiler_is_reported_once_and_not_fatal(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("RARL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv("RARL_NATIVE", raising=False)
    monkeypatch.setattr(native, "library_path", lambda cache_dir=None: tmp_path / "native" / "k.so")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert native.load() is None
    assert native.load() is None  # no second attempt, no second warning


def test_fuse_is_category_wise_max():
    scores = torch.tensor([[[[0.1, 0.9], [0.5, 0.2]], [[0.7, 0.0], [0.3, 0.4]]]])  # [1, T=2, K=2, L=2]
    assert torch.equal(fuse(scores, dims=(1, 2)), torch.tensor([[0.7, 0.9]]))


def test_boxes_to_pixels():
    px = boxes_to_pixels(torch.tensor([[-1.0, -1.0, 0.0, 1.0]]), 200, 100)
    assert torch.equal(px, torch.tensor([[0.0, 0.0, 100.0, 100.0]]))


def test_view_to_image_maps_and_mirrors():
    boxes = torch.tensor([[[-1.0, -1.0, 0.0, 0.0]]])  # top-left quarter of the view
    view = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # bottom-right quarter of the image
    assert torch.allclose(view_to_image(boxes, view), torch.tensor([[[0.0, 0.0, 0.5, 0.5]]]))
    mirrored = view_to_image(boxes, view, torch.tensor([True]))
    assert torch.allclose(mirrored, torch.tensor([[[0.5, 0.0, 1.0, 0.5]]]))
    whole = torch.tensor([[-1.0, -1.0, 1.0, 1.0]])
    assert torch.allclose(view_to_image(boxes, whole), boxes)


def test_ten_views_and_random_views():
    views, flips = ten_views(0.75)
    assert views.shape == (10, 4) and flips.tolist() == [False] * 5 + [True] * 5
    assert torch.allclose(views[:, 2] - views[:, 0], torch.full((10,), 1.5))
    assert torch.allclose(views[4], torch.tensor([-0.75, -0.75, 0.75, 0.75]))
    assert views.min() == -1 and views.max() == 1
    v, f = random_views(500, 0.875, generator=torch.Generator().manual_seed(0))
    assert v.min() >= -1 and v.max() <= 1 and torch.allclose(v[:, 2] - v[:, 0], torch.full((500,), 1.75))
    assert 0.4 < f.float().mean() < 0.6


def test_defaults_are_the_papers():
    assert DEFAULT_RATIOS == (2.0, 1.0, 0.5)
    assert [round(s * 512) for s in DEFAULT_SCALES] == [80, 160, 320]


@pytest.mark.needs_c_compiler
def test_the_portable_build_of_the_kernel_gives_the_same_crops(monkeypatch, tmp_path):
    """Built without -march=native (no AVX, no F16C: the plain C loops and float16 conversion),
    the kernel still reproduces roi_align, for float32 and float16 maps."""
    monkeypatch.setattr(native, "FLAGS", ("-O2", "-fPIC", "-shared", "-std=c99"))
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("RARL_CACHE", str(tmp_path))
    assert native.available() and native.library_path().parent == tmp_path / "native"
    g = torch.Generator().manual_seed(5)
    fmap = torch.randn(2, 70, 9, 8, generator=g)
    fmap[0, :3, 0, 0] = torch.tensor([6e-6, -1e-7, 65000.0])  # float16 subnormals and a large value
    boxes = torch.cat([anchor_boxes(torch.rand(2, 2, generator=g) * 2 - 1), whole_image_boxes(2, 1)], dim=1)
    for maps in (fmap, fmap.half()):
        want = crop(maps.float(), boxes, 3, method="roi_align")
        got = crop(maps.contiguous(memory_format=torch.channels_last), boxes, 3, method="native")
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.needs_c_compiler
def test_a_read_only_cache_builds_the_kernel_in_the_temp_folder(monkeypatch, tmp_path):
    cache, temp = tmp_path / "cache", tmp_path / "tmp"
    (cache / "native").mkdir(parents=True)
    temp.mkdir()
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setenv("RARL_CACHE", str(cache))
    monkeypatch.setattr(native.tempfile, "tempdir", str(temp))
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # the cache folder is read-only (root ignores chmod)
        if flags & os.O_CREAT and Path(path).is_relative_to(cache):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert native.load() is not None
    assert list((temp / "rarl_gym" / "native").glob("glimpse_crop-*.so")) and not list((cache / "native").iterdir())


def _crop_in_child(queue):
    torch.set_num_threads(2)  # use the work pool (a forked child may start with one thread)
    fmap = torch.randn(4, 64, 6, 6)
    queue.put(float(crop(fmap, anchor_boxes(torch.zeros(4, 2)), 3, method="native").sum()))


@pytest.mark.needs_c_compiler
def test_the_kernel_works_in_a_forked_child_after_the_parent_used_it():
    """AsyncVectorEnv forks: the child must not wait on the parent's (dead) worker threads."""
    import multiprocessing as mp

    torch.set_num_threads(2)  # the parent's work pool runs 2 threads
    try:
        crop(torch.randn(8, 64, 6, 6), anchor_boxes(torch.zeros(8, 2)), 3, method="native")
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_crop_in_child, args=(queue,))
        child.start()
        child.join(timeout=30)
        hung = child.exitcode is None
        if hung:
            child.kill()
        assert not hung and child.exitcode == 0, "the child hung or failed"
        assert math.isfinite(queue.get(timeout=5))
    finally:
        torch.set_num_threads(1)
