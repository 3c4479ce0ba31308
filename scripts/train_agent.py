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
    python scripts/train_agent.py --algo ppo --total-timesteps 300000   # Stable-Baselines3, runs/ppo-shapes
    python scripts/train_agent.py --algo cem                            # agents/custom/cem.py
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import env_overrides, json_object, non_negative_int, positive_float, positive_int, print_results, run_cli
from rarl_gym.errors import ConfigError

#: Command-line options that set a TrainConfig field of the same name.
CONFIG_OPTIONS = ("epochs", "batch_size", "lr", "seed", "eval_views", "eval_split")
#: The agents trained through the env (Stable-Baselines3's and agents/custom's).
ENV_ALGOS = ("ppo", "a2c", "sac", "td3", "recurrentppo", "cem")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=None, help="env id (default RARL-Shapes-v0, or the resumed run's)")
    p.add_argument(
        "--algo",
        default="rarl",
        choices=["rarl", *ENV_ALGOS],
        help="the agent (default rarl, the paper's; cem: agents/custom)",
    )
    p.add_argument("--data-root", default=None, help="dataset root (default $RARL_DATA/<dataset>)")
    p.add_argument("--backbone", default=None, help="backbone name (default efficientnet_lite0)")
    p.add_argument("--env-kwargs", default="{}", help="JSON object of env kwargs, e.g. '{\"glimpse_size\": 3}'")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<algo>-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir (same options; --epochs may grow)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs over the training split (default 15)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per batch (default 64)")
    p.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--seed", type=non_negative_int, default=None)
    p.add_argument("--eval-views", type=int, choices=[1, 10], default=None, help="1 view or the ten-view test")
    p.add_argument(
        "--eval-split", default=None, help="split of the final evaluation (default: the dataset's: test, val, val2014)"
    )
    p.add_argument(
        "--total-timesteps",
        type=positive_int,
        default=None,
        help="env steps of the run, not rarl (default 300000; on --resume the new total)",
    )
    p.add_argument("--n-envs", type=positive_int, default=None, help="parallel envs of an SB3 agent (default 8)")
    p.add_argument(
        "--hyperparams",
        default=None,
        help="JSON object: for an SB3 agent, constructor kwargs over agents/sb3/algos.py's defaults, "
        "e.g. '{\"gradient_steps\": 1}'; "
        'for rarl, TrainConfig fields (agents/rarl/trainer.py), e.g. \'{"samples": 2, "locator": "linear"}\'',
    )
    p.add_argument(
        "--paper",
        action="store_true",
        help="rarl: the paper's formulation (LSTM head, softmax loss, linear Gaussian locator, top-k reward)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(
        lambda: _train(args), on_interrupt="the run keeps its last checkpoint, if one was written; continue it with --resume"
    )


def _train(args: argparse.Namespace) -> None:
    if args.algo in ENV_ALGOS:
        return _train_env_agent(args)
    if args.total_timesteps is not None or args.n_envs is not None:
        raise ConfigError(
            "--total-timesteps and --n-envs are for the agents trained through the env",
            "use --epochs, --lr, --batch-size with --algo rarl",
        )
    from agents.rarl.trainer import PAPER, TrainConfig, hyperparams_from_json, load_checkpoint, train

    run_dir = args.run_dir or f"runs/{args.algo}-{(args.env or 'RARL-Shapes-v0').split('-')[1].lower()}"
    explicit = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    if args.paper:
        explicit = {**PAPER, **explicit}
    if args.hyperparams is not None:  # any TrainConfig field, e.g. {"samples": 2, "head": "lstm"}
        explicit = {**explicit, **hyperparams_from_json(args.hyperparams)}
    overrides = env_overrides(args.env_kwargs, data_root=args.data_root, backbone=args.backbone)
    if overrides:
        explicit["env_kwargs"] = overrides
    if args.env is not None:
        explicit["env_id"] = args.env
    base = dataclasses.asdict(TrainConfig())
    if args.resume:  # start from the run's own configuration; what is given explicitly must agree
        base = {**base, **load_checkpoint(Path(run_dir))["config"]}
        if "env_kwargs" in explicit:  # --backbone X on top of the run's env kwargs, not instead of them
            explicit["env_kwargs"] = {**base.get("env_kwargs", {}), **explicit["env_kwargs"]}
    config = TrainConfig(**{**base, **explicit, "run_dir": run_dir, "device": args.device, "progress": not args.no_progress})
    results = train(config, resume=args.resume)
    if results:
        print_results(results, Path(run_dir) / "metrics.json")


def _train_env_agent(args: argparse.Namespace) -> None:
    """SB3 agents (agents/sb3) and custom ones (agents/custom): env steps instead of epochs."""
    rarl_only = [
        f"--{n.replace('_', '-')}"
        for n in ("epochs", "batch_size", "eval_views", "eval_split")
        if getattr(args, n) is not None
    ]
    if rarl_only or (args.algo == "cem" and (args.lr is not None or args.n_envs is not None or args.hyperparams is not None)):
        raise ConfigError(
            f"{', '.join(rarl_only) or '--lr / --n-envs / --hyperparams'} do(es) not apply to --algo {args.algo}",
            "use --total-timesteps",
        )
    run_dir = args.run_dir or f"runs/{args.algo}-{(args.env or 'RARL-Shapes-v0').split('-')[1].lower()}"
    overrides = env_overrides(args.env_kwargs, data_root=args.data_root, backbone=args.backbone)
    common = dict(
        env_id=args.env,
        env_kwargs=overrides,
        run_dir=run_dir,
        seed=args.seed,
        progress=not args.no_progress,
        resume=args.resume,
    )
    if args.total_timesteps is not None:
        common["total_timesteps"] = args.total_timesteps
    if args.algo == "cem":
        from agents.custom.cem import train_cem

        results = train_cem(**common)
    else:
        from agents.sb3.train import train_sb3

        hyper = json_object(args.hyperparams, "--hyperparams", '{"gradient_steps": 1}') if args.hyperparams is not None else {}
        if args.lr is not None:
            hyper["learning_rate"] = args.lr
        results = train_sb3(args.algo, device=args.device, n_envs=args.n_envs, overrides=hyper or None, **common)
    print_results(results, Path(run_dir) / "metrics.json")


if __name__ == "__main__":
    sys.exit(main())
