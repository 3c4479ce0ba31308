"""Drawing glimpse boxes on an image (the env's ``rgb_array`` render and the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: One colour per iteration (t = 1, 2, ...), cycling.
STEP_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def draw_glimpses(image: Image.Image, boxes_per_step: Sequence[np.ndarray], *, width: int = 2) -> np.ndarray:
    """The image with the regions of each step drawn in that step's colour.

    Args:
        image: the original picture.
        boxes_per_step: one ``[K, 4]`` array of pixel boxes ``(x1, y1, x2, y2)`` per step.

    Returns:
        ``[H, W, 3]`` uint8 RGB array.
    """
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    for t, boxes in enumerate(boxes_per_step):
        colour = STEP_COLOURS[t % len(STEP_COLOURS)]
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=float).reshape(-1, 4):
            draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
    return np.asarray(canvas, dtype=np.uint8)


def figure2(
    image: Image.Image, boxes_per_step: Sequence[np.ndarray], predicted: Sequence[str], true: Sequence[str] | None = None
) -> Image.Image:
    """The paper's Figure 2 for one image: the regions of each step in that step's colour
    (:func:`draw_glimpses`) with the predicted labels underneath (and the true ones, when known).

    Used by ``scripts/visualize.py``, ``scripts/predict.py --draw`` and the trainers' TensorBoard
    images, so the three pictures are the same.
    """
    drawn = draw_glimpses(image, boxes_per_step)
    h, w = drawn.shape[:2]
    lines = ["pred: " + ", ".join(predicted)] + ([] if true is None else ["true: " + ", ".join(true)])
    canvas = Image.new("RGB", (w, h + 2 + 13 * len(lines) + 2), "white")
    canvas.paste(Image.fromarray(drawn), (0, 0))
    text = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        text.text((3, h + 2 + 13 * i), line, fill=(0, 0, 0) if i == 0 else (90, 90, 90))
    return canvas


__all__ = ["STEP_COLOURS", "draw_glimpses", "figure2"]
