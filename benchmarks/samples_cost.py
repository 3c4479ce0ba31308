#!/usr/bin/env python
"""What test-time Monte-Carlo sampling costs: the agent's part of inference (on the cached maps,
the backbone excluded) and the accuracy of M = 1, 4, 16 sampled centre sequences, averaged.

Examples:
    python benchmarks/samples_cost.py --run runs/rarl-voc07
    python benchmarks/samples_cost.py --run runs/rarl-voc07 --samples 1 4 16 --centers learned random
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    import torch

    from agents.rarl.evaluate import predict, split_objects
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from rarl_gym import metrics
    from rarl_gym.env_settings import EnvSettings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a RARL run folder (checkpoint.pt)")
    p.add_argument("--samples", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--centers", nargs="+", default=["learned", "random"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON file of the rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.run)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    split = ckpt["config"].get("eval_split") or settings.source.eval_split
    store = settings.source.open_split(split, progress=False)[1]
    objects = split_objects(settings, split)
    agent = agent_from_checkpoint(ckpt)
    rows = []
    print("| centres | M | ms / image (agent part) | mAP area / VOC07 (%) | pointing (%) |")
    print("|---|---:|---:|---:|---:|")
    for centers in args.centers:
        for m in args.samples:
            start = time.perf_counter()
            pred = predict(agent, store, settings, centers=centers, samples=m)
            ms = 1000 * (time.perf_counter() - start) / len(store)
            report = metrics.evaluate(pred.probs, store.labels)
            found = metrics.grounding(pred.label_boxes, store.labels, objects) if objects is not None else None
            row = {"centers": centers, "samples": m, "ms_per_image": round(ms, 2), "mAP_area": report.map_area}
            row.update(mAP_voc07=report.map_voc07, pointing=None if found is None else found["pointing"])
            rows.append(row)
            point = "-" if found is None else f"{100 * found['pointing']:.1f}"
            print(f"| {centers} | {m} | {ms:.2f} | {100 * report.map_area:.1f} / {100 * report.map_voc07:.1f} | {point} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
