"""The run folder of an agent trained through the env (SB3's and custom ones): framework-free.

A run folder holds the model (``model.zip``, ``cem.npz``...), ``run.json`` (the configuration:
what ``--resume`` and ``scripts/evaluate.py`` read) and, after training, ``metrics.json``.
Only the standard library and :mod:`rarl_gym` are needed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rarl_gym.env_settings import EnvSettings, settings_kwargs
from rarl_gym.errors import CheckpointError, NotWritableError, RunExistsError
from rarl_gym.io import atomic_write_json

#: The run configuration written beside the model (what ``--resume`` and evaluate.py read).
RUN_CONFIG = "run.json"
#: Files that mark a folder as holding a run (of any agent): a new run never writes into it.
RUN_FILES = ("checkpoint.pt", "model.zip", "cem.npz", RUN_CONFIG)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


#: The run's TensorBoard folder.
LOGS = "tb"


def check_run_folder(run_dir: str | Path) -> None:
    """Refuse (:class:`NotWritableError`) a run folder that is a file, or that holds a file where
    the run's TensorBoard folder ``tb/`` goes, before anything is trained into it."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NotWritableError(
            f"the run folder {run_dir} is a file, not a folder", "pass --run-dir a new folder or one that holds a run"
        )
    logs = run_dir / LOGS
    if logs.exists() and not logs.is_dir():
        raise NotWritableError(
            f"{logs} is a file, not a folder: the run's TensorBoard logs go there",
            f"remove or rename the file {logs}, or pass --run-dir another folder",
        )


def open_run(run_dir: str | Path, defaults: dict, explicit: dict, *, resume: bool, model_file: str) -> dict:
    """The configuration of a new or resumed run in ``run_dir``.

    A new run: ``defaults`` updated by ``explicit`` (the options given), with the validated env
    ``settings`` added; refused (:class:`RunExistsError`) if ``run_dir`` already holds any run.
    ``resume``: the run's saved configuration; ``explicit`` options must agree with it
    (:class:`CheckpointError` otherwise), as must ``model_file`` exist.
    """
    run_dir = Path(run_dir)
    explicit = _jsonable({k: v for k, v in explicit.items() if v is not None})
    check_run_folder(run_dir)
    if not resume:
        found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
        if found:
            raise RunExistsError(
                f"the run folder {run_dir} already holds a run ({found[0]})",
                "pass --resume to continue it, or --run-dir NEW_FOLDER to start another",
            )
        config = {**_jsonable(defaults), **explicit}
        config["env_kwargs"] = settings_kwargs(config.get("env_kwargs", {}))
        config["settings"] = EnvSettings.from_env_id(config["env_id"], config["env_kwargs"]).to_dict()
        return config
    if not (run_dir / model_file).exists() or not (run_dir / RUN_CONFIG).exists():
        raise CheckpointError(
            f"--resume: there is no {model_file} and {RUN_CONFIG} in {run_dir}",
            "check --run-dir, or drop --resume to start a new run",
        )
    config = load_run_config(run_dir)
    if "env_kwargs" in explicit:  # --backbone X on top of the run's env kwargs, not instead of them
        explicit["env_kwargs"] = {**config.get("env_kwargs", {}), **explicit["env_kwargs"]}
    diff = {k: (config.get(k), v) for k, v in explicit.items() if config.get(k) != v}
    if diff:
        lines = "; ".join(f"{k}: run {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"the run in {run_dir} comes from another configuration ({lines})",
            "resume with the same options, or start a new run with another --run-dir",
        )
    return config


def load_run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"cannot read the run configuration {path} ({err})", "pass a run folder written by train_agent.py"
        ) from err
    if not isinstance(config, dict) or not isinstance(config.get("settings"), dict) or "env_id" not in config:
        raise CheckpointError(
            f"{path} is not a run configuration of train_agent.py (no env_id / settings)",
            "pass a run folder written by train_agent.py",
        )
    return config


def save_run_config(run_dir: str | Path, config: dict) -> None:
    """Write ``run.json`` atomically (:func:`rarl_gym.io.atomic_write_json`)."""
    atomic_write_json(Path(run_dir) / RUN_CONFIG, config, what="run configuration")


def write_metrics(run_dir: str | Path, results: dict, **extra: Any) -> Path:
    """``run_dir/metrics.json``: ``results`` (of :func:`agents.common.evaluation.evaluate_run`) without
    the report objects, plus ``extra``; written atomically (:func:`rarl_gym.io.atomic_write_json`)."""
    path = Path(run_dir) / "metrics.json"
    atomic_write_json(path, {**{k: v for k, v in results.items() if k != "reports"}, **extra}, what="run metrics")
    return path


__all__ = [
    "LOGS",
    "RUN_CONFIG",
    "RUN_FILES",
    "check_run_folder",
    "load_run_config",
    "open_run",
    "save_run_config",
    "write_metrics",
]
