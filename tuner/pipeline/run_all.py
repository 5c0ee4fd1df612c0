"""`tuner run-all`: the pipeline's stages in one place, inside one time budget counted from process start.

`STAGES` lists them, each a `Stage` with what it reads, what it writes, what it costs and the
functions that do it; `run_all` gives each its turn in order, so a new stage is one entry. A K-fold
study (the default split) bags every trial, so after the search nothing is fitted again:

    search    reads the study file and the sealed split's search rows; writes trials, each with
              its out-of-fold predictions and fold models (tuner.study.trial_bags)
    finalize  reads the top trials' bags and the test rows (one counted look); writes the
              validation-optimism report to the study and MLflow
    ensemble  reads every trial's out-of-fold predictions, the picked members' fold models and the
              test rows (one counted look); writes ensembles/.built/NAME and its MLflow run
    export    reads the chosen blend and every row of the data (search + sealed test: its members are
              trained again on all of them, `tuner.serve.refit`); writes ensembles/NAME, a
              registered MLflow pyfunc model
    plots     reads the trials and their curves; writes the study run's plots in MLflow

With `--budget B` the clock starts when the process did (imports count; `tuner.pipeline.clock`):
the search gets what the later stages leave, their expected seconds being measured costs
(`benchmarks/quality.py`) scaled by the table's rows; a stage that no longer fits when its turn
comes is skipped whole, and the result says which and why. The ensemble stage is never skipped and
always keeps the search's best trial (the best single member is one of its candidates), so the
export is never below the best trial out of fold. The export's refit on every row is planned from
the chosen members' recorded fit seconds (`plan_refit`); when the time left cannot pay for it, the
blend is exported as scored and `skipped["refit"]` says so. A holdout study (`split.validation_fraction`) has
no bags: its ensemble stage refits members out of fold, as many as `plan_ensemble` says the time
left pays for.

Run again on a finished study, it adds no test look: once a study is finalized its search stays
closed, and each stage shows what the earlier run stored for these trials (a stage whose stored
result no longer matches runs again). `--force` searches on (up to the study's trial budget) and
looks at the test split again (counted).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from tuner.core.config import StudyConfig, load_study_file
from tuner.models import FAMILIES
from tuner.pipeline.clock import (KERAS_BAGS_S, SAFETY_S, Clock, plan_bags, plan_ensemble, plan_refit,
                                  reserve_after_search)
from tuner.search import runner
from tuner.search.runner import RunResult
from tuner.study.sealed import ATTR, load_inputs, open_sealed
from tuner.study.storage import find_study, load_existing, normalize_url, open_storage, resolve_storage_url

FINALIZE_TOP = 3


@dataclass
class RunAllResult:
    run: RunResult | None = None  # set by the search stage
    finalize: Any = None  # finalize.FinalizeReport, or None when the budget skipped it
    build: dict[str, Any] = field(default_factory=dict)
    export: Any = None  # export.ExportResult, or None when the stored export is already this build's
    trials: int = 0
    reused: list[str] = field(default_factory=list)  # stages shown from an earlier run-all, not redone
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why the budget left it out


@dataclass
class StageContext:
    """What a stage reads: the call's arguments, the clock, the seconds `reserved` for each stage
    after the search, and what the earlier stages produced: `result`, and whether the search found
    the study `finished` (then it stays closed, and nothing is reserved: the stages show what the
    earlier run stored)."""

    study_file: str | Path
    config: StudyConfig
    inputs: Any  # load_inputs' result: the sealed split's search rows
    clock: Clock
    storage_url: str | None
    tracking_uri: str | None
    ensembles_root: str | Path | None
    force: bool
    reserved: dict[str, float]
    on_step: Callable[[str], None]
    finished: bool = False
    result: RunAllResult = field(default_factory=RunAllResult)


@dataclass(frozen=True)
class Stage:
    """One step of `run-all`: its inputs and outputs in words, its measured cost on two cores
    (`fixed_s` plus `per_1k_rows_s` for every thousand rows of the table; `benchmarks/quality.py`
    prints each stage's seconds), and what it does. The classes do not scale the cost: charged per
    class beyond the first, land_use (4 classes) and digits (10) were given 19-23 s after the search
    and used 10.

    When its turn comes (`due`), a stage first shows what an earlier run stored for these trials
    (`show`, True when it did), else is skipped with `no_time`'s reason when the time left cannot
    pay for it, else does its work (`run`); each writes what it produced into `ctx.result`."""

    name: str
    reads: str
    writes: str
    fixed_s: float
    per_1k_rows_s: float
    run: Callable[[StageContext], None]
    show: Callable[[StageContext], bool] = lambda ctx: False  # nothing stored to show
    no_time: Callable[[StageContext], str | None] = lambda ctx: None  # never skipped
    due: Callable[[StageContext], bool] = lambda ctx: True

    def expected_seconds(self, rows: int) -> float:
        return self.fixed_s + self.per_1k_rows_s * rows / 1000


def search_stage(ctx: StageContext) -> None:
    config, budget = ctx.config, ctx.clock.budget
    if budget is not None:
        deadline = ctx.clock.deadline(sum(ctx.reserved.values()) + SAFETY_S)
        ctx.on_step(f"search: up to {config.budget.trials} trials until {max(deadline - time.monotonic(), 0):.0f} s "
                    f"from now (the budget's other stages need about {sum(ctx.reserved.values()):.0f} s)")
        # the study's plots come last, if time is left (`plots_stage`): no dashboard subscribed
        run = runner.run_study(ctx.study_file, ctx.storage_url, ctx.tracking_uri, deadline=deadline, inputs=ctx.inputs)
    else:
        from tuner.pipeline.study_run import run_study  # the runner with the dashboard subscribed: plots after the search

        ctx.on_step(f"search: up to {config.budget.trials} trials")
        run = run_study(ctx.study_file, ctx.storage_url, ctx.tracking_uri, timeout=config.budget.timeout,
                        inputs=ctx.inputs)
    if budget is not None and run.best_value is None:
        from tuner.core.errors import TunerError

        raise TunerError(f"the budget left no time for a single complete trial ({ctx.clock.elapsed():.0f} s of "
                         f"{budget:.0f} s went to starting up and searching); raise --budget")
    ctx.result.run, ctx.result.trials = run, _counted(run)


def show_closed_search(ctx: StageContext) -> bool:
    """A study finalized by an earlier run (not `--force`d) is finished: its search stays closed,
    its trials are summed up and none is added."""
    ctx.finished = not ctx.force and _finalized_before(ctx.config.name, ctx.storage_url)
    if not ctx.finished:
        return False
    ctx.reserved = {}
    ctx.on_step("search: closed, the study was finalized by an earlier run (--force searches on and looks again)")
    trials = ctx.config.budget.trials
    sealed = open_sealed(ctx.config.name, ctx.storage_url)
    run = runner.summarize_run(sealed, trials, runner.progress_of(sealed.study, trials).done, 0.0)
    ctx.result.run, ctx.result.trials = run, _counted(run)
    return True


def finalize_stage(ctx: StageContext) -> None:
    from tuner.evaluate.finalize import finalize_study

    ctx.on_step("finalize: the top configurations scored once on the sealed test split")
    ctx.result.finalize = finalize_study(ctx.config.name, ctx.storage_url, ctx.tracking_uri, top=FINALIZE_TOP,
                                         force=ctx.force)


def show_stored_finalize(ctx: StageContext) -> bool:
    from tuner.evaluate.finalize import FinalizeReport

    study = load_existing(ctx.config.name, ctx.storage_url)
    stored = study.user_attrs.get(ATTR + "finalize")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not stored or ctx.force or stored.get("trials_complete") != complete:
        return False
    ctx.on_step("finalize: already done for these trials; shown again without a new test look")
    ctx.result.finalize = FinalizeReport.from_record(stored)
    ctx.result.reused.append("finalize")
    return True


def finalize_no_time(ctx: StageContext) -> str | None:
    """Finalize gives way when the time left cannot pay for it and for the ensemble and export."""
    left = ctx.clock.left()
    needed = sum(ctx.reserved.get(name, 0.0) for name in ("finalize", "ensemble", "export"))
    if left is None or left >= needed:
        return None
    return (f"{max(left, 0):.0f} s were left and finalize, ensemble and export need about {needed:.0f} s; "
            "the ensemble build still scores the best single member on the test split")


def ensemble_stage(ctx: StageContext) -> None:
    from tuner.ensemble.build import build_ensemble

    name, config, result = ctx.config.name, ctx.config, ctx.result
    if config.split.cross_validated:
        ensemble_s = ctx.reserved.get("ensemble", 0.0) + ctx.reserved.get("export", 0.0)
        bags = plan_bags(name, ctx.storage_url, ctx.clock.left(), ensemble_s)
        if bags.families is not None:
            result.skipped["keras bags"] = (f"{max(ctx.clock.left(), 0):.0f} s were left and Keras bags cost about "
                                            f"{KERAS_BAGS_S:.0f} s more; the search's best trial is not one")
        ctx.on_step("ensemble: selection over every bagged trial's out-of-fold predictions, nothing refitted"
                    + ("" if bags.families is None else f" (Keras bags left out: {result.skipped['keras bags']})"))
        result.build = build_ensemble(name, [name], ctx.storage_url, ctx.tracking_uri, root=ctx.ensembles_root,
                                      on_step=ctx.on_step, families=bags.families, rebuild_s=bags.rebuild_s)
        if result.build.get("left_out_for_time"):
            result.skipped["rebuilds"] = (f"{len(result.build['left_out_for_time'])} trial(s) whose fold models were "
                                          f"let go would take longer to rebuild than the {bags.rebuild_s:.0f} s the "
                                          "budget leaves for it")
    else:
        plan = plan_ensemble(name, ctx.storage_url, ctx.clock.left(), config.budget.epochs)
        ctx.on_step(f"ensemble: {plan.describe()}")
        result.build = build_ensemble(name, [name], ctx.storage_url, ctx.tracking_uri, per_family=plan.per_family,
                                      folds=plan.folds, families=plan.families, wide_deep=plan.wide_deep,
                                      root=ctx.ensembles_root, on_step=ctx.on_step)


def show_stored_ensemble(ctx: StageContext) -> bool:
    """The stored build is shown when finalize was (the same trials) and it was built on this split."""
    from tuner.core.errors import TunerError
    from tuner.ensemble.store import read_build

    if "finalize" not in ctx.result.reused:
        return False
    try:
        build = read_build(ctx.config.name, ctx.ensembles_root)
    except TunerError:
        return False
    if build.get("split_digest") != load_existing(ctx.config.name, ctx.storage_url).user_attrs[ATTR + "split"]["digest"]:
        return False
    ctx.on_step("ensemble: already built from these trials; shown again without a new test look")
    ctx.result.reused.append("ensemble")
    ctx.result.build = build
    return True


def export_stage(ctx: StageContext) -> None:
    from tuner.serve.export import export_ensemble

    name, result = ctx.config.name, ctx.result
    refit, why = plan_refit(name, ctx.storage_url, result.build, ctx.clock.left(), ctx.reserved.get("export", 0.0))
    if why is not None:
        result.skipped["refit"] = why
    ctx.on_step(f"export: blend {result.build['chosen']!r} as an MLflow pyfunc model"
                + ("" if refit == "none" else ", its members trained again on every row"))
    result.export = export_ensemble(name, tracking_uri=ctx.tracking_uri, root=ctx.ensembles_root, refit=refit,
                                    storage_url=ctx.storage_url, on_step=ctx.on_step,
                                    skipped_refit=why if refit == "none" else None)


def show_stored_export(ctx: StageContext) -> bool:
    from tuner.ensemble.store import ensembles_root
    from tuner.serve.export import MANIFEST

    manifest = ensembles_root(ctx.ensembles_root) / ctx.config.name / MANIFEST
    if not manifest.is_file() or json.loads(manifest.read_text()).get("built_at") != ctx.result.build.get("built_at"):
        return False
    ctx.on_step(f"export: {manifest.parent} already holds this build's blend")
    ctx.result.reused.append("export")
    return True


def plots_stage(ctx: StageContext) -> None:
    from tuner.reporting.dashboard import refresh_plots

    ctx.on_step("plots: the study's history, scores by family and curves on its MLflow run")
    refresh_plots(ctx.config.name, ctx.storage_url, ctx.tracking_uri)


def plots_due(ctx: StageContext) -> bool:
    """The study's plots last, under a budget: the model matters more than its pictures. Without a
    budget the search's dashboard draws them; a finished study's were drawn by the earlier run."""
    return ctx.clock.budget is not None and not ctx.finished


def plots_no_time(ctx: StageContext) -> str | None:
    left, expected = ctx.clock.left(), ctx.reserved["plots"]
    if left >= expected + SAFETY_S:
        return None
    return (f"{max(left, 0):.0f} s were left and drawing needs about {expected:.0f} s, "
            f"with {SAFETY_S:.0f} s kept for the exit; `tuner study plots {ctx.config.name}` draws them")


STAGES = (
    Stage("search", "the study file; the sealed split's search rows",
          "trials with their out-of-fold predictions and fold models", 0.0, 0.0,
          run=search_stage, show=show_closed_search),
    Stage("finalize", f"the top {FINALIZE_TOP} trials' bags; the sealed test rows (one counted look)",
          "the finalize report (study attributes, MLflow run `finalize`)", 1.5, 0.2,
          run=finalize_stage, show=show_stored_finalize, no_time=finalize_no_time),
    Stage("ensemble", "every trial's out-of-fold predictions; the picked members' bags; the test rows (one counted look)",
          "ensembles/.built/NAME and the MLflow run `ensemble/NAME`", 2.0, 0.6,
          run=ensemble_stage, show=show_stored_ensemble),
    Stage("export", "the chosen blend; every row (its members trained again)", "ensembles/NAME (MLflow pyfunc), a registered model version @champion", 1.5, 0.1,
          run=export_stage, show=show_stored_export),
    Stage("plots", "the study's trials and curves", "the study run's plots in MLflow (`tuner study plots` redraws them)",
          3.0, 0.0, run=plots_stage, no_time=plots_no_time, due=plots_due),
)


def run_all(study_file: str | Path, budget: float | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, ensembles_root: str | Path | None = None, force: bool = False,
            on_step: Callable[[str], None] = lambda message: None, started_at: float | None = None) -> RunAllResult:
    """The README's main job in one call; `budget` in seconds (None: the study file's trial budget),
    counted from `started_at` (the CLI passes its process's start time; default: now).

    Each stage in `STAGES` gets its turn: it shows what an earlier run stored, or is skipped for
    time (its reason in `skipped`, no seconds), or runs; `stage_seconds` holds the seconds of each
    stage that showed or ran, and the total from `started_at`."""
    config, base_dir = load_study_file(study_file)
    clock = Clock(budget, time.time() if started_at is None else started_at)
    inputs = load_inputs(config, base_dir)
    expected = {stage.name: stage.expected_seconds(len(inputs[0].y)) for stage in STAGES[1:]}
    keras = any(FAMILIES[f].uses_tensorflow for f in config.families)
    ctx = StageContext(study_file, config, inputs, clock, storage_url, tracking_uri, ensembles_root, force,
                       reserve_after_search(expected, budget, keras), on_step)
    for stage in STAGES:
        if not stage.due(ctx):
            continue
        mark = time.monotonic()
        if not stage.show(ctx):
            why = stage.no_time(ctx)
            if why is not None:
                ctx.result.skipped[stage.name] = why
                on_step(f"{stage.name}: skipped ({why})")
                continue
            stage.run(ctx)
        ctx.result.stage_seconds[stage.name] = time.monotonic() - mark
    ctx.result.stage_seconds["total"] = clock.elapsed()
    return ctx.result


def _finalized_before(name: str, storage_url: str | None) -> bool:
    """Whether an earlier run finalized this study (its test split was looked at): then a plain
    rerun shows what it stored instead of searching on. A store not yet made is not created here."""
    url = normalize_url(resolve_storage_url(storage_url))
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme) and not Path(url.removeprefix(scheme).split("?")[0]).exists():
            return False
    study = find_study(open_storage(url), name)
    return study is not None and ATTR + "finalize" in study.user_attrs


def _counted(run: RunResult) -> int:
    return sum(n for state, n in run.counts.items() if state in ("COMPLETE", "PRUNED", "FAIL"))
