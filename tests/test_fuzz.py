"""Property-based: random env kwargs, actions, reset options and command lines never end in a bare
Python exception. Every failure is a :class:`rarl_gym.errors.RarlGymError` (or Gymnasium's own
error) with a message; a command line fails with exit status 2 and a message, never a traceback.

Derandomized and without an example database, so a run is reproducible; a few dozen examples each
(``RARL_FUZZ_EXAMPLES``) keep the suite fast (nothing here extracts features: the env is the shared small one).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import io
import json
import math
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.cli import train as train_agent
from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import RarlGymError

ROOT = Path(__file__).resolve().parents[1]

#: 40 examples per property (``RARL_FUZZ_EXAMPLES=300`` for a longer search).
FUZZ = settings(
    max_examples=int(os.environ.get("RARL_FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Any JSON-like value, odd floats included.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6
)
FIELDS = [f.name for f in dataclasses.fields(EnvSettings)]
env_kwargs = st.dictionaries(st.sampled_from(FIELDS) | st.text(min_size=1, max_size=8), values, max_size=4)


def assert_named(err: BaseException) -> None:
    """``err`` is one of ours (or Gymnasium's) and says something."""
    assert isinstance(err, (RarlGymError, gym.error.Error)), f"bare {type(err).__name__}: {err}"
    assert str(err).strip(), f"{type(err).__name__} without a message"


@FUZZ
@given(kwargs=env_kwargs)
def test_random_env_kwargs_are_accepted_or_named(kwargs):
    try:
        settings_ = EnvSettings.from_kwargs(**kwargs)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    assert all(math.isfinite(v) and v > 0 for v in settings_.scales + settings_.ratios)
    json.dumps(settings_.to_dict())


@pytest.fixture(scope="module")
def env(small_kwargs):
    env = gym.make("RARL-Shapes-v0", **small_kwargs)
    yield env
    env.close()


def _array(shape: tuple, fill: float, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # float16 turns a large fill into inf: wanted here
        return np.full(shape, fill).astype(dtype)


arrays = st.builds(
    _array,
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.float32, np.float64, np.float16, object]),
)
actions = st.one_of(arrays, values, st.lists(st.floats(allow_nan=True), min_size=2, max_size=2))


@FUZZ
@given(action=actions)
def test_random_actions_are_taken_or_named(env, action):
    env.reset(options={"index": 0})
    try:
        obs, reward, *_ = env.step(action)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    assert env.observation_space.contains(obs) and np.isfinite(reward)


@FUZZ
@given(options=st.one_of(values, st.dictionaries(st.sampled_from(["index", "other"]), values, max_size=2)))
def test_random_reset_options_are_taken_or_named(env, options):
    try:
        obs, info = env.reset(options=options)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    assert env.observation_space.contains(obs) and "image_id" in info


#: Options whose values are drawn at random; --resume of a folder without a run ends every
#: command line before any training (the property is about the validation on the way there).
NUMERIC = ["--epochs", "--batch-size", "--lr", "--seed", "--total-timesteps", "--n-envs", "--eval-views"]
tokens = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str), st.text(max_size=6)
)
json_tokens = st.one_of(values.map(json.dumps), st.text(max_size=10))


@FUZZ
@given(
    algo=st.sampled_from(["rarl", "ppo", "sac", "cem", "nope"]),
    numbers=st.dictionaries(st.sampled_from(NUMERIC), tokens, max_size=3),
    env_json=json_tokens,
    hyper=st.none() | json_tokens,
)
def test_random_command_lines_fail_with_a_message(tmp_path_factory, algo, numbers, env_json, hyper):
    run = tmp_path_factory.getbasetemp() / "fuzz-no-run"
    argv = ["--algo", algo, "--run-dir", str(run), "--resume", "--no-progress", "--env-kwargs", env_json]
    for flag, value in numbers.items():
        argv += [f"{flag}={value}"]
    if hyper is not None:
        argv += ["--hyperparams", hyper]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            status = train_agent.main(argv)
        except SystemExit as exit_:  # argparse: a usage error
            status = exit_.code
    err = stderr.getvalue()
    assert status == 2 and "error" in err and "Traceback" not in err


# -- the output side (issue 17): every numeric option of every command, full and read-only folders --
COMMANDS = ["train", "evaluate", "predict", "extract", "visualize", "ablate"]
#: the positional arguments a command's parser needs
POSITIONAL = {"evaluate": ["run"], "predict": ["photo.jpg"]}
#: the numeric options where 0 is a valid value
ZERO_OK = {"--seed", "--workers", "--threshold", "--images"}


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The argparse parser a command builds (caught as it parses)."""
    import importlib

    caught: list[argparse.ArgumentParser] = []
    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", lambda self, *a, **k: caught.append(self) or argparse.Namespace())
        importlib.import_module(f"agents.cli.{command}").parse_args([], prog=f"rarl-gym {command}")
    return caught[0]


def numeric_options(parser: argparse.ArgumentParser) -> dict[str, type]:
    """``--flag -> int | float`` for every option that takes a number."""
    found = {}
    for action in parser._actions:
        if not action.option_strings or action.type in (None, str):
            continue
        found[action.option_strings[-1]] = type(action.type("1"))
    return found


def refused(parser: argparse.ArgumentParser, argv: list[str], capsys) -> str:
    """The usage error ``argv`` gets (exit status 2), or fail."""
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == 2, argv
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_numeric_option_of_every_command_refuses_nonsense(command, monkeypatch, capsys):
    parser = parser_of(command, monkeypatch)
    numeric = numeric_options(parser)
    assert numeric, f"rarl-gym {command} has no numeric option?"
    for flag, kind in numeric.items():
        bad = ["-2", "x", "", "nan", "inf", "-inf"] + (["1.5", "1e3"] if kind is int else [])
        if flag not in ZERO_OK:
            bad.append("0")
        for value in bad:
            err = refused(parser, [*POSITIONAL.get(command, []), f"{flag}={value}"], capsys)
            assert flag in err, (flag, value, err)
        parser.parse_args([*POSITIONAL.get(command, []), f"{flag}=1"])  # and a sound value is taken


@FUZZ
@given(data=st.data())
def test_random_numbers_for_every_numeric_option_are_taken_or_refused(data):
    """Random tokens for the numeric options of every command: a usage error (2) or a valid number."""
    for command in COMMANDS:
        with pytest.MonkeyPatch.context() as patch:
            parser = parser_of(command, patch)
        for flag, kind in numeric_options(parser).items():
            token = data.draw(tokens, label=flag)
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                try:
                    args = parser.parse_args([*POSITIONAL.get(command, []), f"{flag}={token}"])
                except SystemExit as exit_:
                    assert exit_.code == 2 and "Traceback" not in stderr.getvalue()
                    continue
            value = getattr(args, parser._option_string_actions[flag].dest)
            for v in value if isinstance(value, list) else [value]:
                assert isinstance(v, kind) and math.isfinite(v) and (v > 0 or (flag in ZERO_OK and v >= 0)), (flag, token)


@FUZZ
@given(
    algo=st.sampled_from(["ppo", "a2c", "sac", "td3", "recurrentppo"]),
    overrides=st.dictionaries(
        st.sampled_from(["n_steps", "learning_rate", "buffer_size", "batch_size", "gamma", "ent_coef", "train_freq", "tau"]),
        values,
        max_size=3,
    ),
)
def test_random_sb3_hyperparameters_are_taken_or_named(algo, overrides):
    from agents.sb3.algos import HYPERPARAM_RULES, check_hyperparams

    try:
        check_hyperparams(algo, overrides)
    except Exception as err:  # the property under test
        assert_named(err)
        return
    for name, value in overrides.items():
        assert HYPERPARAM_RULES[name][0](value)


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["samples", "hidden_dim", "embed_dim", "dropout", "folds", "candidates", "rl_weight", "eval_views"]),
        values,
        min_size=1,
        max_size=3,
    )
)
def test_random_numbers_for_the_rarl_config_are_taken_or_named(changes):
    from agents.rarl.trainer import TrainConfig, _check_numbers

    try:
        _check_numbers(TrainConfig(**changes))
    except Exception as err:  # the property under test
        assert_named(err)
        return
    for value in changes.values():
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.parametrize(
    "algo, hyper, word",
    [
        ("rarl", '{"samples": "x"}', "samples='x'"),
        ("rarl", '{"samples": 0}', "samples=0"),
        ("rarl", '{"hidden_dim": 0}', "hidden_dim=0"),
        ("rarl", '{"dropout": 1.5}', "dropout=1.5"),
        ("ppo", '{"n_steps": 0}', "n_steps=0"),
        ("ppo", '{"learning_rate": "x"}', "learning_rate='x'"),
        ("sac", '{"buffer_size": -5}', "buffer_size=-5"),
        ("a2c", '{"gamma": 2}', "gamma=2"),
    ],
)
def test_bad_hyperparameters_are_named_before_anything_is_written(algo, hyper, word, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_agent.main(["--algo", algo, "--run-dir", str(run), "--no-progress", "--hyperparams", hyper]) == 2
    err = capsys.readouterr().err
    assert word in err and "Fix:" in err and "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize("algo", ["rarl", "ppo"])
def test_a_new_run_folder_holding_a_file_named_tb_is_refused(algo, small_kwargs, tmp_path, capsys):
    from rarl_gym.env_settings import settings_kwargs

    run = tmp_path / "run"
    run.mkdir()
    (run / "tb").write_text("not a folder")
    argv = ["--algo", algo, "--run-dir", str(run), "--no-progress", "--env-kwargs", json.dumps(settings_kwargs(small_kwargs))]
    assert train_agent.main([*argv, *(["--epochs", "1"] if algo == "rarl" else ["--total-timesteps", "48"])]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'tb'} is a file" in err and "--run-dir" in err
    assert sorted(p.name for p in run.iterdir()) == ["tb"]


@pytest.mark.parametrize("argv", [["--workers", "-2"], ["--batch-size", "0"], ["--input-size", "-1"]])
def test_extract_refuses_bad_numbers_and_leaves_no_cache_entry(argv, tmp_path, capsys):
    from agents.cli import main

    cache = tmp_path / "cache"
    base = [
        "extract",
        "--backbone",
        "tiny",
        "--dataset-kwargs",
        '{"num_images": 8, "image_size": 32}',
        "--cache-dir",
        str(cache),
    ]
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--splits", "train", *argv])
    assert exit_.value.code == 2 and f"argument {argv[0]}" in capsys.readouterr().err
    assert not cache.exists() or not any(cache.iterdir())


# writes that fail where a command writes its output ------------------------------------------------
def failing_writes(monkeypatch, folder: Path, code: int) -> None:
    """Make every write under ``folder`` fail with ``OSError(code)`` (EROFS: a read-only file
    system; ENOSPC: a full disk): opening a file for writing, creating a folder in it."""
    import builtins

    folder = Path(folder).resolve()
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(folder)
        except (TypeError, ValueError):
            return False

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            fail(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            fail(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


FAILURES = {errno.EROFS: ["cannot write", "writable"], errno.ENOSPC: ["the disk is full", "free space"]}


def assert_output_error(err: str, code: int, flag: str) -> None:
    assert "Traceback" not in err, err
    for word in FAILURES[code]:
        assert word in err, err
    assert flag in err.split("Fix:")[-1], err  # the fix names the option that moves the output


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def rarl_run(train_argv, tmp_path_factory) -> Path:
    """A RARL run of one epoch (no oracle row), read by the output tests."""
    run = tmp_path_factory.mktemp("fuzz-run") / "rarl"
    with contextlib.redirect_stdout(io.StringIO()):
        assert (
            train_agent.main(train_argv(run, "--epochs", "1", "--device", "cpu", "--hyperparams", '{"oracle_samples": 0}'))
            == 0
        )
    return run


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("photos") / "ok.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize("code", sorted(FAILURES))
def test_evaluate_on_a_run_folder_it_cannot_write_prints_the_table_then_names_the_fix(rarl_run, code, monkeypatch, capsys):
    from agents.cli import evaluate

    before = leftovers(rarl_run)
    failing_writes(monkeypatch, rarl_run, code)
    assert evaluate.main([str(rarl_run), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "mAP (area)" in captured.out  # the table came first
    assert_output_error(captured.err, code, "--out")
    assert leftovers(rarl_run) == before  # no 0-byte JSON, no temporary file


@pytest.mark.parametrize("code", sorted(FAILURES))
def test_evaluate_out_in_a_folder_it_cannot_write(rarl_run, code, tmp_path, monkeypatch, capsys):
    from agents.cli import evaluate

    folder = tmp_path / "results"
    folder.mkdir()
    failing_writes(monkeypatch, folder, code)
    assert evaluate.main([str(rarl_run), "--device", "cpu", "--out", str(folder / "e.json")]) == 2
    assert_output_error(capsys.readouterr().err, code, "--out")
    assert leftovers(folder) == []
    monkeypatch.undo()
    assert evaluate.main([str(rarl_run), "--device", "cpu", "--out", str(tmp_path / "new" / "e.json")]) == 0  # made
    assert json.loads((tmp_path / "new" / "e.json").read_text())["views"] == 1
    assert evaluate.main([str(rarl_run), "--device", "cpu", "--out", str(folder)]) == 2  # a folder, not a file
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("code", sorted(FAILURES))
@pytest.mark.parametrize("flag", ["--out", "--draw"])
def test_predict_output_it_cannot_write_is_named_and_leaves_nothing(
    rarl_run, photo, code, flag, tmp_path, monkeypatch, capsys
):
    from agents.cli import predict

    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / ("p.jsonl" if flag == "--out" else "figures")
    failing_writes(monkeypatch, folder, code)
    assert predict.main([str(photo), "--run", str(rarl_run), "--device", "cpu", "--no-progress", flag, str(target)]) == 2
    assert_output_error(capsys.readouterr().err, code, flag)
    assert leftovers(folder) == []


def test_predict_output_paths_are_checked_before_the_work(rarl_run, photo, tmp_path, capsys):
    from agents.cli import predict

    base = [str(photo), "--run", str(rarl_run), "--device", "cpu", "--no-progress"]
    (tmp_path / "afile").write_text("x")
    assert predict.main([*base, "--draw", str(tmp_path / "afile")]) == 2
    assert "--draw" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"
    assert predict.main([*base, "--draw", str(tmp_path / "afile" / "sub")]) == 2  # a file in the way
    assert "Traceback" not in capsys.readouterr().err
    assert predict.main([*base, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert predict.main([*base, "--out", str(tmp_path / "nodir" / "x.jsonl")]) == 0  # the folder is made
    assert json.loads((tmp_path / "nodir" / "x.jsonl").read_text())["image"] == str(photo)


@pytest.mark.parametrize("code", sorted(FAILURES))
def test_visualize_output_it_cannot_write_is_named(rarl_run, code, tmp_path, monkeypatch, capsys):
    from agents.cli import visualize

    (tmp_path / "afile").write_text("x")
    assert visualize.main([str(rarl_run), "--num", "1", "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    folder = tmp_path / "figs"
    folder.mkdir()
    failing_writes(monkeypatch, folder, code)
    assert visualize.main([str(rarl_run), "--num", "1", "--out", str(folder)]) == 2
    assert_output_error(capsys.readouterr().err, code, "--out")
    assert leftovers(folder) == []


@pytest.mark.parametrize("code", sorted(FAILURES))
def test_the_tensorboard_writer_thread_on_a_full_or_read_only_disk(code, tmp_path, monkeypatch, capfd):
    """The writer thread's OSError comes back named at the next write (or at close), and the
    thread prints no traceback of its own."""
    from tensorboard.summary.writer import record_writer

    from agents.tb_logging import open_writer
    from rarl_gym.errors import DiskFullError, NotWritableError

    writer = open_writer(tmp_path / "tb")
    writer.add_scalar("ok", 1.0, 0)
    writer.flush()

    def fail(self, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(record_writer.RecordWriter, "write", fail)
    want = DiskFullError if code == errno.ENOSPC else NotWritableError
    with pytest.raises(want) as err:
        for step in range(1, 1000):
            writer.add_scalar("x", float(step), step)
            writer.flush()
    assert str(tmp_path / "tb") in str(err.value) and "--run-dir" in str(err.value)
    with contextlib.suppress(want):
        writer.close()
    assert "Traceback" not in capfd.readouterr().err
    (tmp_path / "tb2").write_text("a file")
    with pytest.raises(NotWritableError, match="is a file"):
        open_writer(tmp_path / "tb2")


def test_sb3s_own_tensorboard_writer_gets_named_errors(tmp_path, monkeypatch):
    from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
    from tensorboard.summary.writer import record_writer

    from agents.tb_logging import name_sb3_writer_errors
    from rarl_gym.errors import DiskFullError

    logger = Logger(str(tmp_path), [TensorBoardOutputFormat(str(tmp_path / "tb"))])
    name_sb3_writer_errors(logger)
    monkeypatch.setattr(
        record_writer.RecordWriter, "write", lambda self, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(DiskFullError, match="disk is full"):
        for step in range(1000):
            logger.record("train/x", float(step))
            logger.dump(step)


#: Trainings stopped by SIGTERM at random points (``RARL_FUZZ_SIGNALS``; each is a process of its own).
SIGNALS = settings(FUZZ, max_examples=int(os.environ.get("RARL_FUZZ_SIGNALS", "4")))


@SIGNALS
@given(algo=st.sampled_from(["rarl", "ppo"]), delay=st.floats(0.0, 6.0))
def test_sigterm_at_a_random_point_of_a_training_keeps_a_valid_run(tmp_path_factory, train_argv, algo, delay):
    """``kill`` (SIGTERM) at a random moment after the run folder is locked: the command says what it
    kept and exits with 130 (never a traceback, never a crash at exit), and what it kept loads."""
    import signal
    import subprocess
    import sys
    import time

    run = Path(tmp_path_factory.mktemp("sigterm")) / "run"
    if algo == "rarl":
        argv = train_argv(run, "--epochs", "50", "--device", "cpu")
    else:
        env_kwargs = train_argv(run)[1]
        hyper = json.dumps({"n_steps": 12, "batch_size": 24, "n_epochs": 1})
        argv = ["--algo", "ppo", "--env-kwargs", env_kwargs, "--run-dir", str(run), "--no-progress", "--device", "cpu"]
        argv += ["--n-envs", "2", "--total-timesteps", "1000000", "--save-every", "24", "--hyperparams", hyper]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train_agent.py"), *argv], stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.monotonic() + 300
    while not (run / ".lock").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err, err[-6000:]
    if algo == "rarl" and (run / "checkpoint.pt").exists():
        from agents.rarl.trainer import load_checkpoint

        assert f"keeps epoch {load_checkpoint(run)['epoch']} of 50" in err
    elif algo == "ppo" and (run / "model.zip").exists():
        from agents.sb3.train import load_model

        steps = load_model(run, "cpu")[0].num_timesteps
        assert json.loads((run / "run.json").read_text())["num_timesteps"] == steps
        assert f"interrupted at {steps} env steps: saved model.zip" in err
