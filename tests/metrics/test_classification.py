"""Classification metrics: AUC (MONAI + bootstrap CI), operating points, calibration, multi-class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.metrics.classification import (
    _rank_auc,
    balanced_accuracy,
    binary_report,
    bootstrap_auc_ci,
    choose_operating_point,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    multiclass_report,
    one_vs_rest_auc,
    roc_auc,
    roc_curve,
    sens_spec_at,
)


def _data(n=200, sep=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    s = rng.normal(0, 1, n) + sep * y
    return y, s


def test_auc_known_values_and_agreement():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count half
    y, s = _data()
    assert abs(roc_auc(y, s) - _rank_auc(y, s)) < 1e-9
    fpr, tpr, _ = roc_curve(y, s)
    assert abs(np.trapezoid(tpr, fpr) - roc_auc(y, s)) < 1e-9


def test_bootstrap_ci_brackets_auc_and_shrinks_with_n():
    y, s = _data(100)
    lo, hi = bootstrap_auc_ci(y, s, n_boot=500)
    assert lo < roc_auc(y, s) < hi
    y2, s2 = _data(1000)
    lo2, hi2 = bootstrap_auc_ci(y2, s2, n_boot=500)
    assert hi2 - lo2 < hi - lo


def test_operating_points_meet_targets_on_validation():
    y, s = _data(300)
    t_sens = choose_operating_point(y, s, sensitivity=0.9)
    t_spec = choose_operating_point(y, s, specificity=0.9)
    a, b = sens_spec_at(y, s, t_sens), sens_spec_at(y, s, t_spec)
    assert a["sensitivity"] >= 0.9 and b["specificity"] >= 0.9
    assert t_sens < t_spec and a["sensitivity"] > b["sensitivity"]
    assert a["sensitivity_ci_low"] < a["sensitivity"] < a["sensitivity_ci_high"]


def test_operating_point_impossible_without_class():
    with pytest.raises(InputError, match="no positive"):
        choose_operating_point([0, 0, 0], [0.1, 0.2, 0.3], sensitivity=0.95)
    with pytest.raises(InputError, match="no negative"):
        choose_operating_point([1, 1], [0.1, 0.2], specificity=0.95)
    with pytest.raises(InputError, match="no examples"):
        roc_auc([1, 1, 1], [0.2, 0.3, 0.4])


def test_confusion_and_balanced_accuracy():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert abs(balanced_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 0]) - (0.5 + 1 + 0) / 3) < 1e-12
    with pytest.raises(InputError):
        confusion_matrix([0, 3], [0, 0], 2)


def test_calibration_and_temperature():
    rng = np.random.default_rng(1)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)  # perfectly calibrated
    ece, _ = expected_calibration_error(y, p)
    assert ece < 0.03
    ece_bad, _ = expected_calibration_error(y, np.clip(p * 0.3 + 0.7, 0, 1))
    assert ece_bad > 0.2
    # over-confident logits: true T ~ 3 recovered
    z = rng.normal(0, 1, (4000, 1)) * np.array([[1.0, -1.0]])
    y2 = (rng.random(4000) < 1 / (1 + np.exp(-(z[:, 1] - z[:, 0])))).astype(int)
    t = fit_temperature(z * 3, y2)
    assert 2.5 < t < 3.5


def test_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300)
    probs[np.arange(300), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    ova = one_vs_rest_auc(y, probs, ["a", "b", "c"])
    assert all(v > 0.7 for v in ova["per_class"].values())
    rep = multiclass_report(y, probs, ["a", "b", "c"])
    assert rep["balanced_accuracy"] > 0.5


def test_binary_report_files(tmp_path):
    yv, sv = _data(150, seed=1)
    yt, st = _data(150, seed=2)
    pv, pt = 1 / (1 + np.exp(-sv)), 1 / (1 + np.exp(-st))
    rep = binary_report(yv, pv, yt, pt, out_dir=tmp_path, n_boot=200, class_names=("benign", "malignant"))
    assert set(rep["operating_points"]) == {"high_sensitivity", "high_specificity", "youden"}
    assert rep["auc_ci95"][0] < rep["auc"] < rep["auc_ci95"][1]
    for f in ("metrics.json", "operating_points.csv", "confusion_matrix.csv", "reliability.png"):
        assert (tmp_path / f).is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["auc"] == rep["auc"]
    # no positives in validation: the report says so instead of inventing a threshold
    rep2 = binary_report(np.zeros(10, int), np.linspace(0, 1, 10), yt, pt, n_boot=50)
    assert "high_sensitivity" not in rep2["operating_points"]
    assert any("no positive" in n for n in rep2["notes"])
