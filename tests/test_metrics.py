"""Tests of rarl_gym.metrics against sklearn, a transcription of the VOC devkit and hand-worked cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from rarl_gym.errors import ConfigError
from rarl_gym.metrics import (
    MetricReport,
    average_precision,
    evaluate,
    mean_average_precision,
    topk_prf,
)


def random_case(seed: int, n: int = 60, num_classes: int = 6):
    """Scores with many ties (8 levels) and labels with ~10% difficult entries."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 8, (n, num_classes)) / 8
    labels = rng.choice([-1, 0, 1], size=(n, num_classes), p=[0.1, 0.6, 0.3])
    labels[0], labels[1] = 1, 0  # every class has a positive and a negative
    return scores, labels


def devkit_voc07(scores: np.ndarray, labels: np.ndarray) -> float:
    """Line-by-line port of VOCevalcls.m for one class (gt: 1 / -1 / 0 = difficult)."""
    gt = np.where(labels == 1, 1, np.where(labels == 0, -1, 0))
    si = np.argsort(-scores, kind="stable")  # MATLAB's sort is stable
    tp, fp = np.cumsum(gt[si] > 0), np.cumsum(gt[si] < 0)
    npos = (gt > 0).sum()
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)
    ap = 0.0
    for j in range(11):  # t = j/10, recall >= t tested exactly
        sel = prec[10 * tp >= j * npos]
        ap += (np.nanmax(sel) if sel.size else 0.0) / 11
    return ap


@pytest.mark.parametrize("seed", range(5))
def test_area_ap_matches_sklearn_with_ties_and_difficult(seed):
    scores, labels = random_case(seed)
    ap = average_precision(scores, labels, mode="area")
    keep = labels >= 0
    expected = [average_precision_score(labels[keep[:, c], c], scores[keep[:, c], c]) for c in range(labels.shape[1])]
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)
    assert mean_average_precision(scores, labels) == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_voc07_ap_matches_devkit_port(seed):
    scores, labels = random_case(seed)
    ap = average_precision(scores, labels, mode="voc07")
    expected = [devkit_voc07(scores[:, c], labels[:, c]) for c in range(labels.shape[1])]
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)


def test_hand_worked_ranking():
    # Ranking [1, 0, 1, 0, 0], npos = 2. (precision, recall) per rank:
    # (1, .5) (.5, .5) (2/3, 1) (.5, 1) (.4, 1).
    # 11-point: t = 0, .1, .., .5 -> max precision at recall >= t = 1 (6 points);
    #           t = .6, .., 1     -> 2/3 (5 points)  => (6 + 5 * 2/3) / 11 = 28/33.
    # Area: recall steps .5 at precision 1 and .5 at precision 2/3 => 5/6.
    scores = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]])
    labels = np.array([[1], [0], [1], [0], [0]])
    assert average_precision(scores, labels, "voc07")[0] == pytest.approx(28 / 33, abs=1e-15)
    assert average_precision(scores, labels, "area")[0] == pytest.approx(5 / 6, abs=1e-15)


def test_voc07_recall_levels_are_exact():
    # npos = 10, ranking 1 1 1 0 1 1 1 1 1 1 1: at rank 3 recall is exactly 0.3 with precision 1,
    # so t = 0, .1, .2, .3 give 1; later ranks reach recall m/10 at precision m/(m+1), the best of
    # which is 10/11 for t = .4 .. 1 => (4 + 7 * 10/11) / 11 = 114/121. (An np.arange port, where
    # t = 0.30000000000000004, would give (3 + 8 * 10/11) / 11 instead.)
    ranking = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    scores = -np.arange(len(ranking), dtype=float)[:, None]
    labels = np.array(ranking)[:, None]
    assert average_precision(scores, labels, "voc07")[0] == pytest.approx(114 / 121, abs=1e-15)


def test_ties_area_vs_voc07():
    # Scores .9, .5, .5. Area (sklearn): the tied pair is one threshold with TP 1, FP 2 -> 1/3
    # whichever of the two is positive. VOC07: stable order, so the positive at index 1 is ranked
    # 2nd (precision 1/2), at index 2 ranked 3rd (precision 1/3).
    scores = np.array([[0.9, 0.9], [0.5, 0.5], [0.5, 0.5]])
    labels = np.array([[0, 0], [1, 0], [0, 1]])
    np.testing.assert_allclose(average_precision(scores, labels, "area"), [1 / 3, 1 / 3], atol=1e-15)
    np.testing.assert_allclose(average_precision(scores, labels, "voc07"), [1 / 2, 1 / 3], atol=1e-15)


def test_difficult_ignored_per_class():
    # Class 0: ranked labels [-1, 0, 1, 1]; the difficult top image is dropped, leaving 0 1 1:
    #   area = (1/2 + 2/3) / 2 = 7/12   (as negative: (1/3 + 2/4)/2 = 5/12; as positive: 29/36)
    #   voc07: precision 1/2 at recall .5, 2/3 at recall 1 -> 2/3 at all 11 points = 2/3.
    # Class 1: the same image is a positive ranked first -> AP 1 (not ignored for class 1).
    scores = np.array([[0.9, 0.9], [0.8, 0.1], [0.7, 0.2], [0.6, 0.3]])
    labels = np.array([[-1, 1], [0, 0], [1, 0], [1, 0]])
    np.testing.assert_allclose(average_precision(scores, labels, "area"), [7 / 12, 1.0], atol=1e-15)
    np.testing.assert_allclose(average_precision(scores, labels, "voc07"), [2 / 3, 1.0], atol=1e-15)


def test_class_without_positive_is_nan_and_skipped():
    # Class 1 has only absent and difficult entries. Class 0: ranking 0 1 -> area 1/2.
    scores = np.array([[0.9, 0.3], [0.4, 0.8]])
    labels = np.array([[0, -1], [1, 0]])
    for mode in ("area", "voc07"):
        ap = average_precision(scores, labels, mode)
        assert ap[0] == pytest.approx(0.5, abs=1e-15) and math.isnan(ap[1])
        assert mean_average_precision(scores, labels, mode) == pytest.approx(0.5, abs=1e-15)
    assert math.isnan(mean_average_precision(scores, np.zeros((2, 2), int)))


def test_torch_input():
    scores, labels = random_case(7)
    t_scores, t_labels = torch.tensor(scores, dtype=torch.float32), torch.tensor(labels, dtype=torch.int8)
    for mode in ("area", "voc07"):
        ap = average_precision(t_scores, t_labels, mode)
        assert isinstance(ap, np.ndarray) and ap.dtype == np.float64
        np.testing.assert_allclose(ap, average_precision(scores, labels, mode), atol=1e-12)
    assert topk_prf(t_scores, t_labels) == topk_prf(scores, labels)


# 4 images x 4 classes, k = 2, threshold = .5. Predictions (top-2 AND score >= .5):
#   img0 [.9 .8 .7 .1]  -> {0, 1}   (class 2 passes the threshold but is 3rd: k bites)
#   img1 [.6 .3 .2 .55] -> {0, 3}   (class 3 is difficult there: ignored)
#   img2 [.2 .9 .4 .3]  -> {1}      (class 2 is 2nd but .4 < .5: threshold bites)
#   img3 [.1 .2 .3 .4]  -> {}
PRF_SCORES = np.array([[0.9, 0.8, 0.7, 0.1], [0.6, 0.3, 0.2, 0.55], [0.2, 0.9, 0.4, 0.3], [0.1, 0.2, 0.3, 0.4]])
PRF_LABELS = np.array([[1, 0, 1, 0], [1, 0, 0, -1], [0, 1, 0, 0], [0, 0, 0, 1]])


def test_topk_prf_hand_worked():
    # Nc = [2, 1, 0, 0], Np = [2, 2, 0, 0], Ng = [2, 1, 1, 1]
    # CP = (1 + 1/2 + 0 + 0)/4 = 3/8, CR = (1 + 1 + 0 + 0)/4 = 1/2, CF1 = 2(3/8)(1/2)/(7/8) = 3/7
    # OP = 3/4, OR = 3/5, OF1 = 2(3/4)(3/5)/(27/20) = 2/3
    got = topk_prf(PRF_SCORES, PRF_LABELS, k=2, threshold=0.5)
    expected = {"CP": 3 / 8, "CR": 1 / 2, "CF1": 3 / 7, "OP": 3 / 4, "OR": 3 / 5, "OF1": 2 / 3}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-15), key


def test_topk_prf_edge_cases():
    # Ties: three equal scores, k = 1 -> the first class (stable order). Class 1 has no positive:
    # left out of CR, but its one wrong prediction counts (precision 0) in CP; class 2 has Np = 0.
    scores = np.array([[0.5, 0.5, 0.5], [0.1, 0.9, 0.2]])
    labels = np.array([[1, 0, 0], [0, 0, 1]])
    # img0 -> {0} correct; img1 -> {1} wrong. Nc = [1,0,0], Np = [1,1,0], Ng = [1,0,1]
    # CP = (1 + 0 + 0)/3 = 1/3, CR = (1 + 0)/2 = 1/2, OP = 1/2, OR = 1/2.
    got = topk_prf(scores, labels, k=1, threshold=0.0)
    assert got["CP"] == pytest.approx(1 / 3) and got["CR"] == pytest.approx(1 / 2)
    assert got["CF1"] == pytest.approx(2 / 5) and got["OP"] == got["OR"] == got["OF1"] == pytest.approx(1 / 2)
    # Nothing predicted and nothing to find: zeros, never NaN.
    none = topk_prf(scores, np.zeros_like(labels), k=1, threshold=2.0)
    assert none == {key: 0.0 for key in ("CP", "CR", "CF1", "OP", "OR", "OF1")}
    # k larger than L is capped.
    assert topk_prf(scores, labels, k=10, threshold=0.0)["OR"] == 1.0


def test_evaluate_report():
    report = evaluate(PRF_SCORES, PRF_LABELS, k=2, threshold=0.5, classes=["a", "b", "c", "d"])
    assert isinstance(report, MetricReport)
    np.testing.assert_allclose(report.ap_area, average_precision(PRF_SCORES, PRF_LABELS, "area"))
    np.testing.assert_allclose(report.ap_voc07, average_precision(PRF_SCORES, PRF_LABELS, "voc07"))
    assert report.map_area == pytest.approx(np.mean(report.ap_area))
    assert report.CF1 == pytest.approx(3 / 7) and report.classes == ("a", "b", "c", "d")
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["CF1"] == pytest.approx(3 / 7) and set(d["AP_area"]) == {"a", "b", "c", "d"}
    assert type(d["mAP_area"]) is float
    # c: its positive (.7) is ranked first -> AP 1. d: the .55 above its positive (.4) is
    # difficult, so the positive is ranked first again -> AP 1.
    assert d["AP_area"]["c"] == 1.0 and d["AP_area"]["d"] == 1.0
    table = report.table()
    assert "mAP (area)" in table and "mAP (VOC07 11-point)" in table and "CF1 (top-2, p>=0.5)" in table
    assert "42.9" in table  # CF1 = 3/7 in percent
    assert "AP VOC07" in report.table() and "AP VOC07" not in report.table(per_class=False)
    md = report.markdown()
    assert md.splitlines()[0] == "| metric | value (%) |" and "| OF1 (top-2, p>=0.5) | 66.7 |" in md


def test_evaluate_nan_class_and_default_names():
    scores = np.array([[0.9, 0.3], [0.4, 0.8]])
    report = evaluate(scores, np.array([[0, 0], [1, 0]]))
    assert report.classes == ("0", "1")
    d = report.to_dict()
    assert d["AP_area"] == {"0": 0.5, "1": None} and d["mAP_area"] == 0.5
    assert "n/a" in report.table() and "n/a" in report.markdown()


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "same shape"),
        (np.zeros(3), np.zeros(3), r"\[N, L\]"),
        (np.zeros((2, 2)), np.array([[0, 2], [1, 0]]), "labels must be"),
        (np.array([[0.1, np.nan], [0.2, 0.3]]), np.zeros((2, 2)), "NaN"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
    ],
)
def test_invalid_inputs(scores, labels, match):
    for fn in (average_precision, mean_average_precision, topk_prf, evaluate):
        with pytest.raises(ConfigError, match=match):
            fn(scores, labels)


def test_invalid_arguments():
    scores, labels = PRF_SCORES, PRF_LABELS
    with pytest.raises(ConfigError, match="AP mode"):
        average_precision(scores, labels, mode="voc12")
    for k in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="k must be"):
            topk_prf(scores, labels, k=k)
    with pytest.raises(ConfigError, match="threshold"):
        topk_prf(scores, labels, threshold=float("nan"))
    with pytest.raises(ConfigError, match="class names"):
        evaluate(scores, labels, classes=["a", "b"])


def test_grounding_hand_worked():
    """Pointing game and CorLoc of the label-giving regions, worked by hand.

    Image 0 (labels: class 0 and class 1 present, class 2 absent):
      class 0: region (0, 0, 2, 2), centre (1, 1); the cat box (0.5, 0.5, 3, 3) holds the centre: a point hit;
               IoU = overlap 1.5^2 = 2.25 / (4 + 6.25 - 2.25) = 0.28: no CorLoc hit.
      class 1: region (4, 4, 6, 6), centre (5, 5); boxes (0, 0, 1, 1) (missed) and (4, 4, 6, 7)
               (holds the centre, IoU 4 / 6 = 0.67): both hits (either box may be hit).
      class 2: absent, its box (and region) do not count.
    Image 1: class 0 present (difficult boxes already left out: no box), class 1 present with the box
      (0, 0, 1, 1) and region (2, 2, 3, 3): a miss of both. Class 2 difficult (-1): not a pair.
    Pairs: (0, 0), (0, 1), (1, 1) -> pointing 2/3, CorLoc 1/3.
    """
    from rarl_gym.metrics import grounding

    boxes = np.zeros((2, 3, 4))
    boxes[0, 0], boxes[0, 1], boxes[0, 2] = (0, 0, 2, 2), (4, 4, 6, 6), (0, 0, 9, 9)
    boxes[1, 1], boxes[1, 2] = (2, 2, 3, 3), (0, 0, 1, 1)
    labels = np.array([[1, 1, 0], [1, 1, -1]])
    objects = [
        (np.array([[0.5, 0.5, 3, 3], [0, 0, 1, 1], [4, 4, 6, 7], [0, 0, 9, 9]]), np.array([0, 1, 1, 2])),
        (np.array([[0, 0, 1, 1], [0, 0, 1, 1]]), np.array([1, 2])),
    ]
    out = grounding(boxes, labels, objects)
    assert out["pairs"] == 3
    assert out["pointing"] == pytest.approx(2 / 3) and out["corloc"] == pytest.approx(1 / 3)
    assert grounding(boxes, labels, objects, iou=0.25)["corloc"] == pytest.approx(2 / 3)  # class 0's IoU 0.28 now counts
    empty = grounding(boxes, np.zeros((2, 3)), objects)
    assert empty["pairs"] == 0 and math.isnan(empty["pointing"])
    with pytest.raises(ConfigError, match="do not match"):
        grounding(boxes[:, :2], labels, objects)
