"""Cross-validation: K folds of a task trained into one parent run, their summary, their ensemble.

- :func:`train_folds` (``medseg train CONFIG --fold k|all`` with ``data.folds: K``): the split
  (:mod:`.split`: deterministic by case, stratified, patient-grouped), one ordinary run folder per
  fold, the summary table (:mod:`.summary`).
- The parent run folder loads as the fold ensemble:
  ``medseg.engine.checkpoint.load_run_model(PARENT)`` returns a
  :class:`~medseg.engine.ensemble.FoldEnsemble`.
"""

from __future__ import annotations

from medseg.tasks.crossval.run import fold_config, parse_fold, train_folds
from medseg.tasks.crossval.split import fold_datalist, prepare_split, read_split
from medseg.tasks.crossval.summary import fold_finished, mean_sd, write_cv_summary

__all__ = [
    "train_folds",
    "fold_config",
    "parse_fold",
    "prepare_split",
    "read_split",
    "fold_datalist",
    "write_cv_summary",
    "mean_sd",
    "fold_finished",
]
