#!/usr/bin/env python
"""Extract (or finish extracting) the feature cache of dataset splits.

Envs and the trainer extract on first use; this script does it ahead of time, e.g. on a GPU
machine, and reports the time per split. An interrupted run resumes where it stopped.

Examples:
    python scripts/extract_features.py --dataset voc07 --root ../shared/data/voc07 --splits train val
    python scripts/extract_features.py --dataset coco --root ../shared/data/coco --splits train2017 val2017 --input-size 448
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import run_cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="shapes", choices=["shapes", "voc07", "coco"])
    p.add_argument("--root", default=None, help="dataset root (default $RARL_DATA/<dataset>)")
    p.add_argument("--splits", nargs="+", default=None, help="splits (default: the training and evaluation splits)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--input-size", type=int, default=None, help="backbone input side (default 256 for Shapes, 320 otherwise)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="default $RARL_CACHE or ~/.cache/rarl_gym")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def extract(args: argparse.Namespace) -> None:
    from rarl_gym.device import pick_device
    from rarl_gym.features.store import extract_features
    from rarl_gym.sources import FeatureSource

    source = FeatureSource(dataset=args.dataset, root=args.root, backbone=args.backbone, input_size=args.input_size, cache_dir=args.cache_dir)
    device = pick_device(args.device)
    for split in args.splits or [source.train_split, source.eval_split]:
        dataset = source.make_dataset(split)
        start = time.perf_counter()
        store = extract_features(dataset, args.backbone, source.size, cache_dir=args.cache_dir, batch_size=args.batch_size, device=device)
        seconds = time.perf_counter() - start
        print(f"{args.dataset}/{split}: {len(store)} images, features {tuple(store.features.shape)} in {seconds:.1f} s -> {store.path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: extract(args))


if __name__ == "__main__":
    sys.exit(main())
