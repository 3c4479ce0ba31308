"""Shared pieces of the command-line scripts: clean errors, env overrides, result tables."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rarl_gym.errors import ConfigError, RarlGymError

_T = TypeVar("_T")

# OpenMP threads that spin while they wait make torch many times slower as soon as another
# process shares the cores (seen here: 4.3 s instead of 0.5 s per training step on 2 cores).
# Scripts import this module before torch, so the setting takes effect; a user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_cli(fn: Callable[[], None], on_interrupt: str = "") -> int:
    """Run a script body and return the exit status: 0 when it finishes; a :class:`RarlGymError`
    prints its message (problem and fix) and gives 2; Ctrl-C prints ``interrupted`` followed by
    ``on_interrupt``, the script's own word on what was kept and how to continue (e.g. ``"the run
    keeps its last checkpoint; continue it with --resume"``), and gives 130."""
    try:
        fn()
    except RarlGymError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {on_interrupt}" if on_interrupt else "interrupted", file=sys.stderr)
        return 130
    return 0


def _number(text: str, cast: Callable[[str], _T], ok: Callable[[_T], bool], what: str) -> _T:
    """``cast(text)`` if it parses and passes ``ok``, else an argparse error saying it must be ``what``."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (``--batch-size 0`` and ``--epochs -1`` are refused with a message)."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0 (seeds)."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``--lr nan``, ``inf`` and ``0`` are refused)."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite positive number")


def json_object(text: str, flag: str, example: str) -> dict[str, Any]:
    """The JSON object given to the command-line option ``flag`` (a clear error otherwise)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{flag} is not valid JSON ({err})", f"write a JSON object, e.g. '{example}'") from err
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {type(value).__name__}", f"e.g. '{example}'")
    return value


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """``--dataset`` (a name of :data:`rarl_gym.sources.DATASETS`, spelled out here: the scripts import
    this module before torch) and ``--data-root``, with ``--root`` (the spelling of earlier
    versions) as a hidden alias."""
    p.add_argument("--dataset", default="shapes", choices=["shapes", "voc07", "coco"])
    p.add_argument("--data-root", default=None, help="dataset root (default $RARL_DATA/<dataset>)")
    p.add_argument("--root", dest="data_root", default=None, help=argparse.SUPPRESS)


def env_overrides(env_kwargs: str, **options: Any) -> dict[str, Any]:
    """Env kwargs from a JSON string plus the options given on the command line.

    ``data_root`` becomes the env's ``root``; options that are ``None`` are left out.
    """
    overrides = json_object(env_kwargs, "--env-kwargs", '{"glimpse_size": 3}')
    names = {"data_root": "root"}
    overrides.update({names.get(k, k): v for k, v in options.items() if v is not None})
    return overrides


def add_loader_options(p: argparse.ArgumentParser) -> None:
    """``--batch-size`` (images per forward pass) and ``--workers`` (image decoding processes), as
    extraction and predict take them."""
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="image decoding processes (default: one per core beyond two, at least one; 0: decode here)",
    )


def comparison_table(policies: dict[str, dict]) -> str:
    """One line per row: mAP (area and VOC07), CF1, OF1, mean reward and, where the split has boxes,
    pointing and CorLoc (``-`` for a row without regions), in percent."""
    cols = ["mAP_area", "mAP_voc07", "CF1", "OF1", "reward"]
    if any("pointing" in row for row in policies.values()):
        cols += ["pointing", "corloc"]

    def cell(row: dict, c: str) -> str:
        return f"{'-':>11}" if row.get(c) is None else f"{100 * row[c]:>11.1f}"

    head = f"{'row':<12}" + "".join(f"{c:>11}" for c in cols)
    return "\n".join([head] + [f"{name:<12}" + "".join(cell(row, c) for c in cols) for name, row in policies.items()])


def print_results(results: dict, json_path: Path | None = None) -> None:
    """Print the metrics of the learned policy and the comparison of centre policies."""
    report = results["reports"]["learned"]
    print(f"\nTest metrics on split {results['split']!r} ({results['views']} view(s), learned centres):")
    print(report.table())
    print(
        "\nSame trained model with other centres (peak: the t-th most likely class's map peak; xM: M sequences averaged);"
        "\noracle: per image the best of N centre sequences (1 view, uses the labels); global: the global-image linear"
        "\nclassifier; csra: mean + lambda max over the map cells; windows: max over ~100 sliding windows (MIL);"
        "\npointing / corloc: does the region that gives each true label lie on its object (centre inside / IoU >= 0.5):"
    )
    print(comparison_table(results["policies"]))
    if json_path is not None:
        print(f"\nJSON: {json_path}")


__all__ = [
    "add_dataset_options",
    "add_loader_options",
    "comparison_table",
    "env_overrides",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "print_results",
    "run_cli",
]
