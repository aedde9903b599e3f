"""What a study leaves in the tune folder: the trials table, the best config, plots and the report.

- ``trials.csv``: one row per trial (number, state, value, parameters, epochs trained, seconds,
  run folder);
- ``best_config.yaml``: the user's config with the best trial's values, runnable with
  ``medseg train best_config.yaml`` (no ``tune:`` section);
- ``optimization_history.png``, ``param_importances.png``: Optuna's matplotlib plots;
- ``report.html``: the review report, one row per trial (its training curve, value, parameters).
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.config import PipelineConfig, TuneSection, config_to_yaml
from medseg.review.cases import ReviewCase
from medseg.review.report import write_report
from medseg.tasks.datalists import derived_config
from medseg.tasks.tune.space import decode_params
from medseg.tasks.tune.study import import_optuna
from medseg.utils import atomic_write_bytes, atomic_write_records, atomic_write_text

if TYPE_CHECKING:  # Optuna is imported only when a study runs
    import optuna

__all__ = ["trials_table", "best_trial", "write_best_config", "write_plots", "write_tune_outputs"]

log = logging.getLogger("medseg.tasks.tune")


def _seconds(t: optuna.trial.FrozenTrial) -> float | None:
    if t.datetime_start is None or t.datetime_complete is None:
        return None
    return round((t.datetime_complete - t.datetime_start).total_seconds(), 1)


def trials_table(study: optuna.Study, tune: TuneSection) -> list[dict[str, Any]]:
    """One row per trial: ``number, state, value, <param>..., epochs, seconds, last_step, run_dir``."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        params = decode_params(t.params, tune.space)
        last_step = max(t.intermediate_values) if t.intermediate_values else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                **{k: params.get(k) for k in tune.space},
                "epochs": t.user_attrs.get("epochs"),
                "last_step": last_step,
                "seconds": _seconds(t),
                "run_dir": t.user_attrs.get("run_dir"),
            }
        )
    return rows


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial, or None when no trial completed."""
    optuna = import_optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if done else None


def write_best_config(
    cfg: PipelineConfig, tune: TuneSection, trial: optuna.trial.FrozenTrial, path: Path, study_name: str = ""
) -> Path:
    """``best_config.yaml``: ``cfg`` with the trial's values, named ``<name>-best``, without ``tune:``."""
    best = derived_config(
        cfg,
        name=f"{cfg.name}-best",
        output_dir=cfg.output_dir,
        updates=decode_params(trial.params, tune.space),
        keep_folds=True,
    )
    head = (
        f"# best trial {trial.number} of study {study_name!r}: value {trial.value}\n"
        "# train it with: medseg train best_config.yaml\n"
    )
    return atomic_write_text(path, head + config_to_yaml(best))


def _save_figure(ax: Any, path: Path) -> None:
    fig = ax.figure if hasattr(ax, "figure") else ax
    fig.set_size_inches(7, 4.2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    import matplotlib.pyplot as plt  # heavy: only when plots are drawn

    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history and parameter importances (PED-ANOVA, no scikit-learn) as PNGs.

    A plot that cannot be drawn yet (e.g. importances with fewer than two complete trials) is
    skipped with a log line.
    """
    optuna = import_optuna()
    import matplotlib  # heavy: only when plots are drawn

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            _save_figure(ovm.plot_optimization_history(study), folder / "optimization_history.png")
            written.append(folder / "optimization_history.png")
        except (ValueError, RuntimeError) as e:
            log.info("optimisation history not drawn: %s", e)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) >= 2 and study.best_trial.params:
            try:
                ev = optuna.importance.PedAnovaImportanceEvaluator()
                _save_figure(ovm.plot_param_importances(study, evaluator=ev), folder / "param_importances.png")
                written.append(folder / "param_importances.png")
            except (ValueError, RuntimeError, ZeroDivisionError) as e:
                log.info("parameter importances not drawn: %s", e)
    return written


def _case(row: dict[str, Any], tune: TuneSection, metric: str, folder: Path) -> ReviewCase:
    run_dir = Path(row["run_dir"]) if row.get("run_dir") else None
    curve = run_dir / "training_curve.png" if run_dir is not None else None
    metrics: dict[str, float] = {}
    if row["value"] is not None and math.isfinite(row["value"]):
        metrics[metric] = float(row["value"])
    for k in tune.space:
        if isinstance(row.get(k), int | float) and not isinstance(row.get(k), bool):
            metrics[k] = float(row[k])
    status = {"COMPLETE": "ok", "PRUNED": "pruned", "FAIL": "failed"}.get(row["state"], row["state"].lower())
    error = None
    if status == "pruned":
        error = f"pruned after {row.get('epochs')} epochs"
    elif status != "ok":
        error = status
    return ReviewCase(
        case_id=f"trial_{row['number']:04d}",
        task="tune",
        status=status,
        error=error,
        thumbnail=str(curve) if curve is not None and curve.is_file() else None,
        metrics=metrics,
        outputs={"run folder": os.path.relpath(run_dir, folder)} if run_dir is not None else {},
    )


def write_tune_outputs(
    study: optuna.Study, cfg: PipelineConfig, tune: TuneSection, folder: Path, metric: str, plots: bool = True
) -> dict[str, Any]:
    """Write the trials table, the best config, the plots and the review report into ``folder``.

    Returns
    -------
    summary dict: study name, counts per state, best trial number / value / parameters, file paths.
    """
    rows = trials_table(study, tune)
    atomic_write_records(folder / "trials.csv", rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary: dict[str, Any] = {"study": study.study_name, "metric": metric, "trials": counts}
    best = best_trial(study)
    if best is not None:
        summary.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=decode_params(best.params, tune.space),
            best_config=str(write_best_config(cfg, tune, best, folder / "best_config.yaml", study.study_name)),
        )
    epochs = [r["epochs"] for r in rows if r["epochs"] is not None]
    summary["epochs_trained"] = int(sum(epochs))
    if plots:
        summary["plots"] = [str(p) for p in write_plots(study, folder)]
    cases = [_case(r, tune, metric, folder) for r in rows if r["state"] != "WAITING"]
    report_summary = {
        "study": {"status": "ok", "name": study.study_name, **{k.lower(): v for k, v in counts.items()}},
        "best": {
            "status": "ok" if best is not None else "none",
            **{k: v for k, v in summary.items() if k.startswith("best")},
        },
    }
    summary["report"] = str(
        write_report(folder, cases, title=f"medseg tune: {study.study_name}", summary=report_summary)
    )
    summary["trials_table"] = str(folder / "trials.csv")
    return summary
