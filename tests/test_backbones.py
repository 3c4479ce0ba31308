"""Backbones: offline EfficientNet-Lite0 weights are real, shapes/strides, errors, preprocessing."""

from __future__ import annotations

import os
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from rarl_gym.errors import ConfigError
from rarl_gym.features import Backbone, available_backbones, build_backbone, load_efficientnet_lite0_classifier, weights_probe

skdata = pytest.importorskip("skimage.data")

CAT_CLASSES = set(range(281, 288))  # tabby, tiger cat, Persian, Siamese, Egyptian cat, cougar, lynx
COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return build_backbone("efficientnet_lite0")


def _imagenet_eval(image: np.ndarray) -> torch.Tensor:
    """Shorter side 256 bicubic, centre crop 224, mean = std = 0.5."""
    im = Image.fromarray(image).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - 0.5) / 0.5).unsqueeze(0)


def test_offline_lite0_weights_classify_real_photos():
    model = load_efficientnet_lite0_classifier()
    assert not model.training
    x = torch.cat([_imagenet_eval(skdata.chelsea()), _imagenet_eval(skdata.coffee())])
    with torch.inference_mode():
        logits = model(x)
    assert logits.shape == (2, 1000)
    assert int(logits[0].argmax()) in CAT_CLASSES
    assert set(logits[1].topk(5).indices.tolist()) & COFFEE_CLASSES


def test_lite0_feature_map_shape_and_stride(lite0):
    assert lite0.name == "efficientnet_lite0"
    assert (lite0.channels, lite0.stride) == (1280, 32)
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert lite0.weights.startswith("imagenet:efficientnet-lite0")
    assert not lite0.module.training
    x = lite0.preprocess([Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())], 256)
    with torch.inference_mode():
        f = lite0(x)
    assert f.shape == (2, 1280, 8, 8)
    assert torch.isfinite(f).all()
    # requires_grad is left as built (a fine-tuning trainer may train the backbone)
    assert all(p.requires_grad for p in lite0.module.parameters())


def test_lite0_s16_feature_map():
    b = build_backbone("efficientnet_lite0_s16")
    assert (b.channels, b.stride) == (112, 16)
    with torch.inference_mode():
        f = b(torch.zeros(1, 3, 256, 256))
    assert f.shape == (1, 112, 16, 16)


def test_lite0_features_match_classifier_trunk(lite0):
    full = load_efficientnet_lite0_classifier()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(lite0(x), full.forward_features(x), atol=1e-5)


def test_tiny_shape_and_determinism():
    a, b = build_backbone("tiny"), build_backbone("tiny")
    assert (a.channels, a.stride) == (32, 16)
    assert a.weights == "random:seed0"
    for pa, pb in zip(a.module.state_dict().values(), b.module.state_dict().values()):
        assert torch.equal(pa, pb)
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():  # its speed: benchmarks/unit_timings.py
        fa = a(x)
    assert fa.shape == (4, 32, 8, 8)
    with torch.inference_mode():
        assert torch.equal(fa, b(x))


def test_tiny_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_backbone("tiny")
    assert torch.equal(torch.rand(3), expected)


def test_unknown_name_lists_available():
    with pytest.raises(ConfigError) as info:
        build_backbone("alexnet_v9")
    msg = str(info.value)
    for name in available_backbones():
        assert repr(name) in msg
    assert "timm:" in msg and "torchvision:" in msg
    assert "efficientnet_lite0" in available_backbones()


@pytest.mark.parametrize("name", ["timm:definitely_not_a_model", "torchvision:definitely_not_a_model", "timm:", 3])
def test_bad_prefixed_names(name):
    with pytest.raises(ConfigError):
        build_backbone(name, pretrained=False)


def _vgg16_path() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", "vgg16-397923af.pth")


def test_vgg16_pretrained_works_or_raises_a_config_error():
    """Here (no network) this raises a ConfigError that names the fix; with the file cached it builds.
    (That the failure is fast is measured by benchmarks/unit_timings.py.)"""
    if not os.path.exists(_vgg16_path()) and weights_probe.reachable("https://download.pytorch.org/")[0]:
        pytest.skip("network reachable and VGG16 not cached: not downloading 528 MB in a unit test")
    try:
        b = build_backbone("vgg16")
    except ConfigError as e:
        msg = str(e)
        assert "vgg16" in msg and "checkpoints" in msg and "efficientnet_lite0" in msg
    else:
        assert (b.channels, b.stride) == (512, 16)
        assert b.weights == "imagenet:vgg16-397923af"


def test_torchvision_download_failure_becomes_config_error(monkeypatch, tmp_path):
    """Host reachable but the download fails (e.g. a proxy blocks it): still a ConfigError with the fix."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(weights_probe, "reachable", lambda url: (True, ""))

    def fail(*args, **kwargs):
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(ConfigError) as info:
        build_backbone("resnet50")
    msg = str(info.value)
    assert "resnet50" in msg and "simulated" in msg
    assert os.path.join(str(tmp_path), "checkpoints", "resnet50-0676ba61.pth") in msg
    assert "efficientnet_lite0" in msg


def test_random_torchvision_and_timm_backbones():
    r = build_backbone("torchvision:resnet18", pretrained=False)
    assert (r.channels, r.stride, r.weights) == (512, 32, "random:seed0")
    with torch.inference_mode():
        assert r(torch.zeros(1, 3, 256, 256)).shape == (1, 512, 8, 8)
    t = build_backbone("timm:resnet18", pretrained=False)
    assert (t.channels, t.stride) == (512, 32)
    with pytest.raises(ConfigError):
        build_backbone("torchvision:vit_b_16", pretrained=False)


def test_preprocess_constant_colour():
    b = build_backbone("tiny")
    colour = (255, 0, 128)
    images = [Image.new("RGB", (50, 30), colour), Image.new("L", (64, 64), 255)]
    x = b.preprocess(images, 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and x.device.type == "cpu"
    mean, std = torch.tensor(b.mean), torch.tensor(b.std)
    expected0 = (torch.tensor(colour) / 255.0 - mean) / std
    expected1 = (torch.ones(3) - mean) / std
    assert torch.allclose(x[0], expected0.view(3, 1, 1).expand(3, 32, 32), atol=1e-6)
    assert torch.allclose(x[1], expected1.view(3, 1, 1).expand(3, 32, 32), atol=1e-6)
    # lite0-style normalisation maps [0, 1] onto [-1, 1]
    half = Backbone("x", b.module, 32, 16, (0.5,) * 3, (0.5,) * 3, "random:seed0")
    y = half.preprocess([Image.new("RGB", (10, 10), (0, 255, 255))], 8)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([-1.0, 1.0, 1.0]))
    assert b.preprocess([], 16).shape == (0, 3, 16, 16)
    with pytest.raises(ConfigError):
        b.preprocess(images, 0)
