#!/usr/bin/env python
"""One markdown table of finished runs (their ``metrics.json``): mAP of the learned centres next
to random centres, the fixed grid and the image middle on the same classifier, the global
classifier, the env steps and the training time.

Example:
    python benchmarks/compare_runs.py runs/compare-voc07/*/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text())
    p = m["policies"]
    cells = [f"{100 * p[k]['mAP_area']:.1f}" if k in p else "-" for k in ("learned", "random", "grid", "center", "global")]
    steps = m.get("num_timesteps", "-")
    secs = m.get("train_seconds")
    mins = f"{secs / 60:.1f}" if secs is not None else "-"
    return (
        f"| {m.get('algo', run.name)} | "
        + " | ".join(cells)
        + f" | {100 * p['learned'].get('reward', 0):.1f} | {steps} | {mins} |"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders holding metrics.json")
    args = p.parse_args(argv)
    runs = [r for r in args.runs if (r / "metrics.json").exists()]
    if not runs:
        print("no finished runs (metrics.json) among the given folders", file=sys.stderr)
        return 2
    print("| agent | learned | random | grid | middle | global classifier | reward (learned) | env steps | train min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        print(row(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
