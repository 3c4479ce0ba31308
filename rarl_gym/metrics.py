"""Multi-label recognition metrics: per-class AP, mAP, the top-k CP/CR/CF1/OP/OR/OF1, and
grounding (pointing game and CorLoc of the regions that give the labels).

Labels follow the project's convention: an int array ``[N, L]`` with 1 = present, 0 = absent,
-1 = difficult. A difficult entry is ignored *for its class only*: that (image, class) pair counts
neither as a positive nor as a negative, exactly as the VOC devkit ignores its "0" entries.

Every number is a fraction in ``[0, 1]``; only :meth:`MetricReport.table` and
:meth:`MetricReport.markdown` print percent. Everything is vectorised over images and classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rarl_gym.errors import ConfigError, check_choice

#: Modes of :func:`average_precision`.
AP_MODES = ("area", "voc07")
#: Keys of :func:`topk_prf`, in table order.
PRF_KEYS = ("CP", "CR", "CF1", "OP", "OR", "OF1")


def _as_numpy(x: Any, dtype: type) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (bfloat16 has no numpy dtype: go through float64)
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=dtype)


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(scores float64 [N, L], labels int8 [N, L])``; raises :class:`ConfigError`."""
    try:
        s, y = _as_numpy(scores, np.float64), _as_numpy(labels, np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"scores and labels must be numeric arrays ({e})", "pass numpy arrays or tensors") from e
    if s.ndim != 2 or s.shape != y.shape:
        raise ConfigError(
            f"scores and labels must both be [N, L] with the same shape; got {s.shape} and {y.shape}",
            "pass one row per image and one column per class in both",
        )
    if s.size == 0:
        raise ConfigError(f"scores and labels are empty (shape {s.shape})", "evaluate at least one image and class")
    if np.isnan(s).any():
        raise ConfigError(
            f"scores hold {int(np.isnan(s).sum())} NaN value(s)", "check the model's outputs (diverged training?)"
        )
    bad = ~np.isin(y, (-1, 0, 1))
    if bad.any():
        raise ConfigError(
            f"labels must be 1 (present), 0 (absent) or -1 (difficult); found {np.unique(y[bad])[:5].tolist()}",
            "encode labels as int {-1, 0, 1}",
        )
    return s, y.astype(np.int8)


def _ranked(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class, images sorted by descending score (stable): ``(scores, positive, cumTP, cumFP)``, all ``[L, N]``."""
    s, y = np.ascontiguousarray(s.T), np.ascontiguousarray(y.T)  # sorting rows is much faster
    order = np.argsort(-s, axis=1, kind="stable")
    s, y = np.take_along_axis(s, order, 1), np.take_along_axis(y, order, 1)
    pos = y == 1
    return s, pos, np.cumsum(pos, 1), np.cumsum(y == 0, 1)


def _precision(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``tp / (tp + fp)``, 0 where nothing is ranked yet (only difficult entries above)."""
    n = tp + fp
    return np.divide(tp, n, out=np.zeros(tp.shape), where=n > 0)


def average_precision(scores: Any, labels: Any, mode: str = "area") -> np.ndarray:
    """Per-class average precision.

    Args:
        scores: ``[N, L]`` float scores (numpy or torch; any monotone scale, AP depends on ranks only).
        labels: ``[N, L]`` int in ``{1, 0, -1}``; -1 (difficult) is ignored for that class.
        mode: ``"area"``: non-interpolated AP, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct
            score thresholds, identical to ``sklearn.metrics.average_precision_score`` (tied scores
            form one threshold). ``"voc07"``: the VOC2007 devkit's 11-point interpolated AP:
            ranks sorted by descending score (ties in input order), ``p(t)`` = max precision at
            recall ``>= t`` (0 if none) for t = 0, 0.1, ..., 1, AP = mean of the 11 values.
            ``recall >= t`` is tested exactly (``10 * TP >= j * npos`` in integers for t = j/10), so recall
            0.3 reaches t = 0.3, unlike ``np.arange(0, 1.1, 0.1)`` ports.

    Returns:
        ap: ``[L]`` float64 in ``[0, 1]``; NaN for a class without a positive (after ignoring difficult).
    """
    check_choice("AP mode", mode, AP_MODES)
    s, y = _validate(scores, labels)
    s, pos, tp, fp = _ranked(s, y)
    npos = tp[:, -1].astype(np.float64)  # [L]
    prec = _precision(tp, fp)  # [L, N] precision at each ranked position
    num_classes, n = s.shape
    if mode == "area":
        # Each positive is credited the precision at the end of its tie group (sklearn's thresholds).
        group_end = np.append(s[:, 1:] != s[:, :-1], np.ones((num_classes, 1), bool), axis=1)  # [L, N]
        end_idx = np.where(group_end, np.arange(n), n - 1)
        end_idx = np.minimum.accumulate(end_idx[:, ::-1], axis=1)[:, ::-1]  # first group end at or after
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = (pos * np.take_along_axis(prec, end_idx, 1)).sum(1) / npos
    else:
        # 11-point level t = j/10 reached at each position (recall >= t <=> 10 TP >= j npos),
        # best precision per level, then p(t) = max over levels >= t (0 where none is reached).
        level = (10 * tp) // np.maximum(tp[:, -1:], 1)  # [L, N] in 0..10
        best = np.zeros((num_classes, 11))
        np.maximum.at(best, (np.broadcast_to(np.arange(num_classes)[:, None], level.shape), level), prec)
        ap = np.maximum.accumulate(best[:, ::-1], axis=1).mean(1)
    return np.where(npos > 0, ap, np.nan)


def mean_average_precision(scores: Any, labels: Any, mode: str = "area") -> float:
    """Mean over classes of :func:`average_precision`, skipping NaN (classes without a positive).

    Returns:
        mAP: float in ``[0, 1]``; NaN if no class has a positive.
    """
    return _nanmean(average_precision(scores, labels, mode))


def _nanmean(x: np.ndarray) -> float:
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else math.nan


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else 0.0


def _f1(p: float, r: float) -> float:
    return _ratio(2 * p * r, p + r)


def topk_prf(scores: Any, labels: Any, k: int = 3, threshold: float = 0.1) -> dict[str, float]:
    """Per-class and overall precision, recall and F1 of top-k thresholded predictions (ML-GCN's).

    Class c is predicted for an image if c is among its ``k`` highest scores (ties in class order)
    and its score is ``>= threshold``. For class c, ignoring images whose label for c is -1:
    ``Nc`` = correct predictions, ``Np`` = predictions, ``Ng`` = positives. A difficult class
    still takes its slot in the top k (it just does not count).

    Args:
        scores: ``[N, L]`` float, on the scale ``threshold`` refers to (probabilities for 0.1).
        labels: ``[N, L]`` int in ``{1, 0, -1}``.
        k: number of top-ranked classes per image, ``>= 1`` (capped at L).
        threshold: minimum score of a prediction (``-inf`` for pure top-k).

    Returns:
        ``{"CP", "CR", "CF1", "OP", "OR", "OF1"}`` floats in ``[0, 1]``. CP = mean over all classes
        of Nc/Np (0 where Np = 0); CR = mean of Nc/Ng over classes with Ng > 0; CF1 = harmonic mean
        of CP and CR (not the mean of per-class F1); OP = sum Nc / sum Np; OR = sum Nc / sum Ng;
        OF1 = harmonic mean of OP and OR. A zero denominator gives 0.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive int, got {k!r}", "pass k=3 (the usual top-3 protocol)")
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or math.isnan(threshold):
        raise ConfigError(f"threshold must be a number, got {threshold!r}", "pass a probability such as 0.1")
    s, y = _validate(scores, labels)
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]  # [N, k]
    pred = np.zeros(s.shape, bool)
    np.put_along_axis(pred, top, True, axis=1)
    pred &= s >= threshold
    pred &= y >= 0  # drop difficult pairs
    gt = y == 1
    nc, np_, ng = (pred & gt).sum(0), pred.sum(0), gt.sum(0)  # [L] each
    cp = float(np.mean(np.divide(nc, np_, out=np.zeros(nc.shape), where=np_ > 0)))
    has = ng > 0
    cr = float(np.mean(nc[has] / ng[has])) if has.any() else 0.0
    op, or_ = _ratio(nc.sum(), np_.sum()), _ratio(nc.sum(), ng.sum())
    return {"CP": cp, "CR": cr, "CF1": _f1(cp, cr), "OP": op, "OR": or_, "OF1": _f1(op, or_)}


#: Keys of :func:`grounding`.
GROUNDING_KEYS = ("pointing", "corloc")


def grounding(
    label_boxes: Any, labels: Any, objects: Sequence[tuple[np.ndarray, np.ndarray]], iou: float = 0.5
) -> dict[str, Any]:
    """Does the region that gives each true label lie on an object of that class?

    For every (image ``i``, class ``c``) with ``labels[i, c] == 1`` and at least one ground-truth
    box of class ``c`` in ``objects[i]`` (a *pair*):

    * pointing game: a hit when the centre of ``label_boxes[i, c]`` lies inside (or on the edge of)
      a box of class ``c``;
    * CorLoc: a hit when ``label_boxes[i, c]`` overlaps a box of class ``c`` with IoU >= ``iou``.

    Args:
        label_boxes: ``[N, L, 4]`` per image and class the ``(x1, y1, x2, y2)`` region whose score
            is the class's category-wise max (any coordinates, the same as ``objects``'s).
        labels: ``[N, L]`` 1 / 0 / -1 (difficult).
        objects: per image ``(boxes [n, 4], classes [n])``, the ground-truth boxes to point at
            (difficult ones already left out; see :func:`rarl_gym.data.object_boxes`).

    Returns:
        ``{"pointing": fraction, "corloc": fraction, "pairs": count}``; NaN fractions without pairs.
    """
    boxes = _as_numpy(label_boxes, np.float64)
    y = _as_numpy(labels, np.int64)
    if y.ndim != 2 or boxes.shape != (*y.shape, 4) or len(objects) != y.shape[0]:
        raise ConfigError(
            f"grounding: label boxes {boxes.shape}, labels {y.shape} and {len(objects)} object lists do not match",
            "pass label boxes [N, L, 4], labels [N, L] and one (boxes, classes) pair per image",
        )
    n, num_classes = y.shape
    counts = [np.asarray(c).size for _, c in objects]
    image = np.repeat(np.arange(n), counts)  # [M] the image of every object
    gt = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b, _ in objects] + [np.zeros((0, 4))])
    cls = np.concatenate([np.asarray(c, np.int64).reshape(-1) for _, c in objects] + [np.zeros(0, np.int64)])
    keep = y[image, cls] == 1  # objects of a class the image is labelled with
    image, gt, cls = image[keep], gt[keep], cls[keep]
    region = boxes[image, cls]  # [M, 4] the region that gave the object's class
    cx, cy = (region[:, 0] + region[:, 2]) / 2, (region[:, 1] + region[:, 3]) / 2
    inside = (gt[:, 0] <= cx) & (cx <= gt[:, 2]) & (gt[:, 1] <= cy) & (cy <= gt[:, 3])
    w = np.clip(np.minimum(region[:, 2], gt[:, 2]) - np.maximum(region[:, 0], gt[:, 0]), 0, None)
    h = np.clip(np.minimum(region[:, 3], gt[:, 3]) - np.maximum(region[:, 1], gt[:, 1]), 0, None)
    union = (region[:, 2] - region[:, 0]) * (region[:, 3] - region[:, 1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    overlap = w * h / np.maximum(union - w * h, 1e-12) >= iou
    pair = image * num_classes + cls  # [M]: one pair per (image, class); any of its objects may be hit
    pairs = np.unique(pair)
    point_hit = np.zeros(n * num_classes, bool)
    corloc_hit = np.zeros(n * num_classes, bool)
    np.logical_or.at(point_hit, pair, inside)
    np.logical_or.at(corloc_hit, pair, overlap)
    count = len(pairs)
    return {
        "pointing": float(point_hit[pairs].mean()) if count else math.nan,
        "corloc": float(corloc_hit[pairs].mean()) if count else math.nan,
        "pairs": count,
    }


@dataclass(frozen=True)
class MetricReport:
    """All metrics of one evaluation (fractions in ``[0, 1]``; NaN AP = class without positives).

    Attributes:
        ap_area, ap_voc07: ``[L]`` per-class AP, non-interpolated and VOC07 11-point.
        map_area, map_voc07: their NaN-skipping means.
        CP, CR, CF1, OP, OR, OF1: :func:`topk_prf` at ``k`` and ``threshold``.
        classes: ``L`` class names.
    """

    ap_area: np.ndarray
    ap_voc07: np.ndarray
    map_area: float
    map_voc07: float
    CP: float
    CR: float
    CF1: float
    OP: float
    OR: float
    OF1: float
    classes: tuple[str, ...]
    k: int = 3
    threshold: float = 0.1

    def _summary(self) -> list[tuple[str, float]]:
        at = f"top-{self.k}, p>={self.threshold:g}"
        return [("mAP (area)", self.map_area), ("mAP (VOC07 11-point)", self.map_voc07)] + [
            (f"{key} ({at})", getattr(self, key)) for key in PRF_KEYS
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: python floats, NaN -> None, per-class AP keyed by class name."""

        def num(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "mAP_area": num(self.map_area),
            "mAP_voc07": num(self.map_voc07),
            **{key: num(getattr(self, key)) for key in PRF_KEYS},
            "k": int(self.k),
            "threshold": float(self.threshold),
            "AP_area": {c: num(v) for c, v in zip(self.classes, self.ap_area)},
            "AP_voc07": {c: num(v) for c, v in zip(self.classes, self.ap_voc07)},
        }

    def _rows(self, per_class: bool) -> tuple[list[list[str]], list[list[str]]]:
        summary = [[name, _pct(v)] for name, v in self._summary()]
        classes = [[c, _pct(a), _pct(b)] for c, a, b in zip(self.classes, self.ap_area, self.ap_voc07)]
        return summary, classes if per_class else []

    def table(self, per_class: bool = True) -> str:
        """Plain-text table in percent (1 decimal); ``n/a`` for a class without positives."""
        summary, classes = self._rows(per_class)
        w = max(len(r[0]) for r in summary + classes + [["class"]])
        lines = [f"{'metric':<{w}}  {'value':>8}"] + [f"{n:<{w}}  {v:>8}" for n, v in summary]
        if classes:
            lines += ["", f"{'class':<{w}}  {'AP area':>8}  {'AP VOC07':>8}"]
            lines += [f"{c:<{w}}  {a:>8}  {b:>8}" for c, a, b in classes]
        return "\n".join(lines)

    def markdown(self, per_class: bool = True) -> str:
        """GitHub markdown table(s) in percent (1 decimal)."""
        summary, classes = self._rows(per_class)
        lines = ["| metric | value (%) |", "|---|---:|"] + [f"| {n} | {v} |" for n, v in summary]
        if classes:
            lines += ["", "| class | AP area (%) | AP VOC07 11-point (%) |", "|---|---:|---:|"]
            lines += [f"| {c} | {a} | {b} |" for c, a, b in classes]
        return "\n".join(lines)


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


def evaluate(
    scores: Any,
    labels: Any,
    *,
    k: int = 3,
    threshold: float = 0.1,
    classes: Sequence[str] | None = None,
) -> MetricReport:
    """Every metric of a split at once.

    Args:
        scores: ``[N, L]`` class *probabilities* (e.g. sigmoid outputs), numpy or torch. AP only
            depends on ranks, but ``threshold`` of the top-k metrics applies to these values.
        labels: ``[N, L]`` int in ``{1, 0, -1}`` (present, absent, difficult).
        k, threshold: of :func:`topk_prf`.
        classes: ``L`` class names; default ``"0"`` .. ``"L-1"``.

    Returns:
        A :class:`MetricReport`.
    """
    s, y = _validate(scores, labels)
    names = tuple(str(i) for i in range(s.shape[1])) if classes is None else tuple(map(str, classes))
    if len(names) != s.shape[1]:
        raise ConfigError(f"{len(names)} class names for {s.shape[1]} score columns", "pass one name per class")
    ap_area, ap_voc07 = average_precision(s, y, "area"), average_precision(s, y, "voc07")
    return MetricReport(
        ap_area=ap_area,
        ap_voc07=ap_voc07,
        map_area=_nanmean(ap_area),
        map_voc07=_nanmean(ap_voc07),
        **topk_prf(s, y, k=k, threshold=threshold),
        classes=names,
        k=int(k),
        threshold=float(threshold),
    )


__all__ = [
    "AP_MODES",
    "GROUNDING_KEYS",
    "PRF_KEYS",
    "MetricReport",
    "average_precision",
    "evaluate",
    "grounding",
    "mean_average_precision",
    "topk_prf",
]
