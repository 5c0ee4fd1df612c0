"""`tuner ensemble build`: out-of-fold predictions -> blends -> final fits -> one test look.

A K-fold study kept every trial's out-of-fold predictions and fold models: `tuner.ensemble.bagged_trials`
reads those without fitting anything. Holdout studies get the same record here: candidates ->
out-of-fold refits. Both then go through `blending.blend_out_of_fold`.

Every choice (which near-duplicates go, the blend weights, the meta-models, the blend to export)
is made on out-of-fold predictions of the train + validation rows. Only at the end is the sealed
test split read, once, to score every member and every blend; that look is counted on each
source study, as `study finalize` counts its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable

from tuner.core.metrics import METRICS
from tuner.core.errors import TunerError
from tuner.data import Part
from tuner.data.preprocess import encode_target, fit_target_encoder
from tuner.ensemble.bagged_trials import blend_bagged_trials
from tuner.ensemble.blending import OutOfFold, TrainedBlend, blend_out_of_fold
from tuner.ensemble.blends import best_tree, fit_wide_deep, plan_deep_part
from tuner.ensemble.candidates import Candidate, gather_candidates, open_sources
from tuner.ensemble.fitted import FittedMember
from tuner.ensemble.judge import Blended, ChosenBuild, judge
from tuner.ensemble.oof import FoldFit, fit_candidate, fold_ids, member_fitter, out_of_fold
from tuner.ensemble.selection import drop_near_duplicates
from tuner.study.sealed import SealedStudy
from tuner.study.trial_bags import has_oof


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a build. `test_looks` names the studies whose look was already counted (and the
    count now), empty if the test split was not reached; either way nothing was stored."""

    def __init__(self, test_looks: dict[str, int]) -> None:
        super().__init__()
        self.test_looks = test_looks


def build_ensemble(name: str, studies: list[str], storage_url: str | None = None, tracking_uri: str | None = None,
                   per_family: int = 2, folds: int = 5, correlation: float = 0.98, root: str | Path | None = None,
                   on_step: Callable[[str], None] = lambda message: None, families: Iterable[str] | None = None,
                   wide_deep: bool = True, refit: bool = False, rebuild_s: float | None = None) -> dict[str, Any]:
    """Build, score once on test, log to MLflow and store the blends; returns the build record.

    The arguments are `choose_out_of_fold`'s. Ctrl-C raises `BuildInterrupted`, which says whether
    the test look was counted.
    """
    looks: dict[str, int] = {}
    try:
        chosen = choose_out_of_fold(name, studies, storage_url, tracking_uri, per_family, folds, correlation, on_step,
                                    families, wide_deep, refit, rebuild_s)
        return judge(chosen, looks, root, on_step)
    except KeyboardInterrupt:
        raise BuildInterrupted(dict(looks)) from None


def choose_out_of_fold(name: str, studies: list[str], storage_url: str | None = None, tracking_uri: str | None = None,
                       per_family: int = 2, folds: int = 5, correlation: float = 0.98,
                       on_step: Callable[[str], None] = lambda message: None, families: Iterable[str] | None = None,
                       wide_deep: bool = True, refit: bool = False, rebuild_s: float | None = None) -> ChosenBuild:
    """Everything a build decides out of fold (members, weights, the blend to export), nothing read
    from the test rows; `judge` then takes the look.

    `families` limits the members to those families and `wide_deep=False` skips the jointly trained
    blend: what `tuner run-all` does when its time budget cannot pay for them. `refit=True` (a
    K-fold study only) refits each picked member on every search row instead of averaging its bag.
    `rebuild_s` (a K-fold study) bounds the seconds spent rebuilding trials whose fold models were
    let go: those past it are left out of the selection (None: no bound).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise TunerError(f"ensemble name {name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")
    if not 0.0 < correlation <= 1.0:
        raise TunerError(f"--correlation must be in (0, 1], got {correlation}")
    from tuner.tracking import Tracker

    families = None if families is None else set(families)
    sources = open_sources(studies, storage_url)
    tracker = Tracker(tracking_uri)
    if len(sources) == 1 and any(map(has_oof, sources[0].study.get_trials(deepcopy=False))):
        tracker.check()
        blended, encoder, preprocessor = blend_bagged_trials(sources[0], on_step, refit, families, rebuild_s)
    else:
        candidates = gather_candidates(sources, per_family, families)
        tracker.check()
        blended, encoder, preprocessor = blend_holdout(sources, candidates, per_family, folds, correlation, wide_deep,
                                                       on_step)
    return ChosenBuild(name, sources, blended, METRICS[sources[0].metric], encoder, preprocessor, tracker)


def holdout_out_of_fold(sources: list[SealedStudy], candidates: list[Candidate], folds: int) -> OutOfFold:
    """The candidates' out-of-fold predictions over the search rows, each fitted on the other folds:
    the record a K-fold study reads from its bags."""
    first = sources[0]
    dataset, task, split = first.dataset, first.task, first.split
    rows = split.search_rows()
    y = encode_target(fit_target_encoder(dataset.y[rows], task), dataset.y[rows])
    ids = fold_ids(y, task, folds, split.seed)
    oof = out_of_fold(dataset, task, rows, ids, {c.label: member_fitter(c) for c in candidates})
    return OutOfFold.ranked(candidates, [oof[c.label] for c in candidates], y, ids, rows, task, METRICS[first.metric])


def blend_holdout(sources: list[SealedStudy], candidates: list[Candidate], per_family: int, folds: int,
                  correlation: float, with_wide_deep: bool,
                  on_step: Callable[[str], None]) -> tuple[Blended, Any, Any]:
    """Out-of-fold refits -> near-duplicates dropped -> the blends every build makes
    (`blend_out_of_fold`), and the wide-and-deep blend; returns them with the target encoder and the
    preprocessor fitted on every search row."""
    first = sources[0]
    on_step(f"out-of-fold predictions of {len(candidates)} candidates ({folds} folds)")
    everyone = holdout_out_of_fold(sources, candidates, folds)
    kept, dropped = drop_near_duplicates(everyone.labels, list(everyone.predictions), everyone.scores,
                                         everyone.metric, correlation)
    oof = everyone.subset(kept)
    scores = dict(zip(everyone.labels, everyone.scores))

    trained, tree, plan = [], best_tree(oof.candidates), plan_deep_part(oof.candidates)
    if with_wide_deep:
        on_step(f"wide-and-deep blend out of fold (deep part {plan.origin}; wide part "
                f"{'+ leaves of ' + tree.label if tree else 'raw features only'})")

        def fit(part: Part, encoder: Any) -> FoldFit:
            return fit_wide_deep(tree, plan, part, encoder)

        trained = [TrainedBlend("wide_deep", out_of_fold(first.dataset, oof.task, oof.rows, oof.folds,
                                                         {"wide_deep": fit})["wide_deep"], fit)]

    def fit_members(picked: list[Candidate], full: Part, encoder: Any) -> list[FittedMember]:
        on_step(f"refitting {len(picked)} members and the learned blends on all {len(full.rows)} train + validation rows")
        return [fit_candidate(c, full, encoder) for c in picked]

    blended, encoder, preprocessor = blend_out_of_fold(first, oof, fit_members, trained=trained)
    wide_deep = blended.ensembles.get("wide_deep")
    blended.record = {
        "folds": folds, "per_family": per_family, "correlation_threshold": correlation,
        "dropped": [{"dropped": d.dropped, "kept": d.kept, "correlation": d.correlation, "oof": scores[d.dropped]}
                    for d in dropped],
        "wide_deep": ({"deep_part": wide_deep.combiner.deep_part, "tree": tree.label if tree else None}
                      if wide_deep is not None else None),  # None: skipped, as the time budget asked
    }
    return blended, encoder, preprocessor
