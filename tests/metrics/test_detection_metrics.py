"""Hand-made cases for point matching, P/R/F1, AP and threshold selection."""

import numpy as np
import pytest

from medseg.metrics.detection import (
    _admissible_matching,
    average_precision,
    detection_scores,
    match_points,
    pooled_scores,
    precision_recall_curve,
    radius_in_pixels,
    select_threshold,
)


def test_exact_matches_are_perfect():
    ref = [(10, 10), (30, 30), (50, 10)]
    s = detection_scores(ref, ref, radius=3)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 0, 0)
    assert s["f1"] == 1.0 and s["mean_distance"] == 0.0


def test_duplicates_count_as_false_positives():
    ref = [(10, 10)]
    pred = [(10, 11), (11, 10), (10, 10)]
    s = detection_scores(pred, ref, radius=3)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 2, 0)
    assert s["precision"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 / (2 + 2))
    # the closest duplicate is the one matched
    m = match_points(pred, ref, 3)
    assert m.pairs.tolist() == [[2, 0]]


def test_near_miss_just_outside_and_on_the_radius():
    ref = [(0, 0)]
    assert detection_scores([(3.0, 4.0)], ref, radius=5.0)["tp"] == 1  # d == radius is a match
    s = detection_scores([(3.0, 4.01)], ref, radius=5.0)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 1) and s["f1"] == 0.0


def test_hungarian_beats_greedy_assignment():
    # greedy nearest-first would match pred0->ref1 (d=1) and leave ref0 unmatched;
    # the optimal one-to-one assignment matches both.
    ref = [(0, 0), (2, 0)]
    pred = [(1.5, 0), (3.5, 0)]
    m = match_points(pred, ref, radius=2.0)
    assert m.tp == 2
    assert sorted(map(tuple, m.pairs.tolist())) == [(0, 0), (1, 1)]


def test_empty_sets():
    assert detection_scores([], [], 5)["f1"] == 1.0
    s = detection_scores([(1, 1)], [], 5)
    assert (s["tp"], s["fp"], s["fn"], s["precision"], s["f1"]) == (0, 1, 0, 0.0, 0.0)
    s = detection_scores(np.zeros((0, 2)), [(1, 1), (9, 9)], 5)
    assert (s["fn"], s["recall"], s["f1"]) == (2, 0.0, 0.0)


def test_bad_shapes_and_radius():
    with pytest.raises(ValueError, match="radius"):
        match_points([(0, 0)], [(0, 0)], 0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        match_points([(0, 0, 0)], [(0, 0)], 1)


def test_pooled_is_micro_average():
    a = detection_scores([(0, 0)], [(0, 0)], 1)  # tp 1
    b = detection_scores([(0, 0), (5, 5)], [(9, 9)], 1)  # fp 2 fn 1
    p = pooled_scores([a, b])
    assert (p["tp"], p["fp"], p["fn"]) == (1, 2, 1)
    assert p["f1"] == pytest.approx(2 / (2 + 3))
    assert p["n_images"] == 2


def test_pr_curve_ap_and_threshold_selection():
    ref = [np.array([(10, 10), (40, 40)]), np.array([(20, 20)])]
    # image 0: two true detections (0.9, 0.6) and a false one (0.7); image 1: true (0.8), false (0.2)
    preds = [
        (np.array([(10, 11), (40, 39), (70, 70)]), np.array([0.9, 0.6, 0.7])),
        (np.array([(21, 20), (90, 90)]), np.array([0.8, 0.2])),
    ]
    c = precision_recall_curve(preds, ref, radius=3)
    assert c["thresholds"].tolist() == [0.9, 0.8, 0.7, 0.6, 0.2]
    assert c["recall"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    assert c["precision"].tolist() == pytest.approx([1.0, 1.0, 2 / 3, 3 / 4, 3 / 5])
    # interpolated AP: recall 0->2/3 at precision 1, 2/3->1 at precision 3/4
    assert average_precision(preds, ref, radius=3) == pytest.approx(2 / 3 * 1.0 + 1 / 3 * 0.75)
    t, f1 = select_threshold(preds, ref, radius=3)
    # F1 at 0.8: 2/(2+0+1)*... tp2 fp0 fn1 -> 0.8; at 0.6: tp3 fp1 fn0 -> 6/7
    assert t == 0.6 and f1 == pytest.approx(6 / 7)


def test_ap_edge_cases_and_units():
    assert average_precision([(np.zeros((0, 2)), np.zeros(0))], [np.zeros((0, 2))], 3) == 1.0
    assert average_precision([(np.array([(1, 1)]), np.array([0.5]))], [np.zeros((0, 2))], 3) == 0.0
    assert average_precision([(np.zeros((0, 2)), np.zeros(0))], [np.array([(1, 1)])], 3) == 0.0
    assert radius_in_pixels(3.0, 0.5) == 6.0


def _dense_reference(p, r, radius):
    """The matching as first written: one Hungarian assignment on the whole distance matrix."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    d = cdist(p, r)
    ok = d <= radius
    rows, cols = linear_sum_assignment(np.where(ok, d, radius * (min(len(p), len(r)) + 1) + 1.0))
    keep = ok[rows, cols]
    return int(keep.sum()), float(d[rows[keep], cols[keep]].sum())


def test_matching_by_components_equals_the_dense_assignment():
    rng = np.random.default_rng(0)
    for t in range(300):
        n_p, n_r = (int(v) for v in rng.integers(1, 60, 2))
        side = float(rng.choice([10, 30, 100]))
        if t % 3 == 0:  # integer grids: ties and points exactly on the radius
            p, r = (
                rng.integers(0, int(side), (n_p, 2)).astype(float),
                rng.integers(0, int(side), (n_r, 2)).astype(float),
            )
        else:
            p, r = rng.uniform(0, side, (n_p, 2)), rng.uniform(0, side, (n_r, 2))
        radius = float(rng.choice([1.0, 2.0, 4.0, 7.5]))
        tp, total = _dense_reference(p, r, radius)
        m = match_points(p, r, radius)  # an image's points: one dense assignment, as first written
        assert m.tp == tp and m.distances.sum() == pytest.approx(total, abs=1e-9), t
        rows, cols, dist = _admissible_matching(p, r, radius, dense_max_pairs=0)  # a slide's: by components
        assert len(rows) == tp and dist.sum() == pytest.approx(total, abs=1e-9), t
        assert (dist <= radius).all() and len(set(rows)) == len(set(cols)) == tp
        assert np.allclose(dist, np.hypot(*(p[rows] - r[cols]).T))


def test_matching_a_slide_worth_of_points_stays_small():
    """100k x 100k points (half a slide's nuclei) would be an 80 GB matrix; components keep it light."""
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 14000, (100_000, 2))
    pred = np.concatenate([ref[:75_000] + rng.normal(0, 1.0, (75_000, 2)), rng.uniform(0, 14000, (15_000, 2))])
    m = match_points(pred, ref, 4.0)
    assert 74_500 <= m.tp <= 75_500 and m.fn == 100_000 - m.tp and m.fp == 90_000 - m.tp
