"""Drawing glimpse boxes on an image (the env's ``rgb_array`` render and the paper's Figure 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def draw_label_boxes(
    image: Image.Image, label_boxes: Mapping[str, np.ndarray], boxes_per_step: Sequence[np.ndarray] = (), *, width: int = 3
) -> np.ndarray:
    """The image with one labelled box per label (the region that gave it), each in its own
    colour, over the glimpse trail drawn faint (the centres of the steps, joined in order).

    Args:
        label_boxes: label -> pixel box ``(x1, y1, x2, y2)``.
        boxes_per_step: one ``[K, 4]`` array of pixel boxes per step (the trail; may be empty).

    Returns:
        ``[H, W, 3]`` uint8 RGB array.
    """
    canvas = image.convert("RGB").copy()
    trail = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    faint = ImageDraw.Draw(trail)
    centres = [np.asarray(b, dtype=float).reshape(-1, 4)[0] for b in boxes_per_step]
    points = [((x1 + x2) / 2, (y1 + y2) / 2) for x1, y1, x2, y2 in centres]
    if len(points) > 1:
        faint.line(points, fill=(255, 255, 255, 110), width=1)
    for t, (x, y) in enumerate(points):
        faint.ellipse([x - 3, y - 3, x + 3, y + 3], outline=(255, 255, 255, 150), fill=(*STEP_COLOURS[t % 7], 90))
    canvas = Image.alpha_composite(canvas.convert("RGBA"), trail).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for i, (label, box) in enumerate(label_boxes.items()):
        colour = STEP_COLOURS[i % len(STEP_COLOURS)]
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=float).reshape(4))
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        tw = 6 * len(label) + 4
        ty = y1 if y1 >= 12 else y1 + width
        draw.rectangle([x1, ty - 12 if y1 >= 12 else ty, x1 + tw, ty if y1 >= 12 else ty + 12], fill=colour)
        draw.text((x1 + 2, (ty - 12 if y1 >= 12 else ty) + 1), label, fill=(0, 0, 0))
    return np.asarray(canvas, dtype=np.uint8)


def figure2(
    image: Image.Image,
    boxes_per_step: Sequence[np.ndarray],
    predicted: Sequence[str],
    true: Sequence[str] | None = None,
    label_boxes: Mapping[str, np.ndarray] | None = None,
) -> Image.Image:
    """The paper's Figure 2 for one image with the predicted labels underneath (and the true ones,
    when known): with ``label_boxes`` (label -> pixel box), one labelled box per label over the
    faint glimpse trail (:func:`draw_label_boxes`); without, the regions of each step in that step's
    colour (:func:`draw_glimpses`).

    Used by ``rarl-gym visualize``, ``rarl-gym predict --draw`` and the trainers' TensorBoard
    images, so the three pictures are the same.
    """
    if label_boxes is not None:
        drawn = draw_label_boxes(image, label_boxes, boxes_per_step)
    else:
        drawn = draw_glimpses(image, boxes_per_step)
    h, w = drawn.shape[:2]
    lines = ["pred: " + ", ".join(predicted)] + ([] if true is None else ["true: " + ", ".join(true)])
    canvas = Image.new("RGB", (w, h + 2 + 13 * len(lines) + 2), "white")
    canvas.paste(Image.fromarray(drawn), (0, 0))
    text = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        text.text((3, h + 2 + 13 * i), line, fill=(0, 0, 0) if i == 0 else (90, 90, 90))
    return canvas


__all__ = ["STEP_COLOURS", "draw_glimpses", "draw_label_boxes", "figure2"]
