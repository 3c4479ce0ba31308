#!/usr/bin/env python
"""Feature extraction throughput, before and after, against the backbone's best forward.

For the first ``--images`` images of a split (a temporary cache: ``--cache-dir``, removed at the
end unless ``--keep``), times:

* the forward alone on pre-decoded pixels (channels-last, ``torch.inference_mode``): the ceiling;
* decoding + resizing alone, in the main process;
* **before**: the extraction loop as it was (NCHW forward under ``no_grad``, images decoded in the
  main process between forwards, a memory-map write + flush + progress save per batch);
* **after**: :func:`rarl_gym.features.store.extract_features` with 0, 1 and 2 loader workers
  (the whole call: backbone build, probe, extraction, header reads, ``meta.json``).

Examples (see BENCHMARKS.md):
    python benchmarks/extraction_speed.py --dataset shapes --images 300
    python benchmarks/extraction_speed.py --dataset voc07 --data-root ../shared/data/voc07 --images 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import add_dataset_options, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_options(p)
    p.add_argument("--split", default=None, help="default: the training split")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cache-dir", default=None, help="temporary cache (default: a new folder under /tmp)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=None, help="JSON results")
    return p.parse_args(argv)


def first_n(dataset, n: int):
    """The first ``n`` images of ``dataset`` as a dataset of its own (its own cache key)."""
    from rarl_gym.data.base import MultiLabelDataset

    class FirstN(MultiLabelDataset):
        name, split, classes = dataset.name, dataset.split, dataset.classes

        def __len__(self):
            return n

        def load_image(self, index):
            return dataset.load_image(index)

        def labels(self):
            return dataset.labels()[:n]

        def image_id(self, index):
            return dataset.image_id(index)

        def image_size(self, index):
            return dataset.image_size(index)

        def cache_key(self):
            return f"{dataset.cache_key()}-first{n}"

    return FirstN()


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from rarl_gym.features.backbones import build_backbone
    from rarl_gym.features.inference import forward
    from rarl_gym.features.store import extract_features
    from rarl_gym.sources import FeatureSource

    source = FeatureSource(dataset=args.dataset, root=args.data_root, backbone=args.backbone, input_size=args.input_size)
    split = args.split or source.train_split
    full = source.make_dataset(split)
    n = min(args.images, len(full))
    dataset = first_n(full, n)
    size, bs = source.size, args.batch_size
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="rarl-extract-bench-"))
    results = {
        "dataset": args.dataset,
        "split": split,
        "images": n,
        "input_size": size,
        "batch_size": bs,
        "threads": torch.get_num_threads(),
        "rows": {},
    }
    print(
        f"{args.dataset}/{split}: first {n} images at {size} px, {args.backbone}, "
        f"batch {bs}, {torch.get_num_threads()} threads; cache {cache}",
        flush=True,
    )

    def report(name: str, seconds: float) -> None:
        results["rows"][name] = {"seconds": round(seconds, 2), "images_per_s": round(n / seconds, 2)}
        print(f"{name:<52} {seconds:8.1f} s {n / seconds:8.2f} images/s", flush=True)

    net = build_backbone(args.backbone)
    start = time.perf_counter()
    pixels = torch.cat(
        [net.pixels([dataset.load_image(i) for i in range(lo, min(n, lo + bs))], size) for lo in range(0, n, bs)]
    )
    report("decode + resize alone (main process)", time.perf_counter() - start)
    forward(net, pixels[:bs])  # warm-up
    start = time.perf_counter()
    for lo in range(0, n, bs):
        forward(net, pixels[lo : lo + bs])
    report("forward alone, channels-last (the ceiling)", time.perf_counter() - start)
    del pixels

    # before: the loop as it was (NCHW, decode between forwards, write + flush + progress per batch)
    start = time.perf_counter()
    old = build_backbone(args.backbone)
    old.module.to(memory_format=torch.contiguous_format)
    before = cache / "before"
    before.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        probe = old.module(old.preprocess([dataset.load_image(0)], size))
        shape = (n, *probe.shape[1:])
        features = np.memmap(before / "features.f16", dtype=np.float16, mode="w+", shape=shape)
        done = np.zeros(n, dtype=bool)
        for lo in range(0, n, bs):
            rows = np.arange(lo, min(n, lo + bs))
            x = old.preprocess([dataset.load_image(int(i)) for i in rows], size)
            features[rows] = old.module(x).to("cpu", torch.float16).numpy()
            features.flush()
            done[rows] = True
            np.save(before / "progress.npy", done)
    del features
    report("before: NCHW, decode in between, flush per batch", time.perf_counter() - start)

    for workers in args.workers:
        start = time.perf_counter()
        extract_features(
            dataset, args.backbone, size, cache_dir=cache / f"after-{workers}", batch_size=bs, progress=False, workers=workers
        )
        report(f"after: extract_features, {workers} loader worker(s)", time.perf_counter() - start)
    ceiling = results["rows"]["forward alone, channels-last (the ceiling)"]["images_per_s"]
    best = max(v["images_per_s"] for k, v in results["rows"].items() if k.startswith("after"))
    results["after_best_over_ceiling"] = round(best / ceiling, 3)
    results["after_best_over_before"] = round(
        best / results["rows"]["before: NCHW, decode in between, flush per batch"]["images_per_s"], 2
    )
    print(
        f"best 'after' = {100 * best / ceiling:.0f} % of the forward-alone "
        f"throughput, {results['after_best_over_before']:.2f}x 'before'"
    )
    if not args.keep:
        shutil.rmtree(cache, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
