"""EnvSettings (rarl_gym/env_settings.py): defaults, validation errors that name the fix, and the
round trip through a dict and JSON that runs and checkpoints rely on."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from rarl_gym.env_settings import EnvSettings, settings_kwargs
from rarl_gym.errors import ConfigError
from rarl_gym.glimpse import DEFAULT_RATIOS, DEFAULT_SCALES

#: Settings away from every default (the split is a non-default one of Shapes).
CUSTOM = {
    "dataset": "shapes",
    "split": "test",
    "root": "/data/somewhere",
    "backbone": "tiny",
    "pretrained": False,
    "input_size": 64,
    "glimpse_size": 1,
    "num_steps": 2,
    "mode": "joint",
    "k": 2,
    "fuse_whole_image": True,
    "scales": [0.25, 0.5],
    "ratios": [1.0],
    "cache_dir": "/tmp/rarl-cache",
    "dataset_kwargs": {"num_images": 8, "image_size": 64},
}


def test_defaults():
    s = EnvSettings()
    assert (s.dataset, s.split, s.backbone, s.mode, s.k) == ("shapes", "train", "efficientnet_lite0", "locate", "adaptive")
    assert (s.glimpse_size, s.num_steps, s.pretrained, s.fuse_whole_image) == (3, 5, True, False)
    assert s.scales == DEFAULT_SCALES and s.ratios == DEFAULT_RATIOS and s.num_regions == 9
    assert s.root is None and s.cache_dir is None and s.input_size is None and s.dataset_kwargs == {}
    assert EnvSettings(dataset="voc07").split == "train"  # the dataset's training split when none is given


def test_values_are_normalised():
    s = EnvSettings.from_kwargs(scales=[1, 0.5], ratios=(2,), root=Path("/data/voc"), dataset_kwargs=None)
    assert s.scales == (1.0, 0.5) and all(type(v) is float for v in s.scales + s.ratios) and s.ratios == (2.0,)
    assert s.root == "/data/voc" and isinstance(s.root, str)
    assert s.dataset_kwargs == {} and s.num_regions == 2


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"glimpse_sise": 3}, ["glimpse_sise", "did you mean 'glimpse_size'", "valid arguments"]),
        ({"mode": "both"}, ["mode", "'locate'", "'joint'"]),
        ({"dataset": "imagenet"}, ["dataset", "'shapes'", "'voc07'", "'coco'"]),
        ({"glimpse_size": 0}, ["glimpse_size", "1 to 32"]),
        ({"glimpse_size": 33}, ["glimpse_size", "1 to 32"]),
        ({"glimpse_size": 3.0}, ["glimpse_size"]),
        ({"num_steps": 0}, ["num_steps", "positive int"]),
        ({"k": 0}, ["k must be 'adaptive' or a positive int"]),
        ({"k": "all"}, ["k must be 'adaptive' or a positive int"]),
        ({"input_size": 16}, ["input_size", "at least 32"]),
        ({"scales": []}, ["scales", "non-empty"]),
        ({"ratios": [1.0, -2.0]}, ["ratios", "finite positive"]),
        ({"fuse_whole_image": 1}, ["fuse_whole_image", "True or False"]),
        ({"root": ""}, ["root", "non-empty string"]),
        ({"cache_dir": 3}, ["cache_dir", "non-empty string"]),
        ({"backbone": None}, ["backbone", "non-empty string"]),
    ],
)
def test_a_wrong_setting_is_a_config_error_that_names_it_and_the_fix(kwargs, words):
    with pytest.raises(ConfigError) as err:
        EnvSettings.from_kwargs(**kwargs)
    message = str(err.value)
    assert "Fix:" in message and err.value.fix
    for word in words:
        assert word in message


def test_settings_are_frozen_and_hashable():
    s = EnvSettings.from_kwargs(**CUSTOM)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mode = "locate"
    assert hash(s) == hash(EnvSettings.from_kwargs(**CUSTOM))
    assert len({s, EnvSettings.from_kwargs(**CUSTOM), EnvSettings()}) == 2


@pytest.mark.parametrize("kwargs", [{}, CUSTOM, {"dataset": "coco", "root": "/data/coco", "k": 3}])
def test_round_trip_through_a_dict_and_json(kwargs):
    s = EnvSettings.from_kwargs(**kwargs)
    d = s.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(EnvSettings)}
    assert EnvSettings.from_kwargs(**d) == s
    text = json.dumps(d)  # what run.json and the checkpoints store
    again = EnvSettings.from_kwargs(**json.loads(text))
    assert again == s and again.to_dict() == d and json.dumps(again.to_dict()) == text


def test_editing_the_dict_leaves_the_settings_alone():
    """``to_dict`` is a copy, nested values too: the frozen settings do not change through it."""
    s = EnvSettings.from_kwargs(**copy.deepcopy(CUSTOM))
    d = s.to_dict()
    d["dataset_kwargs"]["num_images"] = 1000
    d["scales"].append(1.0)
    assert s.dataset_kwargs == CUSTOM["dataset_kwargs"] and s.scales == (0.25, 0.5)
    assert s == EnvSettings.from_kwargs(**CUSTOM) and s.to_dict()["dataset_kwargs"]["num_images"] == 8


def test_replace_validates_and_leaves_the_original():
    s = EnvSettings.from_kwargs(**CUSTOM)
    t = s.replace(glimpse_size=7, scales=[0.5])
    assert (t.glimpse_size, t.scales, t.num_regions) == (7, (0.5,), 1)
    assert (s.glimpse_size, s.scales) == (1, (0.25, 0.5))
    assert t.replace(glimpse_size=1, scales=[0.25, 0.5]) == s
    with pytest.raises(ConfigError, match="glimpse_size"):
        s.replace(glimpse_size=0)
    with pytest.raises(ConfigError, match="unknown env argument"):
        s.replace(glimpse=3)


def test_from_env_id_applies_overrides_and_ignores_progress():
    s = EnvSettings.from_env_id("RARL-VOC07-v0", {"root": "/data/voc07", "glimpse_size": 1, "progress": False})
    assert (s.dataset, s.root, s.glimpse_size) == ("voc07", "/data/voc07", 1)
    assert EnvSettings.from_env_id("RARL-Shapes-v0") == EnvSettings(dataset="shapes")
    with pytest.raises(ConfigError, match="unknown env id") as err:
        EnvSettings.from_env_id("RARL-Nope-v0")
    assert "RARL-Shapes-v0" in str(err.value)
    with pytest.raises(ConfigError, match="unknown env argument"):
        EnvSettings.from_env_id("RARL-Shapes-v0", {"glimpses": 3})
    assert settings_kwargs({"progress": True, "k": 2}) == {"k": 2}


def test_rollout_kwargs_are_the_episode_shape():
    s = EnvSettings.from_kwargs(**CUSTOM)
    assert s.rollout_kwargs() == {
        "num_steps": 2,
        "glimpse_size": 1,
        "scales": (0.25, 0.5),
        "ratios": (1.0,),
        "k": 2,
        "fuse_whole_image": True,
    }
