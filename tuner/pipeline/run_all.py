"""`tuner run-all`: the pipeline's stages in one place, inside one time budget counted from process start.

`STAGES` lists them, each a `Stage` with what it reads, what it writes, what it costs and the
functions that do it; `run_all` gives each its turn in order, so a new stage is one entry. A K-fold
study (the default split) bags every trial, so after the search nothing is fitted again:

    search    reads the study file and the sealed split's search rows; writes trials, each with
              its out-of-fold predictions and fold models (tuner.study.trial_bags)
    ensemble  reads every trial's out-of-fold predictions and the picked members' fold models;
              chooses the blend out of fold (nothing is read from the test rows)
    test look reads the top trials' bags, the chosen blend and the test rows (ONE counted look);
              writes the validation-optimism report (finalize's) to the study and MLflow, and
              ensembles/.built/NAME with its MLflow run (the ensemble build's)
    export    reads the chosen blend and every row of the data (search + sealed test: its members are
              trained again on all of them, `tuner.serve.refit`); writes ensembles/NAME, a
              registered MLflow pyfunc model
    plots     reads the trials and their curves; draws them in a process beside the stages after
              the search (`tuner.pipeline.alongside`) and, after those, logs them on the study's run

With `--budget B` the clock starts when the process did (imports count; `tuner.pipeline.clock`):
the search gets what the later stages leave, their expected seconds being measured costs
(`benchmarks/quality.py`) scaled by the table's rows; a stage that no longer fits when its turn
comes is skipped whole, and the result says which and why; a budget that leaves a new study's
search under a second is refused before any store is made. The ensemble stage and the test look
are never skipped and the ensemble always keeps the search's best trial (the best single member is
one of its candidates), so the export is never below the best trial out of fold; short of time,
the test look scores the search's best trial alone as finalize's finalist. The export's refit on
every row is planned from the chosen members' recorded fit seconds (`plan_refit`); when the time
left cannot pay for it, the blend is exported as scored and `skipped["refit"]` says so. A holdout
study (`split.validation_fraction`) has no bags: its ensemble stage refits members out of fold, as
many as `plan_ensemble` says the time left pays for.

Run again on a finished study, it adds no test look: once its test split was looked at, a study's
search stays closed and each stage shows what the earlier look stored for these trials; when those
records are missing or stale (a run-all stopped after its look was counted) it says so and stops
(`tuner.pipeline.test_look.stored_look`). `--force` searches on (up to the study's trial budget)
and looks at the test split again (counted).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optuna.trial import TrialState

from tuner.core.config import StudyConfig, load_study_file
from tuner.core.devices import gpu_may_be_present
from tuner.core.threads import search_process_count
from tuner.models import FAMILIES
from tuner.pipeline.alongside import Alongside
from tuner.pipeline.clock import (KERAS_BAGS_S, SAFETY_S, Clock, cpu_seconds, plan_bags, plan_ensemble, plan_refit,
                                  reserve_after_search)
from tuner.search import runner
from tuner.search.runner import RunResult
from tuner.study.sealed import ATTR, load_inputs, open_sealed, planned_families
from tuner.study.storage import find_study, normalize_url, open_storage, resolve_storage_url

FINALIZE_TOP = 3
PLOT_DRAWING_S = 4.0  # drawing a study's plots in a fresh process beside the later stages (3-6 s measured)
MIN_SEARCH_S = 1.0  # a search share under this holds no trial of any family: the budget is refused up front
TRIAL_ROOM_S = 10.0  # the search share the suggested --budget leaves: a quick family's few trials on a small table


@dataclass
class RunAllResult:
    run: RunResult | None = None  # set by the search stage
    finalize: Any = None  # finalize.FinalizeReport, set by the test look
    build: dict[str, Any] = field(default_factory=dict)
    export: Any = None  # export.ExportResult, or None when the stored export is already this build's
    trials: int = 0
    reused: list[str] = field(default_factory=list)  # stages shown from an earlier run-all, not redone
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cores: dict[str, float] = field(default_factory=dict)  # CPU seconds over wall seconds, workers included
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why the budget left it out


@dataclass
class StageContext:
    """What a stage reads: the call's arguments, the clock, the seconds `reserved` for each stage
    after the search, and what the earlier stages produced: `result`, and whether the search found
    the study `finished` (then it stays closed, and nothing is reserved: the stages show what the
    earlier run stored, `stored`). The ensemble stage leaves its blend, `chosen`, to the test look."""

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
    keras: bool = False  # the study searches a Keras family
    finished: bool = False
    stored: Any = None  # test_look.StoredLook of a finished study
    chosen: Any = None  # judge.ChosenBuild: the ensemble stage's blend, not yet scored on test
    alongside: dict[str, Alongside] = field(default_factory=dict)  # stage -> its work beside the later stages
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
    pay for it, else does its work (`run`); each writes what it produced into `ctx.result`. A stage
    whose `run` only starts its work beside the later stages has it `collect`ed after them."""

    name: str
    reads: str
    writes: str
    fixed_s: float
    per_1k_rows_s: float
    run: Callable[[StageContext], None]
    show: Callable[[StageContext], bool] = lambda ctx: False  # nothing stored to show
    no_time: Callable[[StageContext], str | None] = lambda ctx: None  # never skipped
    due: Callable[[StageContext], bool] = lambda ctx: True
    collect: Callable[[StageContext], None] | None = None

    def expected_seconds(self, rows: int) -> float:
        return self.fixed_s + self.per_1k_rows_s * rows / 1000


def search_stage(ctx: StageContext) -> None:
    config, budget = ctx.config, ctx.clock.budget
    if budget is not None:
        deadline = ctx.clock.deadline(sum(ctx.reserved.values()) + SAFETY_S)
        refuse_hopeless_budget(ctx, deadline - time.monotonic())
        ctx.on_step(f"search: up to {config.budget.trials} trials until {max(deadline - time.monotonic(), 0):.0f} s "
                    f"from now (the budget's other stages need about {sum(ctx.reserved.values()):.0f} s)")
        # the study's plots are drawn beside the later stages (`plots_stage`): no dashboard subscribed
        # a trial that leads the study may finish on the refit's share: the best model beats a refit of a lesser one
        # trials side by side, one search process per core (each pinned to it), when the search repays their start
        jobs = search_process_count(deadline - time.monotonic(), ctx.keras and gpu_may_be_present(), ctx.keras)
        run = runner.run_study(ctx.study_file, ctx.storage_url, ctx.tracking_uri, deadline=deadline, inputs=ctx.inputs,
                               budget_s=budget, grace_s=ctx.reserved.get("refit", 0.0), jobs=jobs)
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


def refuse_hopeless_budget(ctx: StageContext, search_s: float) -> None:
    """A budget whose search share is under `MIN_SEARCH_S`, for a study with no complete trial yet,
    is refused before any store, study or run is made (else it would leave a study with a pruned
    trial and its runs behind); a study with trials on record goes on with them."""
    if search_s >= MIN_SEARCH_S or _complete_trials(ctx.config.name, ctx.storage_url):
        return
    from tuner.core.errors import TunerError

    after = sum(ctx.reserved.values()) + SAFETY_S
    enough = 10 * math.ceil((ctx.clock.elapsed() + after + TRIAL_ROOM_S) / 10)
    raise TunerError(f"--budget {ctx.clock.budget:.0f} leaves no time for a single complete trial ({ctx.clock.elapsed():.0f} "
                     f"s went to starting up and the stages after the search need about {after:.0f} s); nothing was "
                     f"written: raise --budget to {enough} s or more")


def show_closed_search(ctx: StageContext) -> bool:
    """A study whose test split was looked at (not `--force`d) is finished: its search stays closed,
    its trials are summed up and none is added. Its look's records must be there to be shown:
    without them run-all stops rather than look again unasked (`--force` asks)."""
    from tuner.pipeline.test_look import stored_look

    ctx.finished = not ctx.force and _looked_before(ctx.config.name, ctx.storage_url)
    if not ctx.finished:
        return False
    ctx.stored = stored_look(ctx.config.name, ctx.storage_url, ctx.ensembles_root)
    ctx.reserved = {}
    ctx.on_step("search: closed, the study's test split was looked at by an earlier run (--force searches on and "
                "looks again)")
    trials = ctx.config.budget.trials
    sealed = open_sealed(ctx.config.name, ctx.storage_url)
    run = runner.summarize_run(sealed, trials, runner.progress_of(sealed.study, trials).done, 0.0)
    ctx.result.run, ctx.result.trials = run, _counted(run)
    return True


def ensemble_stage(ctx: StageContext) -> None:
    from tuner.ensemble.build import choose_out_of_fold

    name, config, result = ctx.config.name, ctx.config, ctx.result
    look_s = ctx.reserved.get("test look", 0.0)  # the look comes after: the plans leave it its seconds
    if config.split.cross_validated:
        ensemble_s = ctx.reserved.get("ensemble", 0.0) + look_s + ctx.reserved.get("export", 0.0)
        bags = plan_bags(name, ctx.storage_url, ctx.clock.left(), ensemble_s)
        if bags.families is not None:
            result.skipped["keras bags"] = (f"{max(ctx.clock.left(), 0):.0f} s were left and Keras bags cost about "
                                            f"{KERAS_BAGS_S:.0f} s more; the search's best trial is not one")
        ctx.on_step("ensemble: selection over every bagged trial's out-of-fold predictions, nothing refitted"
                    + ("" if bags.families is None else f" (Keras bags left out: {result.skipped['keras bags']})"))
        ctx.chosen = choose_out_of_fold(name, [name], ctx.storage_url, ctx.tracking_uri, on_step=ctx.on_step,
                                        families=bags.families, rebuild_s=bags.rebuild_s)
        if ctx.chosen.blended.record.get("left_out_for_time"):
            result.skipped["rebuilds"] = (f"{len(ctx.chosen.blended.record['left_out_for_time'])} trial(s) whose fold "
                                          f"models were let go would take longer to rebuild than the "
                                          f"{bags.rebuild_s:.0f} s the budget leaves for it")
    else:
        left = ctx.clock.left()
        plan = plan_ensemble(name, ctx.storage_url, None if left is None else left - look_s, config.budget.epochs)
        ctx.on_step(f"ensemble: {plan.describe()}")
        ctx.chosen = choose_out_of_fold(name, [name], ctx.storage_url, ctx.tracking_uri, per_family=plan.per_family,
                                        folds=plan.folds, families=plan.families, wide_deep=plan.wide_deep,
                                        on_step=ctx.on_step)


def show_stored_ensemble(ctx: StageContext) -> bool:
    """A finished study's build, stored by its look."""
    if ctx.stored is None:
        return False
    ctx.on_step("ensemble: already built from these trials; shown again without a new test look")
    ctx.result.reused.append("ensemble")
    ctx.result.build = ctx.stored.build
    return True


def test_look_stage(ctx: StageContext) -> None:
    """Finalize's finalists (the top trials, each family's best among them) and the chosen build's
    members and blends, scored in one counted look; short of time, the search's best trial alone."""
    from tuner.evaluate.finalize import finalists_of
    from tuner.pipeline.test_look import look_once

    [sealed] = ctx.chosen.sources
    finalists = finalists_of(sealed, FINALIZE_TOP)
    why = finalists_no_time(ctx)
    if why is not None:
        ctx.result.skipped["finalists"] = why
        finalists = finalists[:1]
    ctx.result.finalize, ctx.result.build = look_once(ctx.chosen, finalists, ctx.ensembles_root, ctx.on_step)


def show_stored_look(ctx: StageContext) -> bool:
    if ctx.stored is None:
        return False
    ctx.on_step("test look: already taken for these trials; its finalize report shown again without a new look")
    ctx.result.finalize = ctx.stored.finalize
    ctx.result.reused.append("test look")
    return True


def finalists_no_time(ctx: StageContext) -> str | None:
    """Every finalist gives way to the best trial alone when the time left cannot pay for the look and the export."""
    left = ctx.clock.left()
    needed = sum(ctx.reserved.get(name, 0.0) for name in ("test look", "export"))
    if left is None or left >= needed:
        return None
    return (f"{max(left, 0):.0f} s were left and the test look and export need about {needed:.0f} s; the look "
            f"scored the search's best trial alone as finalist (not the top {FINALIZE_TOP}), beside the ensemble")


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
    from tuner.reporting.dashboard import draw_study_plots

    ctx.on_step("plots: the study's history, scores by family and curves, drawn on the idle core beside the stages "
                "that follow")
    ctx.alongside["plots"] = Alongside(draw_study_plots, ctx.config.name, ctx.storage_url, ctx.tracking_uri)


def collect_plots(ctx: StageContext) -> None:
    """Log the drawn plots on the study's run; plots still drawing when the budget ends are let go, and
    a drawing that failed is said: neither touches the model."""
    from multiprocessing import TimeoutError

    from tuner.reporting.dashboard import log_study_plots

    again = f"`tuner study plots {ctx.config.name}` draws them"
    try:
        plots = ctx.alongside.pop("plots").result(timeout=ctx.clock.left() - SAFETY_S)
    except TimeoutError:
        ctx.result.skipped["plots"] = f"still drawing when the budget ended; {again}"
        return
    except Exception as exc:  # noqa: BLE001 - the export is made; the pictures are not worth failing for
        ctx.result.skipped["plots"] = f"drawing failed ({(str(exc).splitlines() or [type(exc).__name__])[0][:200]}); {again}"
        return
    log_study_plots(ctx.config.name, plots, ctx.storage_url, ctx.tracking_uri)


def plots_due(ctx: StageContext) -> bool:
    """The study's plots under a budget, drawn beside the stages after the search and logged last: the
    model matters more than its pictures. Without a budget the search's dashboard draws them; a
    finished study's were drawn by the earlier run."""
    return ctx.clock.budget is not None and not ctx.finished


def plots_no_time(ctx: StageContext) -> str | None:
    left = ctx.clock.left()
    if left >= PLOT_DRAWING_S + SAFETY_S:
        return None
    return (f"{max(left, 0):.0f} s were left and drawing needs about {PLOT_DRAWING_S:.0f} s, "
            f"with {SAFETY_S:.0f} s kept for the exit; `tuner study plots {ctx.config.name}` draws them")


STAGES = (
    Stage("search", "the study file; the sealed split's search rows",
          "trials with their out-of-fold predictions and fold models", 0.0, 0.0,
          run=search_stage, show=show_closed_search),
    # drawn beside the stages below (about 4 s of the idle core); what is charged is logging them after those
    Stage("plots", "the study's trials and curves", "the study run's plots in MLflow (`tuner study plots` redraws them)",
          1.0, 0.0, run=plots_stage, no_time=plots_no_time, due=plots_due, collect=collect_plots),
    # the ensemble's measured cost includes its share of the look (scoring its blends, its record, MLflow)
    Stage("ensemble", "every trial's out-of-fold predictions; the picked members' bags",
          "the blend chosen out of fold (held for the test look)", 2.0, 0.6,
          run=ensemble_stage, show=show_stored_ensemble),
    Stage("test look", f"the top {FINALIZE_TOP} trials' bags; the chosen blend; the test rows (ONE counted look)",
          "the finalize report (study attributes, MLflow run `finalize`); ensembles/.built/NAME and the MLflow run "
          "`ensemble/NAME`", 3.0, 0.2, run=test_look_stage, show=show_stored_look),  # skops files: 3-7 s measured
    Stage("export", "the chosen blend; every row (its members trained again)", "ensembles/NAME (MLflow pyfunc), a registered model version @champion", 2.5, 0.1,
          run=export_stage, show=show_stored_export),
)


def run_all(study_file: str | Path, budget: float | None = None, storage_url: str | None = None,
            tracking_uri: str | None = None, ensembles_root: str | Path | None = None, force: bool = False,
            on_step: Callable[[str], None] = lambda message: None, started_at: float | None = None) -> RunAllResult:
    """The README's main job in one call; `budget` in seconds (None: the study file's trial budget),
    counted from `started_at` (the CLI passes its process's start time; default: now).

    Each stage in `STAGES` gets its turn: it shows what an earlier run stored, or is skipped for
    time (its reason in `skipped`, no seconds), or runs; `stage_seconds` holds the seconds of each
    stage that showed or ran, and the total from `started_at`; `stage_cores` the cores each kept busy."""
    config, base_dir = load_study_file(study_file)
    clock = Clock(budget, time.time() if started_at is None else started_at)
    inputs = load_inputs(config, base_dir)
    expected = {stage.name: stage.expected_seconds(len(inputs[0].y)) for stage in STAGES[1:]}
    keras = any(FAMILIES[f].uses_tensorflow for f in planned_families(config, inputs, budget))
    ctx = StageContext(study_file, config, inputs, clock, storage_url, tracking_uri, ensembles_root, force,
                       reserve_after_search(expected, budget, keras), on_step, keras=keras)
    try:
        for stage in STAGES:
            if not stage.due(ctx):
                continue
            if stage.collect is not None:
                _take_turn(ctx, stage)  # started beside the others: its time is the wait when collected
            else:
                _timed(ctx, stage.name, lambda: _take_turn(ctx, stage))
        for stage in STAGES:
            if stage.collect is not None and stage.name in ctx.alongside:
                _timed(ctx, stage.name, lambda: stage.collect(ctx))
    finally:
        for work in ctx.alongside.values():  # stopped early: an error, Ctrl-C
            work.stop()
    ctx.result.stage_seconds["total"] = clock.elapsed()
    return ctx.result


def _take_turn(ctx: StageContext, stage: Stage) -> bool:
    """Show, skip or run `stage`; False when it was skipped for time."""
    if stage.show(ctx):
        return True
    why = stage.no_time(ctx)
    if why is not None:
        ctx.result.skipped[stage.name] = why
        ctx.on_step(f"{stage.name}: skipped ({why})")
        return False
    stage.run(ctx)
    return True


def _timed(ctx: StageContext, name: str, step: Callable[[], bool | None]) -> None:
    """Add the seconds and the cores (CPU seconds over wall seconds) of one step of stage `name`."""
    mark, cpu = time.monotonic(), cpu_seconds()
    if step() is False:
        return
    seconds = time.monotonic() - mark
    before = ctx.result.stage_seconds.get(name, 0.0)
    busy = ctx.result.stage_cores.get(name, 0.0) * before + (cpu_seconds() - cpu)
    ctx.result.stage_seconds[name] = before + seconds
    ctx.result.stage_cores[name] = busy / max(before + seconds, 1e-6)


def _existing_study(name: str, storage_url: str | None) -> Any:
    """The study when the storage holds it, else None; a store not yet made is not created here."""
    url = normalize_url(resolve_storage_url(storage_url))
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme) and not Path(url.removeprefix(scheme).split("?")[0]).exists():
            return None
    return find_study(open_storage(url), name)


def _looked_before(name: str, storage_url: str | None) -> bool:
    """Whether the study's test split was looked at (a counted look): then a plain rerun shows what
    that look stored instead of searching on."""
    study = _existing_study(name, storage_url)
    return study is not None and int(study.user_attrs.get(ATTR + "test_looks", 0)) > 0


def _complete_trials(name: str, storage_url: str | None) -> int:
    study = _existing_study(name, storage_url)
    return 0 if study is None else len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _counted(run: RunResult) -> int:
    return sum(n for state, n in run.counts.items() if state in ("COMPLETE", "PRUNED", "FAIL"))
