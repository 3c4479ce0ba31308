#!/usr/bin/env python
"""Label your own images with a trained run: a table on the terminal, JSON lines, Figure 2 pictures.

Takes image files and folders (every file in a folder, sorted; add --recursive for sub-folders).
A file that is not a readable image is reported and skipped; the others go on.

Examples:
    python scripts/predict.py photos/ --run runs/rarl-shapes
    python scripts/predict.py cat.jpg street.jpg --run runs/rarl-voc07 --views 10 --out preds.jsonl --draw figures/
    python scripts/predict.py photos/ --run runs/ppo-shapes --top-k 2 --threshold 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument(
        "--run",
        default="runs/rarl-shapes",
        help="run folder, or its checkpoint.pt / model.zip / cem.npz (default runs/rarl-shapes)",
    )
    p.add_argument("--views", type=int, choices=[1, 10], default=1, help="1 view or the ten-view test (RARL runs)")
    p.add_argument("--out", default=None, help="write one JSON line per image here")
    p.add_argument("--draw", default=None, help="write the Figure 2 picture of each image into this folder")
    p.add_argument("--top-k", type=int, default=3, help="list at most this many labels per image (default 3)")
    p.add_argument("--threshold", type=float, default=0.1, help="list labels with at least this probability (default 0.1)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--workers", type=int, default=None, help="image decoding processes (default: one per core beyond two, at least one)"
    )
    p.add_argument("--recursive", action="store_true", help="also take the files in sub-folders")
    p.add_argument(
        "--data-root",
        default=None,
        help="dataset root, if it moved since training (SB3 / CEM runs read their env scorer from its cache)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def image_files(inputs: list[str], recursive: bool = False) -> list[Path]:
    """The files named, and the files in the folders named (sorted; hidden files left out)."""
    from rarl_gym.errors import ConfigError

    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            files += sorted(p for p in found if p.is_file() and not p.name.startswith("."))
        elif path.exists():
            files.append(path)
        else:
            raise ConfigError(f"no file or folder {name}", "pass image files or folders that exist")
    if not files:
        raise ConfigError(f"no files in {', '.join(inputs)}", "pass image files or folders holding images")
    return files


def predict(args: argparse.Namespace) -> dict:
    from tqdm.auto import tqdm

    from agents.predict import Predictor
    from rarl_gym.errors import ConfigError, CorruptFileError

    files = image_files(args.images, args.recursive)
    predictor = Predictor.from_run(args.run, device=args.device, data_root=args.data_root)
    if args.views != 1 and predictor.kind != "rarl":
        raise ConfigError(f"--views {args.views}: a {predictor.kind} run sees the whole image only", "use --views 1")
    out = open(args.out, "w") if args.out else None  # closed below
    draw = Path(args.draw) if args.draw else None
    if draw is not None:
        draw.mkdir(parents=True, exist_ok=True)
    width = min(60, max(len(str(f)) for f in files))
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=args.no_progress or len(files) < 2)
    tqdm.write(f"{'image':<{width}}  labels (probability)")
    skipped, done = [], 0
    try:
        results = predictor.predict_files(
            files,
            views=args.views,
            threshold=args.threshold,
            top_k=args.top_k,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        for path, result in zip(files, results):
            bar.update(1)
            if isinstance(result, CorruptFileError):
                skipped.append((path, result))
                tqdm.write(f"{path!s:<{width}}  skipped: {result.problem}")
                continue
            done += 1
            labels = ", ".join(f"{c} ({result.probs[predictor.classes.index(c)]:.2f})" for c in result.labels) or "-"
            tqdm.write(f"{path!s:<{width}}  {labels}")
            if out is not None:
                out.write(json.dumps(result.to_dict()) + "\n")
            if draw is not None:
                result.figure2().save(draw / f"{path.stem}.png")
    finally:
        bar.close()
        if out is not None:
            out.close()
    print(
        f"\n{done} image(s) labelled, {len(skipped)} skipped"
        + (f"; JSON lines: {args.out}" if args.out else "")
        + (f"; Figure 2 pictures: {draw}" if draw else "")
    )
    for path, err in skipped:
        print(f"skipped {path}: {err.problem}", file=sys.stderr)
    if done == 0:
        raise ConfigError("no image could be read", "pass JPEG / PNG files")
    return {"done": done, "skipped": [str(p) for p, _ in skipped]}


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: predict(args))


if __name__ == "__main__":
    sys.exit(main())
