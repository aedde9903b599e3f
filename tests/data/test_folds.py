"""Cross-validation splits: deterministic by case, balanced, stratified, patient-grouped."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from medseg.data.folds import assign_folds, group_of
from medseg.errors import ConfigError


def _cases(n):
    return [f"/data/case_{i:03d}.nii.gz" for i in range(n)]


def test_same_cases_same_folds_whatever_the_order():
    cases = _cases(23)
    a = dict(zip(cases, assign_folds(cases, 5, seed=1)))
    shuffled = cases[:]
    random.Random(0).shuffle(shuffled)
    b = dict(zip(shuffled, assign_folds(shuffled, 5, seed=1)))
    assert a == b
    assert a != dict(zip(cases, assign_folds(cases, 5, seed=2)))  # the seed changes the split


def test_folds_are_balanced_and_cover_every_case():
    folds = assign_folds(_cases(23), 5)
    sizes = sorted(Counter(folds).values())
    assert sorted(set(folds)) == [0, 1, 2, 3, 4] and sizes == [4, 4, 5, 5, 5]


def test_stratified_by_label_presence():
    cases = _cases(20)
    positive = [i % 4 == 0 for i in range(20)]  # 5 positives
    folds = assign_folds(cases, 5, strata=positive)
    per_fold = Counter(f for f, p in zip(folds, positive) if p)
    assert sorted(per_fold.values()) == [1, 1, 1, 1, 1]
    assert sorted(Counter(folds).values()) == [4, 4, 4, 4, 4]


def test_a_patient_is_never_in_two_folds():
    rng = random.Random(3)
    cases, entries = [], []
    for p in range(12):
        for s in range(rng.randint(1, 4)):  # 1 to 4 scans per patient
            cases.append(f"p{p}_s{s}.nii.gz")
            entries.append({"image": cases[-1], "patient": f"PAT{p}"})
    groups = [group_of(e, c) for e, c in zip(entries, cases)]
    folds = assign_folds(cases, 4, groups=groups)
    by_patient: dict[str, set[int]] = {}
    for e, f in zip(entries, folds):
        by_patient.setdefault(e["patient"], set()).add(f)
    assert all(len(v) == 1 for v in by_patient.values())
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.values()) <= 4  # balanced up to one patient's scans


def test_group_key_precedence_and_default():
    assert group_of({"image": "a", "patient": "X", "group": "G"}, "a") == "patient:X"
    assert group_of({"image": "a", "group": 7}, "a") == "group:7"
    assert group_of({"image": "a", "patient": ""}, "a") == "case:a"


def test_bad_requests_are_config_errors():
    with pytest.raises(ConfigError, match="at least 5 cases"):
        assign_folds(_cases(4), 5)
    with pytest.raises(ConfigError, match=r"groups \(patients\)"):
        assign_folds(_cases(6), 4, groups=["a", "a", "b", "b", "c", "c"])
    with pytest.raises(ConfigError, match="listed twice"):
        assign_folds(["a", "a", "b"], 2)
    with pytest.raises(ConfigError, match="at least 2"):
        assign_folds(_cases(4), 1)
