#!/usr/bin/env python
"""The paper's Figure 2: the regions a trained RARL agent looks at, iteration by iteration.

For each chosen image of the evaluation split, draws the K regions of every iteration t = 1..T
on the image in that iteration's colour (t = 1 red, 2 green, 3 yellow, 4 blue, 5 orange), with
the predicted and true labels underneath, and writes one PNG per image.

Examples:
    python scripts/visualize.py runs/rarl-shapes
    python scripts/visualize.py runs/rarl-voc07 --images 0 5 17 --out figures/voc07
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rarl_gym.cli import run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "checkpoint", nargs="?", default="runs/rarl-shapes", help="checkpoint.pt or its run folder (default runs/rarl-shapes)"
    )
    p.add_argument("--split", default=None, help="split (default: the dataset's evaluation split)")
    p.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    p.add_argument("--images", type=int, nargs="*", default=None, help="image indices (default: the first --num)")
    p.add_argument("--num", type=int, default=6, help="how many images when --images is not given")
    p.add_argument("--out", default=None, help="output folder (default <run folder>/figure2)")
    return p.parse_args(argv)


def visualize(args: argparse.Namespace) -> list[Path]:
    import numpy as np
    import torch

    from agents.rarl.rollout import rollout
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from rarl_gym.env_settings import EnvSettings
    from rarl_gym.errors import ConfigError
    from rarl_gym.glimpse import anchor_boxes, boxes_to_pixels
    from rarl_gym.render import figure2

    ckpt = load_checkpoint(args.checkpoint)
    settings = EnvSettings.from_kwargs(**ckpt["settings"])
    if args.data_root is not None:
        settings = settings.replace(root=args.data_root)
    dataset, store = settings.source.open_split(args.split or settings.source.eval_split)
    indices = args.images if args.images else list(range(min(args.num, len(store))))
    bad = [i for i in indices if not 0 <= i < len(store)]
    if bad:
        raise ConfigError(
            f"image indices {bad} are outside the split of {len(store)} images", f"use indices in [0, {len(store) - 1}]"
        )
    agent = agent_from_checkpoint(ckpt)
    feats, labels = store.batch(indices)
    with torch.no_grad():
        out = rollout(agent, feats, labels, **settings.rollout_kwargs(), sample=False)
    probs = agent.probabilities(out.fused).numpy()
    ckpt_path = Path(args.checkpoint)
    folder = Path(args.out) if args.out else (ckpt_path if ckpt_path.is_dir() else ckpt_path.parent) / "figure2"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for row, index in enumerate(indices):
        image = dataset.load_image(index)
        w, h = image.size
        boxes = anchor_boxes(out.centers[row], settings.scales, settings.ratios)  # [T,K,4]
        true = [c for c, y in zip(store.classes, labels[row].tolist()) if y == 1]
        k = max(1, len(true))
        pred = [store.classes[j] for j in np.argsort(-probs[row], kind="stable")[:k]]
        canvas = figure2(image, list(boxes_to_pixels(boxes, w, h).numpy()), pred, true)
        path = folder / f"{store.image_ids[index]}.png"
        canvas.save(path)
        written.append(path)
    print(f"wrote {len(written)} figure(s) to {folder}")
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: visualize(args))


if __name__ == "__main__":
    sys.exit(main())
