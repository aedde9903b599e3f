"""Hyperparameter and augmentation search on Optuna (``medseg tune CONFIG --trials N``).

- :mod:`.space`: the ``tune.space`` of a config as Optuna suggestions over config keys;
- :mod:`.study`: the storage, sampler, pruner, the objective (one trial = one ordinary run, or one
  cross-validation) and the worker loop (stale trials of killed workers retried);
- :mod:`.outputs`: trials table, best config, plots, review report;
- :mod:`.pipeline`: :func:`tune`, what the command runs.

Optuna is an optional dependency (``pip install 'medseg[tune]'``), imported when a study runs.
"""

from __future__ import annotations

from medseg.tasks.tune.outputs import trials_table, write_best_config, write_plots, write_tune_outputs
from medseg.tasks.tune.pipeline import redact_url, tune, tune_folder
from medseg.tasks.tune.space import DEFAULT_METRIC, check_space, decode_params, suggest
from medseg.tasks.tune.study import TrialRunner, open_study, run_worker, sqlite_url

__all__ = [
    "tune",
    "tune_folder",
    "redact_url",
    "suggest",
    "decode_params",
    "check_space",
    "DEFAULT_METRIC",
    "TrialRunner",
    "open_study",
    "run_worker",
    "sqlite_url",
    "trials_table",
    "write_best_config",
    "write_plots",
    "write_tune_outputs",
]
