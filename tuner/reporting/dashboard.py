"""What a study shows in MLflow: plots and the HTML report on its parent run, and the best-run tag.

The glue between the Optuna study (tuner.study.storage, tuner.study.catalog), the figures (tuner.reporting.plots), the
page (tuner.reporting.study_page) and MLflow (tuner.tracking): it decides what to draw and where it goes. A
study run refreshes it as a subscriber of the runner (`refresh_when_finished`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from tuner.study.trial_attrs import FAMILY_ATTR
from tuner.reporting.ensemble_page import ensemble_sections
from tuner.core.errors import StudyFileError
from tuner.core.metrics import direction_sign
from tuner.models import FAMILIES
from tuner.reporting.plots import PlotSet, is_study_plot, score_label, study_plots
from tuner.reporting.study_page import finalize_section, study_page
from tuner.study.sealed import ATTR, stored_score_name
from tuner.study.storage import load_existing
from tuner.study.catalog import describe_study
from tuner.tracking import Tracker

if TYPE_CHECKING:
    from tuner.search.runner import RunEnded

N_CURVES = 3  # learning curves of this many best trials (of families that draw them)
log = logging.getLogger("tuner")


def draw(tracker: Tracker, study: optuna.Study, metric: str, experiment_id: str, parent_run_id: str) -> PlotSet:
    """The study's plots, with the learning curves of the best trials of families that draw them (the
    Keras ones) read back from their child runs."""
    sign = direction_sign(study.direction)
    drawn = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.user_attrs.get(FAMILY_ATTR) in FAMILIES and FAMILIES[t.user_attrs[FAMILY_ATTR]].draws_curves),
                   key=lambda t: -sign * t.value)[:N_CURVES]
    found = {}
    for t in drawn:
        found.update(tracker.trial_curves(experiment_id, parent_run_id, [t.number],
                                          prefix=f"{FAMILIES[t.user_attrs[FAMILY_ATTR]].curve_step}/"))
    curves = {f"trial {t.number} {t.user_attrs[FAMILY_ATTR]} {score_label(metric)} {t.value:.4f}": found[t.number]
              for t in drawn if t.number in found}
    return study_plots(study, metric, curves)


def publish(tracker: Tracker, study: optuna.Study, metric: str, experiment_id: str, parent_run_id: str) -> PlotSet:
    """Tag the best child run and log the plots under `plots/` on the parent run, removing any it can no longer draw."""
    plots = draw(tracker, study, metric, experiment_id, parent_run_id)
    _log_drawn(tracker, study, experiment_id, parent_run_id, plots)
    return plots


def _log_drawn(tracker: Tracker, study: optuna.Study, experiment_id: str, parent_run_id: str, plots: PlotSet) -> None:
    try:
        tracker.mark_best(experiment_id, parent_run_id, study.best_trial.number)
    except ValueError:  # no complete trial yet: nothing is best
        pass
    tracker.replace_plots(parent_run_id, plots.images, owns=is_study_plot)


def refresh_after_run(tracker: Tracker, study: optuna.Study, metric: str, experiment_id: str,
                      parent_run_id: str) -> None:
    """`study run`'s last step; it never raises, because the study is already safe in Optuna."""
    if tracker.degraded:
        return
    try:
        publish(tracker, study, metric, experiment_id, parent_run_id)
    except Exception as exc:
        log.warning("the study's plots were not refreshed (%s); its trials are kept, retry with "
                    "`tuner study plots %s`", (str(exc).splitlines() or [type(exc).__name__])[0][:200],
                    study.study_name)


def refresh_when_finished(ended: RunEnded) -> None:
    """The runner's subscriber: a run that finished (not one stopped by an error) refreshes the plots."""
    if ended.status == "FINISHED":
        refresh_after_run(ended.tracker, ended.sealed.study, ended.sealed.score_name, ended.experiment_id,
                          ended.parent_run_id)


def _open(name: str, storage_url: str | None, tracking_uri: str | None):
    study = load_existing(name, storage_url)
    if ATTR + "uid" not in study.user_attrs:
        raise StudyFileError(f"study {name!r} was not made by tuner; it has no plots or report")
    tracker = Tracker(tracking_uri)
    experiment_id, run_id = tracker.existing_study_run(name, study.user_attrs[ATTR + "uid"])
    return study, stored_score_name(study.user_attrs), tracker, experiment_id, run_id


def refresh_plots(name: str, storage_url: str | None = None,
                  tracking_uri: str | None = None) -> tuple[PlotSet, str]:
    """`tuner study plots NAME`: redraw and log; returns the PlotSet and the parent run id."""
    study, metric, tracker, experiment_id, run_id = _open(name, storage_url, tracking_uri)
    return publish(tracker, study, metric, experiment_id, run_id), run_id


def draw_study_plots(name: str, storage_url: str | None = None, tracking_uri: str | None = None) -> PlotSet:
    """The study's plots, drawn and not logged: it writes nothing, so run-all draws them in a process
    beside its later stages and may stop that process when the budget ends."""
    study, metric, tracker, experiment_id, run_id = _open(name, storage_url, tracking_uri)
    return draw(tracker, study, metric, experiment_id, run_id)


def log_study_plots(name: str, plots: PlotSet, storage_url: str | None = None, tracking_uri: str | None = None) -> None:
    """Log plots `draw_study_plots` drew on the study's run and tag its best trial's run."""
    study, _, tracker, experiment_id, run_id = _open(name, storage_url, tracking_uri)
    _log_drawn(tracker, study, experiment_id, run_id, plots)


def write_report(name: str, output: Path | None = None, storage_url: str | None = None,
                 tracking_uri: str | None = None) -> tuple[Path, str]:
    """`tuner report NAME`: the HTML page written to `output` and logged as `report.html` on the parent run.

    A finalized study gets its finalize section; ensembles built from the study (under
    $TUNER_ENSEMBLES or ./ensembles) get a section each."""
    study, metric, tracker, experiment_id, run_id = _open(name, storage_url, tracking_uri)
    described = describe_study(name, storage_url)
    extra = ([finalize_section(described.finalize)] if described.finalize else []) + ensemble_sections(name)
    page = study_page(described, draw(tracker, study, metric, experiment_id, run_id), extra)
    output = Path(output or f"{name}-report.html")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    tracker.log_artifacts(run_id, {"report.html": page})
    return output, run_id
