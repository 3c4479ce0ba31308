"""Evaluate a trained agent: print the metrics table and write them as JSON.

Takes a RARL checkpoint.pt, an SB3 model.zip or a CEM cem.npz (agents/custom), or the run folder.

Examples:
    rarl-gym evaluate runs/rarl-shapes/checkpoint.pt
    rarl-gym evaluate runs/rarl-voc07 --views 10 --markdown
    rarl-gym evaluate runs/rarl-voc07 --split test --centers random --out /tmp/voc-random.json
    rarl-gym evaluate runs/ppo-shapes/model.zip

In a clone, ``python scripts/evaluate.py`` is the same command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rarl_gym.cli import positive_int, run_cli


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    from agents.rarl.evaluate import RARL_ROWS

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pt / model.zip / cem.npz, or the run folder holding it")
    p.add_argument("--split", default=None, help="split to evaluate (default: the dataset's evaluation split)")
    p.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    p.add_argument("--views", type=int, choices=[1, 10], default=1, help="1 view or the ten-view test")
    p.add_argument(
        "--centers",
        dest="center_policy",
        default="learned",
        choices=RARL_ROWS,
        help="where the glimpses go (peak: RARL agents with the linear head only)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=1,
        help="average M sampled centre sequences per image (test-time Monte Carlo; RARL agents); "
        "with --compare: adds the 'learned xM' and 'random xM' rows",
    )
    p.add_argument("--out", default=None, help="JSON file (default: <run folder>/eval-<split>-<centers>-<views>v.json)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument(
        "--compare",
        action="store_true",
        help="every row of the training table: learned, random, center and grid centres, and the global classifier",
    )
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def _write_json(out: Path, result: dict, args: argparse.Namespace) -> None:
    """The metrics as JSON at ``out``, atomically (never a 0-byte file): a read-only run folder or a
    full disk is a named error saying to pass ``--out`` (the table is printed already)."""
    from agents.cli._output import output_file, write_json

    output_file(str(out), "--out")
    write_json(out, result, "the metrics", "--out")


def _env_agent_file(path: Path) -> str | None:
    """``model.zip`` (SB3) or ``cem.npz`` (CEM) when ``path`` is one or a run folder holding one."""
    for name in ("model.zip", "cem.npz"):
        if path.name == name or (path.is_dir() and (path / name).exists()):
            return name
    return None


def evaluate_env_agent(args: argparse.Namespace, kind: str) -> None:
    """An agent trained through the env (agents/sb3, agents/custom): one episode per image."""
    from agents.common.evaluation import check_views, evaluate_policy_on_split
    from rarl_gym import metrics
    from rarl_gym.env_settings import EnvSettings

    check_views(args.views)
    policy: Any
    if kind == "model.zip":
        from agents.sb3.train import load_model

        policy, config = load_model(args.checkpoint, args.device)
    else:
        from agents.custom.cem import load_cem

        policy, config = load_cem(args.checkpoint)
    env_kwargs = {**config["env_kwargs"], **({"root": args.data_root} if args.data_root else {})}
    settings = EnvSettings.from_env_id(config["env_id"], env_kwargs)
    split = args.split or settings.source.eval_split
    pred = evaluate_policy_on_split(
        policy, config["env_id"], env_kwargs, split, center_policy=args.center_policy, seed=config.get("seed", 0)
    )
    report = metrics.evaluate(pred.probs, pred.labels, classes=pred.classes)
    reward = float(pred.rewards.mean())
    print(f"{settings.dataset} split {split!r}, {config['algo']}, {args.center_policy} centres, mean reward {reward:.3f}")
    print(report.markdown() if args.markdown else report.table())
    path = Path(args.checkpoint)
    out = (
        Path(args.out) if args.out else (path if path.is_dir() else path.parent) / f"eval-{split}-{args.center_policy}-1v.json"
    )
    result = {"split": split, "views": 1, "centers": args.center_policy, "reward": reward, **report.to_dict()}
    _write_json(out, result, args)
    print(f"\nJSON: {out}")


def evaluate_checkpoint(args: argparse.Namespace) -> None:
    from agents.rarl.evaluate import predict
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from rarl_gym import metrics
    from rarl_gym.device import pick_device
    from rarl_gym.env_settings import EnvSettings

    kind = _env_agent_file(Path(args.checkpoint))
    if kind is not None:
        return evaluate_env_agent(args, kind)
    ckpt = load_checkpoint(args.checkpoint)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    if args.data_root is not None:
        settings = settings.replace(root=args.data_root)
    split = args.split or settings.source.eval_split
    _, store = settings.source.open_split(split)
    device = pick_device(args.device)
    agent = agent_from_checkpoint(ckpt).to(device)
    crop = ckpt["config"].get("augment_crop", 0.875)
    ckpt_path = Path(args.checkpoint)
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    if args.compare:
        return _compare(args, ckpt, agent, store, settings, device, run_dir, split)
    pred = predict(
        agent,
        store,
        settings,
        centers=args.center_policy,
        views=args.views,
        samples=args.samples,
        view_crop=crop,
        device=device,
    )
    probs, rewards = pred.probs, pred.rewards
    report = metrics.evaluate(probs, store.labels, classes=store.classes)
    found = _grounding(agent, store, settings, split, pred.label_boxes, args, device)
    print(
        f"{settings.dataset} split {split!r}, {args.views} view(s), {args.center_policy} centres x{args.samples}, "
        f"mean reward {rewards.mean():.3f}"
        + (f", pointing {found['pointing']:.1%}, CorLoc {found['corloc']:.1%}" if found else "")
    )
    print(report.markdown() if args.markdown else report.table())
    out = Path(args.out) if args.out else run_dir / f"eval-{split}-{args.center_policy}-{args.views}v.json"
    result = {
        "split": split,
        "views": args.views,
        "centers": args.center_policy,
        "samples": args.samples,
        "reward": float(rewards.mean()),
        **report.to_dict(),
        **(found or {}),
    }
    _write_json(out, result, args)
    print(f"\nJSON: {out}")


def _grounding(
    agent: Any, store: Any, settings: Any, split: str, label_boxes: Any, args: argparse.Namespace, device: Any
) -> dict | None:
    """Pointing and CorLoc of the label-giving regions where the split has boxes (one view: with
    ``--views 10`` the whole-image view's regions), else ``None``."""
    from agents.rarl.evaluate import predict, split_objects
    from rarl_gym import metrics

    objects = split_objects(settings, split)
    if objects is None:
        return None
    if label_boxes is None:
        one_view = predict(agent, store, settings, centers=args.center_policy, samples=args.samples, device=device)
        label_boxes = one_view.label_boxes
    return metrics.grounding(label_boxes, store.labels, objects)


def _compare(
    args: argparse.Namespace,
    ckpt: dict,
    agent: Any,
    store: Any,
    settings: Any,
    device: Any,
    run_dir: Path,
    split: str,
) -> None:
    """Every row of the trainer's final table (all centre policies and the global classifier)."""
    from agents.rarl.evaluate import split_objects
    from agents.rarl.trainer import TrainConfig, config_from_dict, evaluate_agent
    from rarl_gym.cli import print_results

    config = TrainConfig(**{**config_from_dict(ckpt["config"]), "eval_views": args.views, "eval_samples": args.samples})
    _, train_store = settings.source.open_split(settings.split)
    results = evaluate_agent(
        agent, store, settings, config, device=device, train_store=train_store, objects=split_objects(settings, split)
    )
    out = Path(args.out) if args.out else run_dir / f"compare-{split}-{args.views}v.json"
    print_results(results)  # the table first: a run folder that cannot be written still shows it
    _write_json(out, {k: v for k, v in results.items() if k != "reports"}, args)
    print(f"\nJSON: {out}")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    return run_cli(lambda: evaluate_checkpoint(args))
