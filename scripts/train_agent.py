#!/usr/bin/env python
"""Train an agent on a rarl-gym env.

With no arguments: the paper's RARL agent on RARL-Shapes-v0 (features extracted on first use and
cached), a progress bar, TensorBoard logs and a resumable checkpoint in runs/rarl-shapes, then
the test metrics as a table (and runs/rarl-shapes/metrics.json).

Examples:
    python scripts/train_agent.py
    python scripts/train_agent.py --resume --epochs 40        # continue runs/rarl-shapes
    python scripts/train_agent.py --env RARL-VOC07-v0 --data-root ../shared/data/voc07 --eval-views 10
    python scripts/train_agent.py --env-kwargs '{"dataset_kwargs": {"num_images": 200}}' --epochs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import env_overrides, print_results, run_cli  # noqa: E402

#: Command-line options that set a TrainConfig field of the same name.
CONFIG_OPTIONS = ("epochs", "batch_size", "lr", "seed", "eval_views")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=None, help="env id (default RARL-Shapes-v0, or the resumed run's)")
    p.add_argument("--algo", default="rarl", choices=["rarl"], help="the agent (default rarl, the paper's)")
    p.add_argument("--data-root", default=None, help="dataset root (default $RARL_DATA/<dataset>)")
    p.add_argument("--backbone", default=None, help="backbone name (default efficientnet_lite0)")
    p.add_argument("--env-kwargs", default="{}", help='JSON object of env kwargs, e.g. \'{"glimpse_size": 3}\'')
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<algo>-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir (same options; --epochs may grow)")
    p.add_argument("--epochs", type=int, default=None, help="epochs over the training split (default 30)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 3e-4)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--eval-views", type=int, choices=[1, 10], default=None, help="1 view or the ten-view test")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: _train(args))


def _train(args: argparse.Namespace) -> None:
    from agents.rarl.trainer import TrainConfig, load_checkpoint, train

    run_dir = args.run_dir or f"runs/{args.algo}-{(args.env or 'RARL-Shapes-v0').split('-')[1].lower()}"
    explicit = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    overrides = env_overrides(args.env_kwargs, data_root=args.data_root, backbone=args.backbone)
    if overrides:
        explicit["env_kwargs"] = overrides
    if args.env is not None:
        explicit["env_id"] = args.env
    base = dataclasses.asdict(TrainConfig())
    if args.resume:  # start from the run's own configuration; what is given explicitly must agree
        base = {**base, **load_checkpoint(Path(run_dir))["config"]}
    config = TrainConfig(**{**base, **explicit, "run_dir": run_dir, "device": args.device, "progress": not args.no_progress})
    results = train(config, resume=args.resume)
    if results:
        print_results(results, Path(run_dir) / "metrics.json")


if __name__ == "__main__":
    sys.exit(main())
