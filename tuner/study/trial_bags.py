"""Bagged trials: a K-fold trial's out-of-fold predictions and fold models, kept as the search makes them.

AutoGluon's design: every model of a K-fold study is a bag of K fold models; its out-of-fold
predictions are a by-product of fitting it, ensemble selection runs over all of them, and a
prediction averages the fold models, so nothing is fitted twice. tuner keeps both in Optuna's
artifact store (`optuna.artifacts.FileSystemArtifactStore`), keyed by trial through the trial's
user attributes, so they survive a resume and every worker on a shared folder sees them:

- `oof`: float32 predictions of every search row (class probabilities or values), in the order of
  `SealedSplit.search_rows()`, averaged over repeats: a few MB for a 15,000-row table;
- `bag`: the fold models (a tar of joblib for scikit-learn and XGBoost members, of `.keras` files
  for Keras), kept for the best `KEEP_BAGS` trials and each family's best; a trial whose models
  were let go is rebuilt from its params and per-fold step counts when a blend needs it.

The folder is `$TUNER_ARTIFACTS`, else `trial-bags/` beside a SQLite or journal file, else
`studies/trial-bags`; several machines share it as they share the storage.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from tuner.study.trial_attrs import BAG_ATTR, FAMILY_ATTR, FOLD_STEPS_ATTR, OOF_ATTR, PARAMS_ATTR, VIEW_ATTR
from tuner.models import FAMILIES, Member, ProblemSpec
from tuner.models.bagged_member import BaggedMember, read_fold_models, write_fold_models

KEEP_BAGS = 12  # trials whose fold models stay stored, besides each family's best
BAGS_FOLDER = "trial-bags"


def artifact_root(storage_url: str) -> Path:
    """Where a study's artifacts live; `$TUNER_ARTIFACTS` wins (a folder every worker mounts)."""
    if os.environ.get("TUNER_ARTIFACTS"):
        return Path(os.environ["TUNER_ARTIFACTS"])
    for scheme in ("sqlite:///", "journal:///"):
        if storage_url.startswith(scheme) and ":memory:" not in storage_url:
            return Path(storage_url.removeprefix(scheme).split("?")[0]).parent / BAGS_FOLDER
    return Path("studies") / BAGS_FOLDER


class TrialBags:
    """Reads and writes the bagged trials of one study in its artifact store."""

    def __init__(self, root: Path) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.store = FileSystemArtifactStore(str(root))

    def save(self, trial: Any, oof: np.ndarray, fold_members: list[Member], view: str) -> None:
        """Upload a finished trial's out-of-fold predictions and fold models (which read `view`); ids
        go to its user attrs."""
        from optuna.artifacts import upload_artifact

        with tempfile.TemporaryDirectory() as tmp:
            oof_file = Path(tmp) / "oof.npy"
            np.save(oof_file, oof.astype(np.float32))
            trial.set_user_attr(OOF_ATTR, upload_artifact(artifact_store=self.store, file_path=str(oof_file),
                                                          study_or_trial=trial))
            bag_file = Path(tmp) / "bag.tar"
            write_fold_models(fold_members, Path(tmp) / "folds")
            with tarfile.open(bag_file, "w") as tar:
                tar.add(Path(tmp) / "folds", arcname="folds")
            trial.set_user_attr(BAG_ATTR, upload_artifact(artifact_store=self.store, file_path=str(bag_file),
                                                          study_or_trial=trial))
        trial.set_user_attr(VIEW_ATTR, view)

    def holds_oof(self, trial: FrozenTrial) -> bool:
        """Whether this folder has the trial's predictions (a worker elsewhere may have written them
        to a folder this machine does not share)."""
        return (self.root / str(trial.user_attrs.get(OOF_ATTR))).exists()

    def oof(self, trial: FrozenTrial) -> np.ndarray:
        with self.store.open_reader(trial.user_attrs[OOF_ATTR]) as reader:
            return np.load(reader)

    def holds_bag(self, trial: FrozenTrial) -> bool:
        """Whether the trial's fold models are here (False: they were let go, and a blend rebuilds them)."""
        artifact = trial.user_attrs.get(BAG_ATTR)
        return artifact is not None and (self.root / artifact).exists()

    def fold_models(self, trial: FrozenTrial) -> list[Member] | None:
        """The trial's stored fold models, or None when they were let go (rebuild them)."""
        if not self.holds_bag(trial):
            return None
        artifact = trial.user_attrs[BAG_ATTR]
        with tempfile.TemporaryDirectory() as tmp, self.store.open_reader(artifact) as reader:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                tar.extractall(tmp, filter="data")
            return read_fold_models(Path(tmp) / "folds")

    def let_go(self, trials: list[tuple[int, float, dict[str, Any]]], direction_sign: int) -> None:
        """Remove the fold models of all but the best `KEEP_BAGS` trials and each family's best.

        `trials` are (number, value, user attrs) of the complete ones. Their out-of-fold
        predictions stay: selection still sees every trial.
        """
        stored = [t for t in trials if (self.root / str(t[2].get(BAG_ATTR))).exists()]
        ranked = sorted(stored, key=lambda t: -direction_sign * t[1])
        keep = {number for number, _, _ in ranked[:KEEP_BAGS]}
        for family in {attrs.get(FAMILY_ATTR) for _, _, attrs in ranked}:
            keep.add(next(number for number, _, attrs in ranked if attrs.get(FAMILY_ATTR) == family))
        for number, _, attrs in ranked:
            if number not in keep:
                try:
                    self.store.remove(attrs[BAG_ATTR])
                except FileNotFoundError:  # another worker let it go first
                    pass


def assemble_bags(source: Any, trials: list[FrozenTrial], bags: TrialBags) -> tuple[list[BaggedMember], list[int]]:
    """Each trial's bag from its stored fold models, behind each fold's own preprocessing (refitted
    from the sealed fold's training rows: deterministic, so identical to the search's). Trials
    whose fold models were let go are refitted fold by fold; their numbers are returned too."""
    folds = fold_parts(source, [train_rows for train_rows, _ in source.split.fold_rows()])
    members, rebuilt = [], []
    for trial in trials:
        family = FAMILIES[trial.user_attrs[FAMILY_ATTR]]
        fold_models = bags.fold_models(trial)
        if fold_models is None:
            rebuilt.append(trial.number)
            fold_models = [refit_fold(family, trial, train, spec, fold_steps(trial, index))
                           for index, (train, _, spec) in enumerate(folds)]
        members.append(BaggedMember(fold_models, [p for _, p, _ in folds], stored_view(trial, family.view_for(folds[0][2]))))
    return members, rebuilt


def stored_view(trial: FrozenTrial, view: str) -> str:
    """The view a trial's stored fold models read. Bags store it (`VIEW_ATTR`) since CatBoost moved
    from `native` to `native_all_levels`; an older bag of a booster read `native`."""
    return trial.user_attrs.get(VIEW_ATTR) or ("native" if view.startswith("native") else view)


def fold_parts(source: Any, train_rows: list[np.ndarray]) -> list[tuple[Any, Any, ProblemSpec]]:
    """Each fold's training part, its preprocessing fitted on those rows only, and the study's spec for them."""
    from tuner.data.preprocess import prepare_parts

    folds = []
    for rows in train_rows:
        train, _, preprocessor, encoder = prepare_parts(source.dataset, source.task, rows, {})
        folds.append((train, preprocessor, source.problem_spec(**ProblemSpec.data_fields(train, encoder))))
    return folds


def fold_steps(trial: FrozenTrial, index: int) -> int | None:
    """The step count early stopping kept on the search's fold `index` (None: not a stepwise family)."""
    return (trial.user_attrs.get(FOLD_STEPS_ATTR) or [None] * (index + 1))[index]


def refit_fold(family: Any, trial: FrozenTrial, train: Any, spec: ProblemSpec, steps: int | None,
               rounds: int | None = None) -> Member:
    """One fold model again, from the trial's params, trained for `steps` epochs / rounds (those
    early stopping found); `rounds`, when given, overrides the boosting rounds alone (a refit on
    more rows than the trial's fold scales its rounds, while an epoch already covers every row)."""
    from dataclasses import replace

    if steps is not None:
        spec = replace(spec, max_epochs=int(steps), max_rounds=int(steps if rounds is None else rounds))
    view = family.view_for(spec)
    return family.fit_member(trial.user_attrs[PARAMS_ATTR], spec, trial.number, train.X(view), train.y)


def has_oof(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and OOF_ATTR in trial.user_attrs
