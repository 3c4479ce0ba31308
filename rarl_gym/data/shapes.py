"""RARL-Shapes: the embedded default dataset, drawn on the fly, no download.

Every image holds 1-4 objects of distinct classes among 12 shapes, on a cluttered background
(smooth colour field, pixel grain and many small distractors: line segments, dots, squiggles).
Classes differ by *shape* only: an object's colour is random, and distractors use the same
colours, so neither colour nor "something saturated is here" tells the class.

Objects vary in size (bounding-box side 10 % to 45 % of the image side, half of them under
20 %), aspect ratio (width/height stretch 0.6-1.6, small enough that no two classes meet: squares
stay apart from diamonds, which only get a +-12 degree tilt) and position (a few placements
are tried to limit overlap; smaller objects are drawn on top). Small objects need a close look,
which is what the glimpses are for.

Determinism. Image ``index`` of a split depends only on ``(seed, split, index)``: its random
stream is ``np.random.default_rng([seed, split_id, index])``, whatever the order of access.
The stream first draws the scene layout (classes, geometry, colours), then the background and
the distractors, so :meth:`ShapesDataset.labels` and :meth:`ShapesDataset.boxes` never draw.
Bump ``_VERSION`` whenever the drawing or the sampling changes (it is in :meth:`cache_key`).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from rarl_gym.data.base import MultiLabelDataset
from rarl_gym.errors import ConfigError, check_choice

_VERSION = "v1"

SPLITS: dict[str, int] = {"train": 0, "test": 1}
DEFAULT_SIZES: dict[str, int] = {"train": 3000, "test": 1000}

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "crescent",
    "arrow",
    "heart",
    "ell",
    "bowtie",
)

MAX_OBJECTS = 4
MIN_SIZE, MID_SIZE, MAX_SIZE = 0.10, 0.20, 0.45  # bounding-box side / image side
MIN_STRETCH, MAX_STRETCH = 0.6, 1.6  # width / height factor applied to the canonical shape
RING_WIDTH = 0.28  # ring thickness / outer radius
_GRAIN = 14  # amplitude of the background's pixel grain, in grey levels
_MIN_DISTRACTORS, _MAX_DISTRACTORS = 40, 80  # per image; each under 20 px at 256 px (< smallest object)
_PLACEMENT_TRIES = 12
_MAX_OVERLAP = 0.10  # intersection / smaller box area accepted at once


# --------------------------------------------------------------------------------------------
# Canonical shapes: polygons in [-1, 1]^2, y pointing down (image convention).


def _circle_points(n: int = 40, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _crescent() -> np.ndarray:
    # The unit disc minus a disc of radius r centred at (d, 0): the horns point right.
    d, r = 0.45, 0.8
    xi = (1.0 + d * d - r * r) / (2.0 * d)  # x of the two intersection points
    a = math.acos(xi)  # their angle on the outer circle
    b = math.acos((xi - d) / r)  # and on the inner one
    to = np.linspace(a, 2.0 * np.pi - a, 30)
    ti = np.linspace(2.0 * np.pi - b, b, 24)
    outer = np.stack([np.cos(to), np.sin(to)], axis=1)
    inner = np.stack([d + r * np.cos(ti), r * np.sin(ti)], axis=1)
    return np.concatenate([outer, inner[1:-1]])


def _star() -> np.ndarray:
    t = -np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], axis=1) / 16.0


def _p(*xy: float) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


_w = 0.32  # half-width of the cross arms
# Each class: its outer polygon (its hole, for the ring, is derived in _layout).
_SHAPES: dict[str, np.ndarray] = {
    "circle": _circle_points(),
    "square": _p(-1, -1, 1, -1, 1, 1, -1, 1),
    "triangle": _p(0, -1, 1, 0.75, -1, 0.75),
    "star": _star(),
    "cross": _p(-_w, -1, _w, -1, _w, -_w, 1, -_w, 1, _w, _w, _w, _w, 1, -_w, 1, -_w, _w, -1, _w, -1, -_w, -_w, -_w),
    "ring": _circle_points(),
    "diamond": _p(0, -1, 1, 0, 0, 1, -1, 0),
    "crescent": _crescent(),
    "arrow": _p(-1, -0.22, 0.15, -0.22, 0.15, -0.62, 1, 0, 0.15, 0.62, 0.15, 0.22, -1, 0.22),
    "heart": _heart(),
    "ell": _p(-0.75, -1, -0.22, -1, -0.22, 0.48, 0.75, 0.48, 0.75, 1, -0.75, 1),
    "bowtie": _p(-1, -0.85, 0, -0.2, 1, -0.85, 1, 0.85, 0, 0.2, -1, 0.85),
}
# Rotation of each class: a jitter of +-12 degrees, plus, for shapes whose orientation does not
# define them, a random quarter turn (or any angle for the crescent). Squares and diamonds only
# get the jitter, so a square never turns into a diamond.
_QUARTER_TURNS = frozenset({"triangle", "arrow", "ell", "bowtie"})
_ANY_ANGLE = frozenset({"crescent"})
_JITTER = math.radians(12.0)


@dataclass(frozen=True)
class _Object:
    cls: int
    polygon: np.ndarray  # [P, 2] pixel coordinates (x, y)
    hole: np.ndarray | None  # [Q, 2] pixel coordinates, the ring's inner boundary
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    colour: tuple[int, int, int]


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def _hsv_array(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> list[tuple[int, int, int]]:
    """Vectorised :func:`_hsv` (same formula as :func:`colorsys.hsv_to_rgb`)."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = i.astype(int) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    rgb = (np.stack([r, g, b], axis=1) * 255 + 0.5).astype(np.uint8)
    return [tuple(c) for c in rgb.tolist()]


def _overlap(box: Sequence[float], others: Iterable[Sequence[float]]) -> float:
    """Largest intersection / smaller-box area between ``box`` and the ``others``."""
    worst = 0.0
    x1, y1, x2, y2 = box
    area = (x2 - x1) * (y2 - y1)
    for ox1, oy1, ox2, oy2 in others:
        iw = min(x2, ox2) - max(x1, ox1)
        ih = min(y2, oy2) - max(y1, oy1)
        if iw > 0 and ih > 0:
            worst = max(worst, iw * ih / min(area, (ox2 - ox1) * (oy2 - oy1)))
    return worst


class ShapesDataset(MultiLabelDataset):
    """A split of RARL-Shapes, drawn on the fly.

    Args:
        split: ``"train"`` or ``"test"`` (different images).
        num_images: images in the split; default 3000 (train) or 1000 (test).
        image_size: side of the square RGB images, in pixels (>= 32).
        seed: dataset seed (>= 0); with the split it fixes every image.
    """

    name = "shapes"
    classes = CLASSES

    def __init__(self, split: str = "train", *, num_images: int | None = None, image_size: int = 256, seed: int = 0):
        check_choice("split", split, tuple(SPLITS))
        if num_images is None:
            num_images = DEFAULT_SIZES[split]
        if isinstance(num_images, bool) or not isinstance(num_images, Integral) or num_images < 1:
            raise ConfigError(f"num_images must be a positive integer, got {num_images!r}", "pass e.g. num_images=1000")
        if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 32:
            raise ConfigError(f"image_size must be an integer >= 32, got {image_size!r}", "pass e.g. image_size=256")
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}", "pass e.g. seed=0")
        self.split = split
        self.num_images: int = int(num_images)
        self.side: int = int(image_size)
        self.seed: int = int(seed)
        self._labels: np.ndarray | None = None
        self._grain: Image.Image | None = None

    # ---------------------------------------------------------------- the contract

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)``: every Shapes image is a ``side x side`` square."""
        return self.side, self.side

    def __len__(self) -> int:
        return self.num_images

    def image_id(self, index: int) -> str:
        return f"shapes-{self.split}-{self._check(index):06d}"

    def cache_key(self) -> str:
        return f"shapes-{_VERSION}-{self.split}-n{self.num_images}-s{self.side}-seed{self.seed}"

    def labels(self) -> np.ndarray:
        if self._labels is None:
            out = np.zeros((self.num_images, self.num_classes), dtype=np.int8)
            for i in range(self.num_images):
                out[i, self._sample_classes(self._rng(i))] = 1
            out.setflags(write=False)
            self._labels = out
        return self._labels

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The objects of image ``index``: ``(boxes, class_ids)``.

        ``boxes`` is float32 ``[n_obj, 4]``, ``(x1, y1, x2, y2)`` in pixels (tight around the
        drawn polygon); ``class_ids`` is int64 ``[n_obj]``, indices into :attr:`classes`.
        """
        objects, _ = self._layout(self._check(index))
        return (
            np.asarray([o.box for o in objects], dtype=np.float32).reshape(-1, 4),
            np.asarray([o.cls for o in objects], dtype=np.int64),
        )

    def load_image(self, index: int) -> Image.Image:
        objects, rng = self._layout(self._check(index))
        im = self._background(rng)
        draw = ImageDraw.Draw(im)
        self._distractors(draw, rng)
        for o in objects:
            if o.hole is None:
                draw.polygon([tuple(p) for p in o.polygon], fill=o.colour)
            else:  # the ring: its hole shows the background
                x0, y0 = math.floor(o.box[0]), math.floor(o.box[1])
                w, h = math.ceil(o.box[2]) - x0 + 1, math.ceil(o.box[3]) - y0 + 1
                mask = Image.new("L", (w, h), 0)
                md = ImageDraw.Draw(mask)
                md.polygon([(x - x0, y - y0) for x, y in o.polygon], fill=255)
                md.polygon([(x - x0, y - y0) for x, y in o.hole], fill=0)
                im.paste(o.colour, (x0, y0, x0 + w, y0 + h), mask)
        return im

    # ---------------------------------------------------------------- sampling

    def _check(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, Integral) or not 0 <= index < self.num_images:
            raise IndexError(f"index {index!r} out of range for a split of {self.num_images} images")
        return int(index)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], index])

    def _sample_classes(self, rng: np.random.Generator) -> np.ndarray:
        # The first draws of an image's stream: labels() stops here.
        n = int(rng.integers(1, MAX_OBJECTS + 1))
        return rng.choice(len(CLASSES), size=n, replace=False)

    def _layout(self, index: int) -> tuple[list[_Object], np.random.Generator]:
        """The objects of image ``index``, largest first, and the stream, ready to draw the rest."""
        rng = self._rng(index)
        classes = self._sample_classes(rng)
        n = len(classes)
        S = self.side
        # Half of the objects under MID_SIZE, half above; largest first so small ones stay on top.
        small = rng.random(n) < 0.5
        sizes = np.where(small, rng.uniform(MIN_SIZE, MID_SIZE, n), rng.uniform(MID_SIZE, MAX_SIZE, n)) * S
        stretch = np.exp(rng.uniform(math.log(MIN_STRETCH), math.log(MAX_STRETCH), n))
        jitter = rng.uniform(-_JITTER, _JITTER, n)
        turns = rng.integers(0, 4, n)
        free = rng.uniform(0.0, 2.0 * np.pi, n)
        hues = rng.random(n)
        sats = rng.uniform(0.55, 1.0, n)
        vals = rng.uniform(0.7, 1.0, n)
        placements = rng.random((n, _PLACEMENT_TRIES, 2))
        order = np.argsort(-sizes, kind="stable")

        objects: list[_Object] = []
        placed: list[tuple[float, float, float, float]] = []
        for k in order:
            name = CLASSES[classes[k]]
            angle = jitter[k]
            if name in _QUARTER_TURNS:
                angle += turns[k] * np.pi / 2
            elif name in _ANY_ANGLE:
                angle = free[k]
            c, s = math.cos(angle), math.sin(angle)
            a = math.sqrt(stretch[k])
            m = np.array([[c, -s], [s, c]]) @ np.diag([a, 1.0 / a])  # stretch, then rotate
            pts = _SHAPES[name] @ m.T
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            scale = sizes[k] / float((hi - lo).max())
            pts = (pts - (lo + hi) / 2) * scale  # centred on its box, max side = size
            hole = None
            if name == "ring":
                hole = ((_SHAPES[name] * (1.0 - RING_WIDTH)) @ m.T - (lo + hi) / 2) * scale
            half = (hi - lo) * scale / 2
            room = np.maximum(S - 1 - 2 * half, 0.0)
            best, best_ov = None, math.inf
            for u in placements[k]:
                centre = half + u * room
                box = (*(centre - half), *(centre + half))
                ov = _overlap(box, placed)
                if ov < best_ov:
                    best, best_ov = centre, ov
                if ov <= _MAX_OVERLAP:
                    break
            poly = pts + best
            x1, y1, x2, y2 = (float(v) for v in (*poly.min(axis=0), *poly.max(axis=0)))
            placed.append((x1, y1, x2, y2))
            objects.append(
                _Object(
                    cls=int(classes[k]),
                    polygon=poly,
                    hole=None if hole is None else hole + best,
                    box=(x1, y1, x2, y2),
                    colour=_hsv(hues[k], sats[k], vals[k]),
                )
            )
        return objects, rng

    # ---------------------------------------------------------------- drawing

    def _background(self, rng: np.random.Generator) -> Image.Image:
        """A smooth, muted colour field with a pixel grain."""
        S = self.side
        k = int(rng.integers(2, 6))
        hue = rng.random()
        h = (hue + rng.uniform(-0.15, 0.15, k * k)) % 1.0
        field = np.asarray(_hsv_array(h, rng.uniform(0.0, 0.35, k * k), rng.uniform(0.2, 0.75, k * k)), dtype=np.uint8)
        im = Image.fromarray(field.reshape(k, k, 3)).resize((S, S), Image.Resampling.BICUBIC)
        grain = self._grain_tile()
        ox, oy = (int(x) for x in rng.integers(0, S, 2))
        return ImageChops.add(im, grain.crop((ox, oy, ox + S, oy + S)), scale=1.0, offset=-_GRAIN)

    def _grain_tile(self) -> Image.Image:
        if self._grain is None:
            S = self.side
            g = np.random.default_rng([self.seed, 9999]).integers(0, 2 * _GRAIN + 1, (2 * S, 2 * S, 3), dtype=np.uint8)
            self._grain = Image.fromarray(g)
        return self._grain

    def _distractors(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
        """Small line segments, dots and squiggles, all smaller than the smallest object."""
        S = self.side
        u = S / 256.0  # distractor sizes are set for a 256-pixel image
        n = int(rng.integers(_MIN_DISTRACTORS, _MAX_DISTRACTORS + 1))
        kinds = rng.integers(0, 3, n).tolist()
        xy = rng.uniform(0, S, (n, 1, 2))
        colours = _hsv_array(rng.random(n), rng.uniform(0.3, 1.0, n), rng.uniform(0.35, 1.0, n))
        lengths = rng.uniform(4, 15, n) * u
        angles = rng.uniform(0, 2 * np.pi, n)
        widths = np.maximum(1, np.round(rng.uniform(1, 3.5, n) * u)).astype(int).tolist()
        steps = np.clip(rng.normal(0, 4.0 * u, (n, 4, 2)), -5.0 * u, 5.0 * u)  # squiggles <= 20 px
        half = 0.5 * lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        segments = np.concatenate([xy[:, 0] - half, xy[:, 0] + half], axis=1).tolist()
        r = 0.25 * lengths[:, None]
        dots = np.concatenate([xy[:, 0] - r, xy[:, 0] + r], axis=1).tolist()
        walk = np.cumsum(np.concatenate([np.zeros((n, 1, 2)), steps], axis=1), axis=1)
        squiggles = (xy + walk).reshape(n, -1).tolist()
        for i, kind in enumerate(kinds):
            if kind == 0:  # a segment
                draw.line(segments[i], fill=colours[i], width=widths[i])
            elif kind == 1:  # a dot
                draw.ellipse(dots[i], fill=colours[i])
            else:  # a squiggle: a short random walk
                draw.line(squiggles[i], fill=colours[i], width=max(1, widths[i] - 1), joint="curve")


__all__ = ["CLASSES", "DEFAULT_SIZES", "SPLITS", "ShapesDataset"]
