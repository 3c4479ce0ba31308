"""The ``rarl-gym`` command (agents.cli: the dispatcher, every subcommand's --help, the scripts
that wrap it), its shared pieces in rarl_gym.cli (env overrides, JSON options, argparse types,
exit statuses and messages) and rarl_gym.device.pick_device (the --device option)."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from rarl_gym.cli import (
    add_dataset_options,
    env_overrides,
    json_object,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
)
from rarl_gym.device import pick_device
from rarl_gym.errors import ConfigError, DatasetNotFoundError


# -- env_overrides / json_object ----------------------------------------------------------------
def test_env_overrides_merge_the_json_and_the_options():
    got = env_overrides('{"glimpse_size": 1, "backbone": "tiny"}', data_root="/data/voc07", backbone="vgg16", split=None)
    assert got == {"glimpse_size": 1, "backbone": "vgg16", "root": "/data/voc07"}  # an option wins over the JSON


def test_env_overrides_map_data_root_to_root_and_leave_none_out():
    assert env_overrides("{}", data_root="/d") == {"root": "/d"}
    assert env_overrides("{}", data_root=None, backbone=None) == {}
    assert env_overrides('{"root": "/from-json"}', data_root=None) == {"root": "/from-json"}  # None does not erase
    assert env_overrides("{}", glimpse_size=0, pretrained=False) == {"glimpse_size": 0, "pretrained": False}  # falsy is kept


@pytest.mark.parametrize(
    "text, words",
    [
        ("{nope", ["--env-kwargs is not valid JSON", "write a JSON object"]),
        ("", ["--env-kwargs is not valid JSON"]),
        ("[1, 2]", ["--env-kwargs must be a JSON object, got list"]),
        ('"glimpse_size"', ["must be a JSON object, got str"]),
        ("3", ["must be a JSON object, got int"]),
    ],
)
def test_bad_env_kwargs_json_is_a_config_error(text, words):
    with pytest.raises(ConfigError) as err:
        env_overrides(text, data_root="/d")
    for word in words:
        assert word in str(err.value)
    assert '{"glimpse_size": 3}' in err.value.fix  # an example to copy


def test_json_object_names_the_flag_and_the_example():
    assert json_object('{"n_epochs": 2}', "--hyperparams", '{"lr": 1}') == {"n_epochs": 2}
    with pytest.raises(ConfigError, match="--hyperparams is not valid JSON") as err:
        json_object("{'single': 1}", "--hyperparams", '{"lr": 1}')
    assert '{"lr": 1}' in err.value.fix


# -- argparse types ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parse, good, bad",
    [
        (positive_int, {"1": 1, "16": 16}, ["0", "-1", "1.5", "x", ""]),
        (non_negative_int, {"0": 0, "7": 7}, ["-1", "2.0", "seed"]),
        (positive_float, {"0.5": 0.5, "1e-3": 1e-3, "3": 3.0}, ["0", "-1", "nan", "inf", "-inf", "x"]),
    ],
)
def test_argparse_number_types(parse, good, bad):
    for text, value in good.items():
        assert parse(text) == value and type(parse(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}"):
            parse(text)


def test_dataset_options_take_both_spellings_of_the_data_root(capsys):
    from rarl_gym.sources import DATASETS

    p = argparse.ArgumentParser()
    add_dataset_options(p)
    assert vars(p.parse_args([])) == {"dataset": "shapes", "data_root": None}
    assert p.parse_args(["--dataset", "voc07", "--data-root", "/d"]).data_root == "/d"
    assert p.parse_args(["--root", "/old"]).data_root == "/old"  # the spelling of earlier versions
    assert [a.choices for a in p._actions if a.dest == "dataset"] == [list(DATASETS)]
    p.print_help()
    help_text = capsys.readouterr().out
    assert "--data-root" in help_text and "--root" not in help_text.replace("--data-root", "")  # the alias is hidden


# -- run_cli -------------------------------------------------------------------------------------
def _raise(err: BaseException):
    def body(*args):
        raise err

    return body


def test_run_cli_exit_statuses_and_messages(capsys):
    assert run_cli(lambda: None) == 0
    assert capsys.readouterr().err == ""
    assert run_cli(_raise(DatasetNotFoundError("no VOC07 under /x", "set RARL_DATA"))) == 2
    assert capsys.readouterr().err == "error: no VOC07 under /x\nFix: set RARL_DATA\n"
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as a user error
        run_cli(_raise(ZeroDivisionError()))


def test_run_cli_on_ctrl_c_says_what_the_script_says(capsys):
    assert run_cli(_raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted\n"  # no promise of a --resume the script may not have
    assert run_cli(_raise(KeyboardInterrupt()), on_interrupt="continue it with --resume") == 130
    assert capsys.readouterr().err == "interrupted: continue it with --resume\n"


@pytest.mark.parametrize(
    "command, body, hint",
    [
        ("train", "_train", "continue it with --resume"),
        ("extract", "extract", "the same command continues"),
        ("ablate", "ablate", "the same command continues"),
    ],
)
def test_a_command_that_can_continue_says_how_on_ctrl_c(command, body, hint, monkeypatch, tmp_path, capsys):
    from agents.cli import main

    module = importlib.import_module(f"agents.cli.{command}")
    monkeypatch.setattr(module, body, _raise(KeyboardInterrupt()))
    assert main([command, "--out", str(tmp_path)] if command == "ablate" else [command]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: ") and hint in err
    assert "--resume" not in err or command == "train"


# -- the rarl-gym command --------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "evaluate", "predict", "extract", "visualize", "ablate"]
#: subcommand -> its wrapper in scripts/
SCRIPTS = {
    "train": "train_agent",
    "evaluate": "evaluate",
    "predict": "predict",
    "extract": "extract_features",
    "visualize": "visualize",
    "ablate": "ablate",
}


def test_the_entry_point_is_the_dispatcher():
    """``pip install .`` makes ``rarl-gym`` call ``agents.cli:main`` (in an installed package, not scripts/)."""
    from agents.cli import SUBCOMMANDS, main

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["rarl-gym"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is main
    assert any(
        module.startswith(pattern.rstrip("*")) for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    )
    assert list(SUBCOMMANDS) == COMMANDS


def test_rarl_gym_help_lists_every_command(capsys):
    from agents.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rarl-gym ")
    for command in COMMANDS:
        assert f"\n  {command} " in out and f"rarl-gym {command}" in out  # listed, and an example of it
    assert main([]) == 0 and capsys.readouterr().out == out  # no command: the same help
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("rarl-gym ")


def test_an_unknown_command_is_a_usage_error(capsys):
    from agents.cli import main

    with pytest.raises(SystemExit) as done:
        main(["trian"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and "'train'" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    from agents.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rarl-gym {command} ")
    examples = out.split("Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples and all(line.strip().startswith(("rarl-gym ", "torchrun ", "#", "--")) for line in examples), examples
    assert sum(line.strip().startswith(f"rarl-gym {command}") for line in examples) >= 1
    assert f"python scripts/{SCRIPTS[command]}.py" in out  # the clone's spelling of the same command


def test_the_arguments_reach_the_command(capsys):
    """``rarl-gym train --epochs 0``: the train parser's own message, under the command's name."""
    from agents.cli import main

    with pytest.raises(SystemExit) as done:
        main(["train", "--epochs", "0"])
    assert done.value.code == 2
    assert "rarl-gym train: error: argument --epochs: must be a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_each_script_is_the_command_itself(command, monkeypatch):
    """``import train_agent`` (what tests and users of a clone do) gives agents.cli.train itself, so
    patching one patches the other."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    monkeypatch.delitem(sys.modules, SCRIPTS[command], raising=False)
    assert importlib.import_module(SCRIPTS[command]) is importlib.import_module(f"agents.cli.{command}")
    source = (ROOT / "scripts" / f"{SCRIPTS[command]}.py").read_text()
    assert len(source.splitlines()) < 25 and f"agents.cli.{command}" in source  # a thin wrapper


def test_the_scripts_and_python_m_run_the_command():
    """``python scripts/predict.py --help`` and ``python -m agents.cli predict --help`` (what torchrun -m takes)."""
    for cmd in (
        [sys.executable, str(ROOT / "scripts" / "predict.py"), "--help"],
        [sys.executable, "-m", "agents.cli", "predict", "--help"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Examples:" in done.stdout and "--top-k" in done.stdout


# -- pick_device ---------------------------------------------------------------------------------
def test_auto_is_cuda_when_visible_else_cpu(monkeypatch):
    assert pick_device() == pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_cpu_is_always_there():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cpu:0") == torch.device("cpu:0")
    assert isinstance(pick_device("cpu"), torch.device)


@pytest.mark.parametrize("name", ["gpu", "CPU", "cuda:x", "", "tpu"])
def test_an_unknown_device_name_is_a_config_error(name):
    with pytest.raises(ConfigError, match=f"unknown device {name!r}") as err:
        pick_device(name)
    assert "'auto'" in err.value.fix and "'cpu'" in err.value.fix and "cuda" in err.value.fix


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_config_error(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no GPU is visible") as err:
        pick_device(name)
    assert "--device cpu" in err.value.fix


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_when_there_is_a_gpu():
    assert pick_device("cuda") == torch.device("cuda") and pick_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("name", ["cuda:2", "cuda:5"])
def test_a_gpu_index_past_the_visible_gpus_is_a_config_error(name, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1") and pick_device("cuda") == torch.device("cuda")
    with pytest.raises(ConfigError, match=f"{name!r} was asked for but only 2 GPUs are visible") as err:
        pick_device(name)
    assert "cuda:0" in err.value.fix and "cuda:1" in err.value.fix and "cuda:2" not in err.value.fix


def test_mps_only_where_it_is_available(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no MPS") as err:
        pick_device("mps")
    assert "--device cpu" in err.value.fix
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("mps") == torch.device("mps")


@pytest.mark.parametrize("name", ["meta", "meta:0"])
def test_the_meta_device_is_refused(name):
    with pytest.raises(ConfigError, match="not a compute device") as err:
        pick_device(name)
    assert "'cpu'" in err.value.fix


def test_every_command_the_readme_shows_parses():
    """Each ``rarl-gym ...`` line of README.md's code blocks is accepted by its subcommand's parser
    (options and choices as the README spells them)."""
    import importlib
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("#")[0].split(">")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("rarl-gym ")]
    assert len(commands) >= 10
    for argv in commands:
        module = importlib.import_module(f"agents.cli.{argv[0]}")
        module.parse_args(argv[1:])  # argparse exits (status 2) on an option or choice the command lacks
