"""The ``rarl-gym`` command: one subcommand per task, each with its own ``--help`` and examples.

::

    rarl-gym train                                   # the RARL agent on RARL-Shapes-v0, runs/rarl-shapes
    rarl-gym evaluate runs/rarl-shapes --views 10    # the metrics table and its JSON
    rarl-gym predict photos/ --run runs/rarl-shapes  # label your own images
    rarl-gym extract --dataset voc07 --splits train val
    rarl-gym visualize runs/rarl-shapes              # the paper's Figure 2
    rarl-gym ablate --epochs 12                      # the paper's Tables 3-6

Each subcommand is one module of this package holding its parser and ``main(argv)``
(:mod:`agents.cli.train`, ...); ``python -m agents.cli`` is the same command (what ``torchrun -m``
takes), and the files in a clone's ``scripts/`` are thin wrappers of these modules. This package is
the top of :mod:`agents`: nothing else in ``agents/`` imports it (docs/design.md, "Layers").
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module of this package, one line for ``rarl-gym --help``)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train an agent (RARL, Stable-Baselines3, CEM) on a rarl-gym env"),
    "evaluate": ("evaluate", "evaluate a trained run: the metrics table and its JSON"),
    "predict": ("predict", "label your own images with a trained run (table, JSON lines, CSV, pictures)"),
    "extract": ("extract", "extract (or finish extracting) the feature cache of dataset splits"),
    "visualize": ("visualize", "draw the paper's Figure 2: the regions a RARL agent looks at"),
    "ablate": ("ablate", "the paper's ablations (Tables 3-6) as one command"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rarl-gym")
    except PackageNotFoundError:  # a clone run without installing
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<10} {line}" for name, (_, line) in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(
        prog="rarl-gym",
        description="Multi-label image recognition as a Gymnasium RL problem, and the agents that solve it.",
        epilog=f"commands:\n{commands}\n\nexamples:\n" + __doc__.split("::")[1].split("\n\nEach")[0].strip("\n") + "\n\n"
        "`rarl-gym COMMAND --help` shows the options and examples of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="rarl-gym [-h] [--version] COMMAND [ARGS ...]",
    )
    p.add_argument("--version", action="version", version=f"rarl-gym {_version()}")
    p.add_argument("command", choices=list(SUBCOMMANDS), metavar="COMMAND", help=", ".join(SUBCOMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The ``rarl-gym`` entry point: ``rarl-gym COMMAND ARGS`` runs ``agents.cli.COMMAND.main(ARGS)``
    and returns its exit status (0 done, 2 an error with its fix, 130 Ctrl-C); ``rarl-gym`` alone or
    ``--help`` lists the commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        _parser().print_help()
        return 0
    if argv[0] in SUBCOMMANDS:
        command, args = argv[0], argv[1:]
    else:  # --help, --version, or an unknown command (argparse says which ones there are, exit 2)
        ns = _parser().parse_args(argv)
        command, args = ns.command, ns.args
    module = importlib.import_module(f"agents.cli.{SUBCOMMANDS[command][0]}")
    return int(module.main(args, prog=f"rarl-gym {command}"))


__all__ = ["SUBCOMMANDS", "main"]
