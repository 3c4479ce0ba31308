"""Extract (or finish extracting) the feature cache of dataset splits.

Envs and the trainer extract on first use; this script does it ahead of time, e.g. on a GPU
machine, and reports the time per split. An interrupted run resumes where it stopped.

Examples:
    rarl-gym extract --dataset voc07 --data-root ../shared/data/voc07 --splits train val
    rarl-gym extract --dataset coco --data-root ../shared/data/coco \\
        --splits train2017 val2017 --input-size 448
    # 4 processes (or GPUs) share one cache:
    torchrun --nproc_per_node=4 -m agents.cli extract --dataset coco --splits train2014

Under torchrun every rank extracts its share of the rows into the same cache file (which must be
on a file system all ranks see) and rank 0 finalises the entry.

In a clone, ``python scripts/extract_features.py`` is the same command.
"""

from __future__ import annotations

import argparse
import time

from rarl_gym.cli import add_dataset_options, add_loader_options, positive_int, run_cli


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_options(p)
    p.add_argument("--splits", nargs="+", default=None, help="splits (default: the training and evaluation splits)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument(
        "--input-size", type=positive_int, default=None, help="backbone input side (default 256 for Shapes, 320 otherwise)"
    )
    add_loader_options(p)
    p.add_argument("--dataset-kwargs", default="{}", help="JSON, e.g. '{\"num_images\": 500}' for Shapes")
    p.add_argument("--cache-dir", default=None, help="default $RARL_CACHE or ~/.cache/rarl_gym")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def extract(args: argparse.Namespace) -> None:
    import os

    import torch

    from rarl_gym.cli import json_object
    from rarl_gym.device import pick_device
    from rarl_gym.sources import FeatureSource

    dataset_kwargs = json_object(args.dataset_kwargs, "--dataset-kwargs", '{"num_images": 500}')
    source = FeatureSource(
        dataset=args.dataset,
        root=args.data_root,
        backbone=args.backbone,
        input_size=args.input_size,
        cache_dir=args.cache_dir,
        dataset_kwargs=dataset_kwargs,
    )
    device = pick_device(args.device)
    rank = int(os.environ.get("RANK", "0"))
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        device = pick_device(f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}")
    for split in args.splits or [source.train_split, source.eval_split]:
        dataset = source.make_dataset(split)
        start = time.perf_counter()
        store = source.feature_store(
            dataset, batch_size=args.batch_size, device=device, workers=args.workers, progress=rank == 0
        )
        seconds = time.perf_counter() - start
        if rank == 0:
            print(
                f"{args.dataset}/{split}: {len(store)} images, features "
                f"{tuple(store.features.shape)} in {seconds:.1f} s -> {store.path}"
            )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    return run_cli(lambda: extract(args), on_interrupt="the finished images are kept; the same command continues")
