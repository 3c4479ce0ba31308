#!/usr/bin/env python
"""Evaluate a trained RARL checkpoint: print the metrics table and write them as JSON.

Examples:
    python scripts/evaluate.py runs/rarl-shapes/checkpoint.pt
    python scripts/evaluate.py runs/rarl-voc07 --views 10 --markdown
    python scripts/evaluate.py runs/rarl-voc07 --split test --centers random --out /tmp/voc-random.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import run_cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pt, or the run folder holding it")
    p.add_argument("--split", default=None, help="split to evaluate (default: the dataset's evaluation split)")
    p.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    p.add_argument("--views", type=int, choices=[1, 10], default=1, help="1 view or the ten-view test")
    p.add_argument("--centers", default="learned", choices=["learned", "random", "center"], help="where the glimpses go")
    p.add_argument("--out", default=None, help="JSON file (default: <run folder>/eval-<split>-<centers>-<views>v.json)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def evaluate_checkpoint(args: argparse.Namespace) -> None:
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint, pick_device, predict
    from rarl_gym import metrics
    from rarl_gym.env_settings import EnvSettings

    ckpt = load_checkpoint(args.checkpoint)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    if args.data_root is not None:
        settings = settings.replace(root=args.data_root)
    split = args.split or settings.source.eval_split
    _, store = settings.source.open_split(split)
    device = pick_device(args.device)
    agent = agent_from_checkpoint(ckpt).to(device)
    crop = ckpt["config"].get("augment_crop", 0.875)
    probs, rewards = predict(agent, store, settings, centers=args.centers, views=args.views, crop=crop, device=device)
    report = metrics.evaluate(probs, store.labels, classes=store.classes)
    print(f"{settings.dataset} split {split!r}, {args.views} view(s), {args.centers} centres, mean reward {rewards.mean():.3f}")
    print(report.markdown() if args.markdown else report.table())
    ckpt_path = Path(args.checkpoint)
    run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
    out = Path(args.out) if args.out else run_dir / f"eval-{split}-{args.centers}-{args.views}v.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"split": split, "views": args.views, "centers": args.centers, "reward": float(rewards.mean()), **report.to_dict()}
    out.write_text(json.dumps(result, indent=1))
    print(f"\nJSON: {out}")


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: evaluate_checkpoint(args))


if __name__ == "__main__":
    sys.exit(main())
