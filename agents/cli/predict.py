"""Label your own images with a trained run: a table, JSON lines or CSV, and Figure 2 pictures.

Takes image files and folders (every file in a folder, sorted; add --recursive for sub-folders).
A file that is not a readable image is reported and skipped; the others go on. Each image's
labels are the --top-k most probable (default 5) with a probability of at least --threshold
(default 0.1), as [{"label", "score"}] sorted by score; every class's probability is kept too.

--format sets what goes to the terminal: a table (default), or one JSON object per image
(jsonl) or a CSV (csv) for a pipe (the summary then goes to stderr). --out also writes the
predictions to a file: CSV when its name ends in .csv, else JSON lines; it appears whole when the
command ends (on Ctrl-C too, with the images done). --draw writes each image's Figure 2 as a PNG
named after it (photo.jpg -> photo.png; photo.tiff beside it -> photo_tiff.png: never one over
another).

Examples:
    rarl-gym predict photos/ --run runs/rarl-shapes
    rarl-gym predict cat.jpg street.jpg --run runs/rarl-voc07 --views 10 --out preds.jsonl --draw figures/
    rarl-gym predict photos/ --run runs/ppo-shapes --top-k 2 --threshold 0.3
    rarl-gym predict photos/ --run runs/rarl-shapes --format csv > preds.csv

In a clone, ``python scripts/predict.py`` is the same command.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rarl_gym.cli import add_loader_options, positive_int, run_cli

FORMATS = ("table", "jsonl", "csv")


def probability(text: str) -> float:
    """argparse type: a number in [0, 1] (``nan``, ``-0.1`` and ``2`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text!r}")
    return value


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument(
        "--run",
        default="runs/rarl-shapes",
        help="run folder, or its checkpoint.pt / model.zip / cem.npz (default runs/rarl-shapes)",
    )
    p.add_argument("--views", type=int, choices=[1, 10], default=1, help="1 view or the ten-view test (RARL runs)")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=1,
        help="M > 1: average M sequences sampled per view (RARL runs with --centers learned or random)",
    )
    p.add_argument(
        "--centers",
        default=None,
        choices=("learned", "peak", "grid", "random", "center"),
        help="RARL runs: where the glimpses go (default peak, the class-map peaks of the most likely classes, "
        "where the run has the linear head; learned: the agent's own policy)",
    )
    p.add_argument("--format", default="table", choices=FORMATS, help="what the terminal shows (default table)")
    p.add_argument("--out", default=None, help="also write the predictions here: CSV if it ends in .csv, else JSON lines")
    p.add_argument("--draw", default=None, help="write the Figure 2 picture of each image into this folder")
    p.add_argument("--top-k", type=positive_int, default=5, help="list at most this many labels per image (default 5)")
    p.add_argument(
        "--threshold", type=probability, default=0.1, help="list labels with at least this probability (default 0.1)"
    )
    add_loader_options(p)
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


def picture_names(files: list[Path]) -> list[str]:
    """One PNG name per file, never the same twice: the file's stem (``ok.jpg`` -> ``ok.png``), or
    when that is taken, stem and extension (``ok.tiff`` -> ``ok_tiff.png``), then a number."""
    used: set[str] = set()
    names = []
    for path in files:
        ext = path.suffix.lstrip(".").lower()
        candidates = [f"{path.stem}.png", f"{path.stem}_{ext}.png" if ext else f"{path.stem}_.png"]
        name = next((c for c in candidates if c.lower() not in used), None)
        n = 2
        while name is None:
            candidate = f"{path.stem}_{ext}_{n}.png" if ext else f"{path.stem}_{n}.png"
            name, n = (candidate if candidate.lower() not in used else None), n + 1
        used.add(name.lower())  # case-insensitive file systems too
        names.append(name)
    return names


def csv_header(classes: tuple[str, ...], top_k: int) -> list[str]:
    """``image, width, height, label_1, score_1, ..., label_k, score_k``, then one probability column per class."""
    ranked = [name for i in range(1, top_k + 1) for name in (f"label_{i}", f"score_{i}")]
    return ["image", "width", "height", *ranked, *classes]


def csv_row(row: dict[str, Any], classes: tuple[str, ...], top_k: int) -> list[Any]:
    """A :meth:`~agents.predict.Prediction.to_dict` as a CSV row of :func:`csv_header` (empty cells
    where fewer than ``top_k`` labels passed the threshold)."""
    ranked: list[Any] = []
    for i in range(top_k):
        entry = row["labels"][i] if i < len(row["labels"]) else None
        ranked += [entry["label"], entry["score"]] if entry else ["", ""]
    return [row["image"], row["width"], row["height"], *ranked, *(row["probs"][c] for c in classes)]


def _csv_line(cells: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(cells)
    return buffer.getvalue()


class _Lines:
    """Where the predictions go line by line in one format (the terminal or an --out file)."""

    def __init__(self, fmt: str, write: Callable[[str], Any], classes: tuple[str, ...], top_k: int, width: int):
        self.fmt, self.write, self.classes, self.top_k, self.width = fmt, write, classes, top_k, width
        if fmt == "csv":
            write(_csv_line(csv_header(classes, top_k)))
        elif fmt == "table":
            write(f"{'image':<{width}}  labels (probability)")

    def prediction(self, row: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.write(json.dumps(row))
        elif self.fmt == "csv":
            self.write(_csv_line(csv_row(row, self.classes, self.top_k)))
        else:
            labels = ", ".join(f"{e['label']} ({e['score']:.2f})" for e in row["labels"]) or "-"
            self.write(f"{row['image']!s:<{self.width}}  {labels}")

    def skipped(self, path: Path, problem: str) -> None:
        if self.fmt == "table":
            self.write(f"{path!s:<{self.width}}  skipped: {problem}")


def predict(args: argparse.Namespace) -> dict:
    import contextlib

    from agents.cli._output import LinesFile, output_file, output_folder
    from rarl_gym.errors import ConfigError

    files = image_files(args.images, args.recursive)
    out_path = output_file(args.out, "--out") if args.out else None
    draw = output_folder(args.draw, "--draw") if args.draw else None  # a file in the way fails here
    with contextlib.ExitStack() as stack:
        # --out is opened before the model loads, so an output that cannot be written fails at once;
        # it appears whole when this block ends (on Ctrl-C too), and not at all if nothing was labelled
        out_file = stack.enter_context(LinesFile(out_path, "the predictions", "--out")) if out_path is not None else None
        done, skipped = _label(args, files, out_file, draw)
        if done == 0:
            _summary(args, done, skipped, None, draw)
            raise ConfigError("no image could be read", "pass JPEG / PNG files")
    _summary(args, done, skipped, out_path, draw)
    return {"done": done, "skipped": [str(p) for p, _ in skipped]}


def _summary(args: argparse.Namespace, done: int, skipped: list, out_path: Path | None, draw: Path | None) -> None:
    summary = sys.stdout if args.format == "table" else sys.stderr  # keep a piped jsonl / csv clean
    print(
        f"\n{done} image(s) labelled, {len(skipped)} skipped"
        + (f"; predictions: {out_path}" if out_path else "")
        + (f"; Figure 2 pictures: {draw}" if draw and done else ""),
        file=summary,
    )
    for path, err in skipped:
        print(f"skipped {path}: {err.problem}", file=sys.stderr)


def _label(args: argparse.Namespace, files: list[Path], out_file: Any, draw: Path | None) -> tuple[int, list]:
    """Predict every file, writing each prediction where it goes; ``(labelled, [(path, error)] skipped)``."""
    from tqdm.auto import tqdm

    from agents.cli._output import save_picture
    from agents.predict import Predictor
    from rarl_gym.errors import ConfigError, CorruptFileError

    predictor = Predictor.from_run(args.run, device=args.device, data_root=args.data_root, centers=args.centers)
    if args.views != 1 and predictor.kind != "rarl":
        raise ConfigError(f"--views {args.views}: a {predictor.kind} run sees the whole image only", "use --views 1")
    predictor.check_samples(args.samples)
    pictures = picture_names(files) if draw is not None else []  # by position: a file named twice gets two
    width = min(60, max(len(str(f)) for f in files))
    # the table goes through tqdm (above the bar); machine formats go to stdout as they are
    terminal = _Lines(args.format, tqdm.write if args.format == "table" else print, predictor.classes, args.top_k, width)
    out = None
    if out_file is not None:
        out_format = "csv" if out_file.path.suffix.lower() == ".csv" else "jsonl"
        out = _Lines(out_format, out_file.write_line, predictor.classes, args.top_k, 0)
    skipped: list[tuple[Path, CorruptFileError]] = []
    done = 0
    results = predictor.predict_files(
        files,
        views=args.views,
        samples=args.samples,
        threshold=args.threshold,
        top_k=args.top_k,
        batch_size=args.batch_size,
        workers=args.workers,
    )
    with tqdm(total=len(files), desc="predict", unit="img", disable=args.no_progress or len(files) < 2) as bar:
        for i, (path, result) in enumerate(zip(files, results)):
            bar.update(1)
            if isinstance(result, CorruptFileError):
                skipped.append((path, result))
                terminal.skipped(path, result.problem)
                continue
            done += 1
            row = result.to_dict()
            if draw is not None:
                picture = draw / pictures[i]
                save_picture(result.figure2(), picture, "the Figure 2 picture", "--draw")
                row["picture"] = str(picture)
            terminal.prediction(row)
            if out is not None:
                out.prediction(row)
    return done, skipped


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)

    def body() -> None:
        predict(args)

    return run_cli(body, on_interrupt="--out keeps the predictions of the images done")
