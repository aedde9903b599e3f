"""K-fold cross-validation splits: deterministic by case, stratified, grouped by patient.

:func:`assign_folds` gives each case a fold index in ``0..K-1``:

- **deterministic by case**: the result depends on the case keys, the seed and K only (not on the
  order of the list), so the same cases always fall into the same folds;
- **grouped**: cases sharing a group key (a datalist ``patient`` or ``group`` entry) always share a
  fold, so no patient is in a fold's training and validation data at once;
- **stratified**: groups are spread so that each fold holds about ``1/K`` of every stratum (e.g.
  label present / absent, or the class of a classification case) and about ``1/K`` of the cases.

MONAI's ``partition_dataset_classes`` stratifies but cannot keep groups together, and
scikit-learn's ``StratifiedGroupKFold`` (which does both) is not a medseg dependency, so the
assignment is written here: groups, largest first (ties in a seeded random order), each go to the
fold that has the fewest of the group's stratum, then the fewest cases.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from medseg.errors import ConfigError

__all__ = ["GROUP_KEYS", "group_of", "assign_folds"]

#: datalist entry keys naming the patient (or any unit) whose cases must stay in one fold, in order of precedence
GROUP_KEYS = ("patient", "group")


def group_of(entry: Mapping[str, Any], case_key: str) -> str:
    """The group of a datalist entry: its ``patient`` (else ``group``) value, else the case itself.

    Parameters
    ----------
    entry : a datalist entry (dict).
    case_key : the case's own key (e.g. its image path), used when the entry names no group.

    Returns
    -------
    A string; patient values are prefixed so that they never equal a case key.
    """
    for k in GROUP_KEYS:
        v = entry.get(k)
        if v is not None and str(v) != "":
            return f"{k}:{v}"
    return f"case:{case_key}"


def _order_key(key: str, seed: int) -> str:
    # a seeded, order-independent tie-break: the hash of (seed, key)
    return hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()


def assign_folds(
    cases: Sequence[str],
    k: int,
    *,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    strata: Sequence[Hashable] | None = None,
) -> list[int]:
    """The fold (``0..k-1``) of each case.

    Parameters
    ----------
    cases : unique case keys (e.g. image paths), any order.
    k : number of folds (>= 2).
    seed : changes the assignment (deterministically).
    groups : group key per case (cases of a group share a fold); default: each case its own group.
    strata : stratum per case (e.g. ``True``/``False`` label presence, a class index); a group's
        stratum is its most frequent one. Default: one stratum.

    Returns
    -------
    ``folds[i]`` = fold of ``cases[i]``.

    Raises
    ------
    ConfigError
        ``k < 2``, duplicate case keys, or fewer groups (patients / cases) than folds.
    """
    n = len(cases)
    if k < 2:
        raise ConfigError(f"data.folds must be at least 2, got {k}")
    if len(set(cases)) != n:
        dup = next(c for c, m in Counter(cases).items() if m > 1)
        raise ConfigError(f"case {dup!r} is listed twice in the data: each case must appear once for folds")
    grp = list(groups) if groups is not None else [f"case:{c}" for c in cases]
    strat = list(strata) if strata is not None else [0] * n
    if len(grp) != n or len(strat) != n:
        raise ValueError("groups and strata need one value per case")
    members: dict[str, list[int]] = {}
    for i, g in enumerate(grp):
        members.setdefault(g, []).append(i)
    if len(members) < k:
        unit = "groups (patients)" if groups is not None and len(members) < n else "cases"
        raise ConfigError(f"data.folds = {k} needs at least {k} {unit}; the data has {len(members)}")
    group_stratum = {g: Counter(strat[i] for i in idx).most_common(1)[0][0] for g, idx in members.items()}
    # largest groups first (hardest to place), ties in a seeded order independent of the input order
    order = sorted(members, key=lambda g: (-len(members[g]), _order_key(g, seed)))
    per_stratum = np.zeros((k, len(set(group_stratum.values()))), dtype=np.int64)
    stratum_index = {s: j for j, s in enumerate(sorted(set(group_stratum.values()), key=repr))}
    sizes = np.zeros(k, dtype=np.int64)
    # folds are tried in a seeded rotation so that fold 0 is not always the first to fill up
    rotation = np.random.default_rng(seed).permutation(k)
    fold_of_group: dict[str, int] = {}
    for g in order:
        j = stratum_index[group_stratum[g]]
        best = min(rotation, key=lambda f: (per_stratum[f, j], sizes[f]))
        fold_of_group[g] = int(best)
        per_stratum[best, j] += len(members[g])
        sizes[best] += len(members[g])
    return [fold_of_group[g] for g in grp]
