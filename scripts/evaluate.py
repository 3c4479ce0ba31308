#!/usr/bin/env python
"""Evaluate a trained agent: print the metrics table and write them as JSON.

Takes a RARL checkpoint.pt, an SB3 model.zip or a CEM cem.npz (agents/custom), or the run folder.

Examples:
    python scripts/evaluate.py runs/rarl-shapes/checkpoint.pt
    python scripts/evaluate.py runs/rarl-voc07 --views 10 --markdown
    python scripts/evaluate.py runs/rarl-voc07 --split test --centers random --out /tmp/voc-random.json
    python scripts/evaluate.py runs/ppo-shapes/model.zip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    from rarl_gym.glimpse import CENTER_POLICIES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pt / model.zip / cem.npz, or the run folder holding it")
    p.add_argument("--split", default=None, help="split to evaluate (default: the dataset's evaluation split)")
    p.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    p.add_argument("--views", type=int, choices=[1, 10], default=1, help="1 view or the ten-view test")
    p.add_argument("--centers", dest="center_policy", default="learned", choices=CENTER_POLICIES, help="where the glimpses go")
    p.add_argument("--out", default=None, help="JSON file (default: <run folder>/eval-<split>-<centers>-<views>v.json)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument(
        "--compare",
        action="store_true",
        help="every row of the training table: learned, random, center and grid centres, and the global classifier",
    )
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"split": split, "views": 1, "centers": args.center_policy, "reward": reward, **report.to_dict()}, indent=1)
    )
    print(f"\nJSON: {out}")


def evaluate_checkpoint(args: argparse.Namespace) -> None:
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint, predict
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
    probs, rewards = predict(agent, store, settings, centers=args.center_policy, views=args.views, crop=crop, device=device)
    report = metrics.evaluate(probs, store.labels, classes=store.classes)
    print(
        f"{settings.dataset} split {split!r}, {args.views} view(s), {args.center_policy} centres, "
        f"mean reward {rewards.mean():.3f}"
    )
    print(report.markdown() if args.markdown else report.table())
    out = Path(args.out) if args.out else run_dir / f"eval-{split}-{args.center_policy}-{args.views}v.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "split": split,
        "views": args.views,
        "centers": args.center_policy,
        "reward": float(rewards.mean()),
        **report.to_dict(),
    }
    out.write_text(json.dumps(result, indent=1))
    print(f"\nJSON: {out}")


def _compare(args, ckpt, agent, store, settings, device, run_dir: Path, split: str) -> None:
    """Every row of the trainer's final table (all centre policies and the global classifier)."""
    from agents.rarl.trainer import TrainConfig, evaluate_agent
    from rarl_gym.cli import print_results

    config = TrainConfig(**{**ckpt["config"], "eval_views": args.views})
    _, train_store = settings.source.open_split(settings.split)
    results = evaluate_agent(agent, store, settings, config, device=device, train_store=train_store)
    out = Path(args.out) if args.out else run_dir / f"compare-{split}-{args.views}v.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: v for k, v in results.items() if k != "reports"}, indent=1))
    print_results(results, out)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: evaluate_checkpoint(args))


if __name__ == "__main__":
    sys.exit(main())
