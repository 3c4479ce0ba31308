"""The paper's Figure 2: the regions a trained RARL agent looks at, iteration by iteration.

For each chosen image of the evaluation split, draws the K regions of every iteration t = 1..T
on the image in that iteration's colour (t = 1 red, 2 green, 3 yellow, 4 blue, 5 orange), with
the predicted and true labels underneath, and writes one PNG per image.

Examples:
    rarl-gym visualize runs/rarl-shapes
    rarl-gym visualize runs/rarl-voc07 --images 0 5 17 --out figures/voc07

In a clone, ``python scripts/visualize.py`` is the same command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rarl_gym.cli import non_negative_int, positive_int, run_cli


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "checkpoint", nargs="?", default="runs/rarl-shapes", help="checkpoint.pt or its run folder (default runs/rarl-shapes)"
    )
    p.add_argument("--split", default=None, help="split (default: the dataset's evaluation split)")
    p.add_argument("--data-root", default=None, help="dataset root, if it moved since training")
    p.add_argument("--images", type=non_negative_int, nargs="*", default=None, help="image indices (default: the first --num)")
    p.add_argument("--num", type=positive_int, default=6, help="how many images when --images is not given (default 6)")
    p.add_argument("--out", default=None, help="output folder (default <run folder>/figure2)")
    return p.parse_args(argv)


def visualize(args: argparse.Namespace) -> list[Path]:
    import torch
    from PIL import Image

    from agents.cli._output import output_folder, save_picture
    from agents.rarl.rollout import rollout
    from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint
    from agents.tb_logging import figure2_pictures
    from rarl_gym.env_settings import EnvSettings
    from rarl_gym.errors import ConfigError
    from rarl_gym.glimpse import anchor_boxes

    if args.out is not None:  # a file in the way or a read-only folder fails before the work
        output_folder(args.out, "--out")
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
    output_folder(str(folder), "--out")
    t = out.centers.shape[1]
    boxes = anchor_boxes(out.centers.reshape(-1, 2), settings.scales, settings.ratios).reshape(len(indices), t, -1, 4)
    label_boxes = out.regions[torch.arange(len(indices))[:, None], out.giver]  # [B, L, 4] the region that gave each class
    pictures = figure2_pictures(dataset, store.classes, indices, boxes.numpy(), probs, labels.numpy(), label_boxes.numpy())
    written = []
    for index, picture in zip(indices, pictures):
        path = folder / f"{store.image_ids[index]}.png"
        save_picture(Image.fromarray(picture), path, "the Figure 2 picture", "--out")
        written.append(path)
    print(f"wrote {len(written)} figure(s) to {folder}")
    return written


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)

    def body() -> None:
        visualize(args)

    return run_cli(body)
