#!/usr/bin/env python
"""Inference speed, side by side in one run: the backbone alone, RARL (1 and 10 views), and an
HCP-style proposal pipeline on the same backbone, with accuracy rows on the evaluation split.

Rows (per image and images/s, ``--batch-size`` images per forward unless said otherwise):

* (a) the backbone's forward alone on the source-size input (the run's input size);
* (b) RARL, single view: the forward, then the agent's T glimpses on the feature map
  (``agents.predict.Predictor``: probabilities and the pixel boxes);
* (c) RARL, ten views: the same, the ten views cut from one feature map;
* (e) RARL, M sequences (``--samples``, default 4 and 16): M sequences sampled from the learned
  locator, one view (``Predictor(centers="learned").predict_maps(..., samples=M)``);
* (d) a proposal pipeline: about 100 multi-scale windows cut from the image (``--proposals``:
  1 + 2x2 + 3x3 + 5x5 + 8x8 = 103 square windows of 100 / 80 / 60 / 45 / 30 % of the side),
  each resized to the source size and run through the backbone, scored by the global-image
  linear classifier (fitted on the training split's pooled features, as the trainer's ``global``
  row), fused by category-wise max (HCP, Wei et al. 2016).

Rows (a)-(c) and (e) are timed batched and one image at a time (``--single-images``), the rows
of each group alternated inside each of ``--repeat`` rounds (medians reported), so that a slow
spell of the machine hits all of them alike; then the agent parts alone on the maps, the same
way. ``ratios`` holds every RARL row over the forward (and the proposal pipeline over RARL),
``ratios_from_parts`` the same from (forward + agent part alone) / forward, ``ensembles`` a row
per M (1: the predictor's default centres) with its cost next to its mAP area on the whole
evaluation split from the cache.

Decoding and resizing the JPEG is the same for (a)-(c) and is timed as its own row. Accuracy
(mAP area) of (b), (c), (d) and the global classifier on the first ``--accuracy-images`` images of
the evaluation split (the proposal pipeline runs 103 forwards per image: a subset keeps it short).

A second table times the forward alone in NCHW and channels-last, at batch 1 / 8 / 16 / 32 and
1 / 2 threads (``--formats``).

Example (2 CPU cores, see BENCHMARKS.md):
    python benchmarks/inference_speed.py --run runs/rarl-voc07 --data-root ../shared/data/voc07
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/rarl-shapes", help="a RARL run folder or checkpoint.pt")
    p.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    p.add_argument("--images", type=int, default=32, help="images timed for rows (a)-(c)")
    p.add_argument("--proposal-images", type=int, default=2, help="images timed for row (d)")
    p.add_argument("--accuracy-images", type=int, default=48, help="evaluation images of the accuracy rows (0: skip)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--single-images", type=int, default=8, help="images of the one-image-at-a-time rows")
    p.add_argument("--samples", type=int, nargs="*", default=[4, 16], help="M of the M-sequence ensemble rows (none: no rows)")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds, rows alternated in each (the median is reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--formats", action="store_true", help="also time the forward in NCHW / channels-last, batch 1-32, 1-2 threads"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


#: The proposal windows: (fraction of the side, positions per axis).
PROPOSAL_GRID = ((1.0, 1), (0.8, 2), (0.6, 3), (0.45, 5), (0.3, 8))


def proposal_windows() -> list[tuple[float, float, float, float]]:
    """``(x1, y1, x2, y2)`` fractions of the image, multi-scale sliding windows (103 with the default grid)."""
    windows = []
    for side, n in PROPOSAL_GRID:
        starts = [0.0] if n == 1 else [i * (1.0 - side) / (n - 1) for i in range(n)]
        windows += [(x, y, x + side, y + side) for y in starts for x in starts]
    return windows


def timed(fn, repeat: int, sync=lambda: None) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Bench:
    """What every part of the benchmark reads: the run's predictor and the first images of the evaluation split."""

    args: argparse.Namespace
    predictor: Any  # agents.predict.Predictor of a RARL run
    sync: Callable[[], Any]  # waits for the device (CUDA), else does nothing
    split: str
    dataset: Any  # the evaluation split's dataset
    images: list  # the first n PIL images
    sizes: list[tuple[int, int]]
    pixels: Any  # [n, 3, N, N] uint8, decoded and resized
    rows: dict[str, dict] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.images)

    def row(self, name: str, seconds: float, images_done: int, note: str = "") -> None:
        """Record and print a timing row: ``seconds`` for ``images_done`` images."""
        per = seconds / images_done
        self.rows[name] = {"ms_per_image": round(1000 * per, 2), "images_per_s": round(1 / per, 2), "note": note}
        print(f"{name:<44} {1000 * per:9.1f} ms/image {1 / per:9.2f} images/s  {note}", flush=True)

    def batches(self, fn: Callable[[int, int], Any]) -> Callable[[], None]:
        """A run over the n images, ``fn(lo, hi)`` per batch of ``--batch-size``."""

        def run() -> None:
            for lo in range(0, self.n, self.args.batch_size):
                fn(lo, min(self.n, lo + self.args.batch_size))

        return run


def benchmark(args: argparse.Namespace) -> dict:
    """All the tables (see the module docstring); written as JSON to ``--out`` when given."""
    import torch

    bench = load_bench(args)
    time_rows(bench)
    proposals, scorer, windows = proposal_pipeline(bench)
    m = min(args.proposal_images, bench.n)
    bench.row(
        f"(d) proposals ({len(windows)} windows)",
        timed(lambda: [proposals(bench.images[i]) for i in range(m)], max(1, args.repeat - 2), bench.sync),
        m,
        f"{len(windows)} crops + resizes + forwards, classifier, max",
    )
    ratios = speed_ratios(bench.rows, len(windows), args.samples)
    from_parts = part_ratios(bench.rows)
    accuracy = accuracy_rows(bench, scorer, proposals, len(windows)) if args.accuracy_images else {}
    ensembles = ensemble_rows(bench, ratios, accuracy=bool(args.accuracy_images))
    formats = format_rows(bench) if args.formats and bench.predictor.device.type == "cpu" else {}
    settings = bench.predictor.settings
    results = {
        "dataset": settings.dataset,
        "split": bench.split,
        "backbone": settings.backbone,
        "input_size": bench.predictor.input_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "device": str(bench.predictor.device),
        "rows": bench.rows,
        "ratios": ratios,
        "ratios_from_parts": from_parts,
        "accuracy": accuracy,
        "ensembles": ensembles,
        "formats": formats,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(f"\nJSON: {args.out}")
    return results


def load_bench(args: argparse.Namespace) -> Bench:
    """The run's predictor (a RARL run, or a ConfigError) and the first ``--images`` images of the evaluation split."""
    import torch

    from agents.predict import Predictor
    from rarl_gym.features.backbones import Backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    predictor = Predictor.from_run(args.run, device=args.device, data_root=args.data_root)
    if predictor.kind != "rarl":
        from rarl_gym.errors import ConfigError

        raise ConfigError("the benchmark times a RARL run", "pass a run folder holding checkpoint.pt")
    device = predictor.device
    settings, size = predictor.settings, predictor.input_size
    split = settings.source.eval_split
    dataset = settings.source.make_dataset(split)
    n = min(args.images, len(dataset))
    images = [dataset.load_image(i) for i in range(n)]
    print(
        f"{settings.dataset}/{split}: {n} images, backbone {settings.backbone} at {size} px, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, device {device}",
        flush=True,
    )
    return Bench(
        args=args,
        predictor=predictor,
        sync=torch.cuda.synchronize if device.type == "cuda" else (lambda: None),
        split=split,
        dataset=dataset,
        images=images,
        sizes=[im.size for im in images],
        pixels=Backbone.pixels(images, size),
    )


def alternated(fns: dict[str, Callable[[], Any]], rounds: int, sync: Callable[[], Any]) -> dict[str, float]:
    """Median seconds of each of ``fns`` over ``rounds`` rounds, the functions run in turn within a
    round (after one warm-up round), so that a slow spell of the machine hits every row alike."""
    for fn in fns.values():
        fn()
        sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_rows(bench: Bench) -> None:
    """The decoding row, then rows (a)-(c) and (e) batched and one image at a time, alternated: the
    backbone's forward, RARL with 1 and 10 views (the predictor's default centres) and the
    M-sequence ensembles (M sampled sequences of the learned policy, one view), then the agent
    parts alone on the maps (alternated too)."""
    import torch

    from agents.predict import Predictor
    from rarl_gym.features.backbones import Backbone
    from rarl_gym.features.inference import forward

    args, predictor, n, size = bench.args, bench.predictor, bench.n, bench.predictor.input_size
    device, pixels, sizes = predictor.device, bench.pixels, bench.sizes
    bench.row(
        "decode + resize (PIL, main process)",
        timed(lambda: Backbone.pixels([bench.dataset.load_image(i) for i in range(n)], size), args.repeat),
        n,
    )
    ensemble = Predictor.from_run(args.run, device=args.device, data_root=args.data_root, centers="learned")
    agents: dict[str, Callable[[torch.Tensor, list], Any]] = {
        "(b) RARL, single view": lambda maps, at: predictor.predict_maps(maps, at, views=1),
        "(c) RARL, ten views": lambda maps, at: predictor.predict_maps(maps, at, views=10),
        **{
            f"(e) RARL, M={m} sequences": (lambda maps, at, m=m: ensemble.predict_maps(maps, at, samples=m))
            for m in args.samples
        },
    }
    for suffix, bs, count in (("", args.batch_size, n), (", batch 1", 1, min(n, args.single_images))):

        def over(fn: Callable[[int, int], Any], bs: int = bs, count: int = count) -> Callable[[], None]:
            return lambda: [fn(lo, min(count, lo + bs)) for lo in range(0, count, bs)]

        fns = {"(a) backbone forward": over(lambda lo, hi: forward(predictor.backbone, pixels[lo:hi], device))}
        for name, agent in agents.items():
            fns[name] = over(lambda lo, hi, agent=agent: agent(predictor.features(pixels[lo:hi]), sizes[lo:hi]))
        for name, seconds in alternated(fns, args.repeat, bench.sync).items():
            bench.row(name + suffix, seconds, count, "forward alone" if name.startswith("(a)") else "forward + agent")
        maps = torch.cat([forward(predictor.backbone, pixels[lo : lo + bs], device) for lo in range(0, count, bs)])
        alone = {
            f"    agent part alone, {name.split(', ', 1)[1]}": over(
                lambda lo, hi, agent=agent, maps=maps: agent(maps[lo:hi], sizes[lo:hi])
            )
            for name, agent in agents.items()
        }
        for name, seconds in alternated(alone, args.repeat, bench.sync).items():
            bench.row(name + suffix, seconds, count, "probabilities + pixel boxes")


def proposal_pipeline(bench: Bench) -> tuple[Callable[[Any], Any], Any, list]:
    """Row (d)'s pipeline: ``image -> probabilities [L]``, the global-image linear classifier it
    scores the windows with (fitted on the training split's pooled features) and the windows."""
    import numpy as np
    import torch

    from rarl_gym.features.backbones import Backbone
    from rarl_gym.features.inference import forward
    from rarl_gym.scorer import fit_global_classifier, pooled_features, predict_global

    predictor, settings, size, bs = (
        bench.predictor,
        bench.predictor.settings,
        bench.predictor.input_size,
        bench.args.batch_size,
    )
    _, train_store = settings.source.open_split(settings.split, progress=False)
    scorer = fit_global_classifier(pooled_features(train_store), torch.from_numpy(train_store.labels), seed=0)
    windows = proposal_windows()

    def proposals(image) -> np.ndarray:
        w, h = image.size
        crops = [image.crop((round(x1 * w), round(y1 * h), round(x2 * w), round(y2 * h))) for x1, y1, x2, y2 in windows]
        feats = torch.cat(
            [
                forward(predictor.backbone, Backbone.pixels(crops[lo : lo + bs], size), predictor.device)
                for lo in range(0, len(crops), bs)
            ]
        )
        return predict_global(scorer, _InMemoryMaps(feats)).max(0)  # category-wise max over the windows

    return proposals, scorer, windows


class _InMemoryMaps:
    """The windows' maps ``[N, C, H, W]`` where :func:`rarl_gym.scorer.predict_global` reads a
    :class:`FeatureStore` (``len`` and ``batch``): a store reads its rows from its file."""

    def __init__(self, maps):
        self.maps = maps

    def __len__(self) -> int:
        return len(self.maps)

    def batch(self, index, device="cpu"):
        import torch

        return self.maps[torch.as_tensor(index)].to(device=device, dtype=torch.float32), None


def speed_ratios(rows: dict[str, dict], num_windows: int, samples: Sequence[int]) -> dict[str, float]:
    """Rows (b)-(e) relative to each other and to the backbone's forward, batched and one image at
    a time (printed)."""
    ms = {name: row["ms_per_image"] for name, row in rows.items()}
    a, b, c = ms["(a) backbone forward"], ms["(b) RARL, single view"], ms["(c) RARL, ten views"]
    d = ms[f"(d) proposals ({num_windows} windows)"]
    ratios = {
        "ten-view RARL / backbone forward": round(c / a, 3),
        "single-view RARL / backbone forward": round(b / a, 3),
        "proposals / single-view RARL": round(d / b, 1),
        "proposals / ten-view RARL": round(d / c, 1),
    }
    one = ms["(a) backbone forward, batch 1"]
    ratios["ten-view RARL, batch 1 / backbone forward, batch 1"] = round(ms["(c) RARL, ten views, batch 1"] / one, 3)
    ratios["single-view RARL, batch 1 / backbone forward, batch 1"] = round(ms["(b) RARL, single view, batch 1"] / one, 3)
    for m in samples:
        ratios[f"M={m} sequences RARL / backbone forward"] = round(ms[f"(e) RARL, M={m} sequences"] / a, 3)
        ratios[f"M={m} sequences RARL, batch 1 / backbone forward, batch 1"] = round(
            ms[f"(e) RARL, M={m} sequences, batch 1"] / one, 3
        )
    for k, v in ratios.items():
        print(f"{k:<56} {v}")
    return ratios


def part_ratios(rows: dict[str, dict]) -> dict[str, float]:
    """``(forward + agent part alone) / forward`` per RARL row, batched and one image at a time:
    the same ratios from the two parts' medians, steadier than the direct ones where the agent
    part is smaller than the forward's run-to-run noise (printed)."""
    ms = {name: row["ms_per_image"] for name, row in rows.items()}
    ratios = {}
    for name, agent_ms in ms.items():
        if name.startswith("    agent part alone"):
            forward = ms["(a) backbone forward" + (", batch 1" if name.endswith(", batch 1") else "")]
            ratios[f"{name.strip()} (parts)"] = round((forward + agent_ms) / forward, 3)
    for k, v in ratios.items():
        print(f"{k:<56} {v}")
    return ratios


def accuracy_rows(bench: Bench, scorer, proposals: Callable[[Any], Any], num_windows: int) -> dict[str, float]:
    """mAP area (%) of RARL (1 and 10 views), the global classifier and the proposal pipeline on
    the first ``--accuracy-images`` images of the evaluation split."""
    import numpy as np

    from agents.rarl.trainer import predict
    from rarl_gym import metrics
    from rarl_gym.features.store import FeatureStore
    from rarl_gym.scorer import predict_global

    settings, split = bench.predictor.settings, bench.split
    _, store = settings.source.open_split(split, progress=False)
    k = min(bench.args.accuracy_images, len(store))
    idx = np.arange(k)
    sub = FeatureStore(path=store.path, features=np.asarray(store.features[:k]), labels=store.labels[:k], meta=store.meta)
    crop = bench.predictor.crop
    agent = bench.predictor.policy
    accuracy = {}
    print(f"\naccuracy on the first {k} images of {split} (mAP area, %):", flush=True)
    for name, probs in (
        ("RARL, single view", predict(agent, sub, settings, views=1, view_crop=crop)[0]),
        ("RARL, ten views", predict(agent, sub, settings, views=10, view_crop=crop)[0]),
        ("global-image linear classifier", predict_global(scorer, sub)),
    ):
        accuracy[name] = round(100 * metrics.evaluate(probs, sub.labels, classes=store.classes).map_area, 1)
        print(f"  {name:<34} {accuracy[name]:5.1f}", flush=True)
    start = time.perf_counter()
    probs = np.stack([proposals(bench.dataset.load_image(int(i))) for i in idx])
    name = f"proposals ({num_windows} windows)"
    accuracy[name] = round(100 * metrics.evaluate(probs, sub.labels, classes=store.classes).map_area, 1)
    print(f"  {name:<34} {accuracy[name]:5.1f}   ({time.perf_counter() - start:.0f} s)", flush=True)
    return accuracy


def ensemble_rows(bench: Bench, ratios: dict[str, float], accuracy: bool) -> dict[str, dict]:
    """Per M (1: the predictor's default centres, one sequence), its cost (ms / image and the ratio
    to the forward, batched and one image at a time) next to its mAP area (%) on the whole
    evaluation split from the cache (``accuracy``; the learned policy's M sampled sequences)."""
    from agents.rarl.evaluate import predict
    from rarl_gym import metrics

    predictor, args = bench.predictor, bench.args
    settings = predictor.settings
    store = settings.source.open_split(bench.split, progress=False)[1] if accuracy else None
    rows: dict[str, dict] = {}
    if accuracy:
        print(f"\nM-sequence ensembles, {bench.split} ({len(store)} images, one view, mAP area %):", flush=True)
    for m in (1, *args.samples):
        name, key = (
            ("(b) RARL, single view", "single-view RARL")
            if m == 1
            else (f"(e) RARL, M={m} sequences", f"M={m} sequences RARL")
        )
        centers = predictor.centers if m == 1 else "learned"
        row = {
            "centers": centers,
            "ms_per_image": bench.rows[name]["ms_per_image"],
            "ms_per_image_batch_1": bench.rows[name + ", batch 1"]["ms_per_image"],
            "ratio": ratios[f"{key} / backbone forward"],
            "ratio_batch_1": ratios[f"{key}, batch 1 / backbone forward, batch 1"],
        }
        if store is not None:
            probs = predict(predictor.policy, store, settings, centers=centers, samples=m, view_crop=predictor.crop).probs
            row["map_area"] = round(100 * metrics.evaluate(probs, store.labels, classes=store.classes).map_area, 1)
        rows[f"M={m}"] = row
        print(
            f"  M={m:<3} {centers:<8} {row['ms_per_image']:7.1f} ms/image ({row['ratio']}x)  "
            f"batch 1 {row['ms_per_image_batch_1']:7.1f} ms ({row['ratio_batch_1']}x)  mAP {row.get('map_area', '-')}",
            flush=True,
        )
    return rows


def format_rows(bench: Bench) -> dict[str, dict]:
    """The forward alone in NCHW and channels-last (ms/image), batch 1 / 8 / 16 / 32, 1 and all threads (CPU)."""
    import torch

    from rarl_gym.features.backbones import build_backbone

    args, predictor, n = bench.args, bench.predictor, bench.n
    nchw = build_backbone(predictor.settings.backbone, pretrained=predictor.settings.pretrained)
    x_all = predictor.backbone.normalise(bench.pixels)
    threads = torch.get_num_threads()
    formats = {}
    print("\nforward alone, ms/image (NCHW | channels-last):", flush=True)
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        for batch in (1, 8, 16, 32):
            count = max(batch, min(n, 32) // batch * batch)
            x = x_all[:count] if count <= n else x_all.repeat((count + n - 1) // n, 1, 1, 1)[:count]

            def run_nchw(x=x, count=count, batch=batch):
                with torch.inference_mode():
                    for lo in range(0, count, batch):
                        nchw.module(x[lo : lo + batch].contiguous())

            def run_last(x=x, count=count, batch=batch):
                with torch.inference_mode():
                    for lo in range(0, count, batch):
                        predictor.backbone(x[lo : lo + batch])

            nchw.module.to(memory_format=torch.contiguous_format)
            a_ms = 1000 * timed(run_nchw, max(1, args.repeat - 1)) / count
            b_ms = 1000 * timed(run_last, max(1, args.repeat - 1)) / count
            formats[f"threads={t} batch={batch}"] = {
                "nchw_ms": round(a_ms, 1),
                "channels_last_ms": round(b_ms, 1),
                "speedup": round(a_ms / b_ms, 2),
            }
            print(f"  threads {t}, batch {batch:>2}: {a_ms:7.1f} | {b_ms:7.1f}   x{a_ms / b_ms:.2f}", flush=True)
    torch.set_num_threads(threads)
    return formats


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
