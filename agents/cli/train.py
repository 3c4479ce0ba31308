"""Train an agent on a rarl-gym env.

With no arguments: the RARL agent on RARL-Shapes-v0 (features extracted on first use and
cached), a progress bar, TensorBoard logs and a resumable checkpoint in runs/rarl-shapes, then
the test metrics as a table (and runs/rarl-shapes/metrics.json).

Examples:
    rarl-gym train
    rarl-gym train --resume --epochs 40                 # continue runs/rarl-shapes
    rarl-gym train --env RARL-VOC07-v0 --data-root ../shared/data/voc07 --eval-views 10
    rarl-gym train --env-kwargs '{"dataset_kwargs": {"num_images": 200}}' --epochs 2
    rarl-gym train --algo ppo --total-timesteps 300000  # Stable-Baselines3, runs/ppo-shapes
    rarl-gym train --algo cem                           # agents/custom/cem.py
    rarl-gym train --preset paper                       # the paper's formulation of the RARL agent

In a clone, ``python scripts/train_agent.py`` is the same command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
from collections.abc import Iterator
from pathlib import Path

from rarl_gym.cli import env_overrides, json_object, non_negative_int, positive_float, positive_int, print_results, run_cli
from rarl_gym.errors import ConfigError, NotWritableError, RarlGymError
from rarl_gym.io import sigterm_as_interrupt

#: Command-line options that set a TrainConfig field of the same name.
CONFIG_OPTIONS = ("epochs", "batch_size", "lr", "seed", "eval_views", "eval_split")
#: The agents trained through the env (Stable-Baselines3's and agents/custom's).
ENV_ALGOS = ("ppo", "a2c", "sac", "td3", "recurrentppo", "cem")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default=None, help="env id (default RARL-Shapes-v0, or the resumed run's)")
    p.add_argument(
        "--algo",
        default="rarl",
        choices=["rarl", *ENV_ALGOS],
        help="the agent (default rarl, the RARL agent; cem: agents/custom)",
    )
    p.add_argument("--data-root", default=None, help="dataset root (default $RARL_DATA/<dataset>)")
    p.add_argument("--backbone", default=None, help="backbone name (default efficientnet_lite0)")
    p.add_argument("--env-kwargs", default="{}", help="JSON object of env kwargs, e.g. '{\"glimpse_size\": 3}'")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<algo>-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir (same options; --epochs may grow)")
    p.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs over the training split (default: the preset's, 5; paper 15)"
    )
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
        "--preset",
        choices=("default", "paper"),
        default=None,
        help="rarl: a named configuration (agents/rarl/trainer.py PRESETS): default (frozen linear heads, "
        "context, the peak locator) or paper (LSTM head, softmax loss, linear Gaussian locator, top-k reward)",
    )
    p.add_argument("--paper", action="store_true", help="rarl: the same as --preset paper")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--save-every",
        type=positive_int,
        default=None,
        help="SB3 agents: save the run every this many env steps (default 10000; also at the end, Ctrl-C and SIGTERM)",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="rarl --resume: continue although the dataset on disk changed since the checkpoint (refused otherwise)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)

    def body() -> None:
        with sigterm_as_interrupt():  # kill / a scheduler's stop is Ctrl-C: what was kept is said, exit status 130
            _train(args)

    return run_cli(body, on_interrupt="the run keeps its last checkpoint, if one was written; continue it with --resume")


def _train(args: argparse.Namespace) -> None:
    if args.algo in ENV_ALGOS:
        return _train_env_agent(args)
    if args.total_timesteps is not None or args.n_envs is not None or args.save_every is not None:
        raise ConfigError(
            "--total-timesteps, --n-envs and --save-every are for the agents trained through the env "
            "(a RARL run saves its checkpoint after every epoch)",
            "use --epochs, --lr, --batch-size with --algo rarl",
        )
    from agents.rarl.trainer import PRESETS, TrainConfig, config_from_dict, hyperparams_from_json, load_checkpoint, train

    run_dir = args.run_dir or f"runs/{args.algo}-{(args.env or 'RARL-Shapes-v0').split('-')[1].lower()}"
    explicit = {name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None}
    preset = "paper" if args.paper else args.preset
    if preset is not None:
        explicit = {**PRESETS[preset], **explicit}
    if args.hyperparams is not None:  # any TrainConfig field, e.g. {"samples": 2, "head": "lstm"}
        explicit = {**explicit, **hyperparams_from_json(args.hyperparams)}
    overrides = env_overrides(args.env_kwargs, data_root=args.data_root, backbone=args.backbone)
    if overrides:
        explicit["env_kwargs"] = overrides
    if args.env is not None:
        explicit["env_id"] = args.env
    base = dataclasses.asdict(TrainConfig())
    if args.resume:  # start from the run's own configuration; what is given explicitly must agree
        base = {**base, **config_from_dict(load_checkpoint(Path(run_dir))["config"])}
        if "env_kwargs" in explicit:  # --backbone X on top of the run's env kwargs, not instead of them
            explicit["env_kwargs"] = {**base.get("env_kwargs", {}), **explicit["env_kwargs"]}
    config = TrainConfig(**{**base, **explicit, "run_dir": run_dir, "device": args.device, "progress": not args.no_progress})
    from agents.common.run import check_run_folder

    check_run_folder(run_dir)  # a file named tb where the logs go: refused before any work
    with _named_write_errors(run_dir):
        results = train(config, resume=args.resume, allow_data_change=args.allow_data_change)
    if results:
        print_results(results, Path(run_dir) / "metrics.json")


@contextlib.contextmanager
def _named_write_errors(run_dir: str) -> Iterator[None]:
    """A full disk or a read-only file system met while training into ``run_dir`` (TensorBoard's
    writer thread, a checkpoint) as a :class:`~rarl_gym.errors.RarlGymError` naming the fix."""
    from rarl_gym.io import disk_full_error, is_disk_full

    try:
        yield
    except OSError as err:
        if isinstance(err, RarlGymError):
            raise
        if is_disk_full(err):
            raise disk_full_error(Path(run_dir) / "tb", "the run's files in", err=err) from err
        if err.errno == errno.EROFS:
            raise NotWritableError(
                f"cannot write into the run folder {run_dir}: {err.strerror}",
                "train into a writable --run-dir; the checkpoint of the last finished epoch is kept",
            ) from err
        raise


def _train_env_agent(args: argparse.Namespace) -> None:
    """SB3 agents (agents/sb3) and custom ones (agents/custom): env steps instead of epochs."""
    rarl_only = [
        f"--{n.replace('_', '-')}"
        for n in ("epochs", "batch_size", "eval_views", "eval_split")
        if getattr(args, n) is not None
    ]
    rarl_only += ["--allow-data-change"] if args.allow_data_change else []
    rarl_only += ["--save-every"] if args.algo == "cem" and args.save_every is not None else []  # CEM saves every generation
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
        if args.save_every is not None:
            common["checkpoint_every"] = args.save_every
        from agents.sb3.algos import check_hyperparams

        check_hyperparams(args.algo, hyper)  # n_steps=0, learning_rate="x": named before anything is built
        results = train_sb3(args.algo, device=args.device, n_envs=args.n_envs, overrides=hyper or None, **common)
    print_results(results, Path(run_dir) / "metrics.json")
