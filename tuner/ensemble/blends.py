"""The two learned blends beyond weighted averages, as registered `Combiner`s that save and load.

- `StackedLinear`: a regularised linear meta-model (L2 logistic regression, or ridge with its
  strength chosen by cross-validation) over the members' out-of-fold scores. Not over the raw features too: the
  members' out-of-fold scores of the meta-model's training rows come from fits that saw the rows it
  is scored on, and with the raw features beside them a linear meta-model exploits that (measured
  on generated_mixed: oof_roc_auc 0.79, test 0.66, members about 0.65 on both). Adding the features
  honestly needs nested out-of-fold fits, K times the cost.
- `WideAndDeep`: one Keras model trained jointly (BOOK.md, "wide & deep"; the GBDT + linear idea):
  its wide part is linear over the raw tabular features and the one-hot leaf indices of the best
  tree member; its deep part is the best deep member's own architecture, rebuilt from its params,
  whose last hidden representation (the input of its `head` layer, not of its last layer: the
  wide_deep family ends in an Activation) feeds the shared output. When the study has no deep
  member it can reuse (no Keras member, or only custom / multi-output ones), a dense network on
  the tabular view is the deep part.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler

from tuner.core.metrics import renormalise
from tuner.core.safe_files import load_estimator, save_estimator
from tuner.data import Part
from tuner.ensemble.fitted import Combiner, FittedMember, register_combiner
from tuner.ensemble.oof import FoldFit, fit_candidate
from tuner.models import FAMILIES, ProblemSpec, fallback_deep_part

if TYPE_CHECKING:  # studies and candidates are only passed through; loading a blend needs neither
    from tuner.ensemble.candidates import Candidate
    from tuner.study.sealed import SealedStudy

MAX_LEAF_TREES = 64  # leaf indices of the first trees only, so the wide part stays small
WIDE_L2 = 1e-4
STACKED_C = 1.0


def _margin(scores: np.ndarray, task: str) -> np.ndarray:
    """Member scores on an unbounded scale, what a linear meta-model works best from."""
    scores = np.asarray(scores, dtype=np.float64)
    if task == "binary":
        p = np.clip(scores[:, 1], 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))[:, None]
    if task == "multiclass":
        return np.log(np.clip(scores, 1e-6, None))
    return scores[:, None]


def meta_features(scores: list[np.ndarray], task: str) -> np.ndarray:
    return np.hstack([_margin(s, task) for s in scores])


@register_combiner
@dataclass
class StackedLinear(Combiner):
    model: Pipeline
    task: str
    kind: ClassVar[str] = "stacked"
    FILE: ClassVar[str] = "stacked_meta_model.skops"

    def combine(self, scores, members, views) -> np.ndarray:
        features = meta_features(scores, self.task)
        return self.model.predict_proba(features) if self.task != "regression" else self.model.predict(features)

    def to_record(self, folder: Path) -> dict[str, Any]:
        save_estimator(self.model, folder / self.FILE)
        return {"task": self.task, "meta_model": self.FILE}

    @classmethod
    def from_record(cls, record: dict[str, Any], folder: Path) -> StackedLinear:
        return cls(load_estimator(folder / record["meta_model"]), record["task"])


def fit_stacked(scores: list[np.ndarray], y: np.ndarray, task: str, seed: int = 0) -> StackedLinear:
    """The meta-model on out-of-fold member scores: ridge with its strength by cross-validation, or
    an L2 logistic regression at `STACKED_C` (a search over C cost seconds per fit on multiclass
    tables, for a meta-model of a few standardised features fitted on thousands of rows)."""
    if task == "regression":
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=STACKED_C, max_iter=1000))
    return StackedLinear(model.fit(meta_features(scores, task), y), task)


def stacked_out_of_fold(scores: list[np.ndarray], y: np.ndarray, task: str, ids: np.ndarray) -> np.ndarray:
    """The stacked blend's own out-of-fold predictions: meta-model fitted on the other folds' rows."""
    out = None
    for fold in np.unique(ids):
        held = ids == fold
        meta = fit_stacked([s[~held] for s in scores], y[~held], task)
        predicted = meta.combine([s[held] for s in scores], [], {})
        if out is None:
            out = np.empty((len(y), *predicted.shape[1:]))
        out[held] = predicted
    return out


@dataclass
class DeepPlan:
    """Where the wide-and-deep blend's deep part comes from."""

    source: SealedStudy
    family: str
    params: dict[str, Any]
    steps: int
    origin: str  # the member it copies, or why it fell back to a dense part

    def record(self) -> dict[str, Any]:
        return {"family": self.family, "params": self.params, "steps": self.steps, "origin": self.origin}


def plan_deep_part(ranked: list[Candidate]) -> DeepPlan:
    """The best (first) member whose family lends its network, else the fallback (a dense network)."""
    for candidate in ranked:
        if FAMILIES[candidate.family].lends_deep_part:
            steps = candidate.steps or candidate.source.config.budget.epochs
            return DeepPlan(candidate.source, candidate.family, candidate.params, steps, candidate.label)
    source = ranked[0].source
    return _fallback_plan(source, source.config.budget.epochs,
                          "no reusable Keras member (none, or only custom ones): a dense network on the tabular view")


def _fallback_plan(source: SealedStudy, steps: int, origin: str) -> DeepPlan:
    family = fallback_deep_part()
    return DeepPlan(source, family.name, family.deep_part_params(), steps, origin)


def best_tree(ranked: list[Candidate]) -> Candidate | None:
    return next((c for c in ranked if FAMILIES[c.family].gives_leaves), None)


def leaf_indices(member: Any, X: np.ndarray) -> np.ndarray:
    """Leaf index per row and tree (XGBoost `apply`, or a forest's `apply`), first trees only."""
    model = getattr(member, "model_", None) or member.estimator
    leaves = np.asarray(model.apply(X))
    return leaves.reshape(len(leaves), -1)[:, :MAX_LEAF_TREES]


def _as_scores(out: np.ndarray, task: str, scale: tuple[float, float]) -> np.ndarray:
    out = np.asarray(out, dtype=np.float64)
    if task == "binary":
        return np.column_stack([1.0 - out[:, 0], out[:, 0]])
    if task == "multiclass":
        return renormalise(out)
    return out[:, 0] * scale[1] + scale[0]


@register_combiner
class WideAndDeep(Combiner):
    """`members[tree_index]` (if any) gives the leaves; the Keras model does the rest."""

    kind: ClassVar[str] = "wide_deep"
    MODEL, LEAVES = "wide_deep.keras", "wide_deep_leaves.skops"

    def __init__(self, model: Any, task: str, deep_view: str, deep_keys: list[str] | None, tree_index: int | None,
                 leaf_encoder: OneHotEncoder | None, target_scale: tuple[float, float], deep_part: dict[str, Any]) -> None:
        self.model = model
        self.task = task
        self.deep_view = deep_view
        self.deep_keys = deep_keys  # input names of a dict view; None: one array, fed as "deep"
        self.tree_index = tree_index
        self.leaf_encoder = leaf_encoder
        self.target_scale = tuple(target_scale)
        self.deep_part = deep_part

    def views(self) -> set[str]:
        return {"tabular", self.deep_view}

    def wide_features(self, tabular: np.ndarray, members: list[FittedMember], views: dict[str, Any]) -> np.ndarray:
        wide = [np.asarray(tabular, dtype=np.float32)]
        if self.tree_index is not None:
            tree = members[self.tree_index]
            wide.append(self.leaf_encoder.transform(leaf_indices(tree.member, views[tree.view])))
        return np.hstack(wide).astype(np.float32)

    def feed(self, deep: Any, wide: np.ndarray) -> dict[str, Any]:
        from tuner.models.keras.training import model_input

        if self.deep_keys is None:
            return {"deep": model_input(self.model, deep), "wide_features": wide}
        return {**{k: model_input(self.model, deep[k]) for k in self.deep_keys}, "wide_features": wide}

    def combine(self, scores, members, views) -> np.ndarray:
        feed = self.feed(views[self.deep_view], self.wide_features(views["tabular"], members, views))
        return _as_scores(self.model.predict(feed, batch_size=1024, verbose=0), self.task, self.target_scale)

    def to_record(self, folder: Path) -> dict[str, Any]:
        self.model.save(folder / self.MODEL)
        if self.leaf_encoder is not None:
            save_estimator(self.leaf_encoder, folder / self.LEAVES)
        return {"model": self.MODEL, "leaf_encoder": self.LEAVES if self.leaf_encoder is not None else None,
                "task": self.task, "deep_view": self.deep_view, "deep_keys": self.deep_keys,
                "tree_index": self.tree_index, "target_scale": list(self.target_scale), "deep_part": self.deep_part}

    @classmethod
    def from_record(cls, record: dict[str, Any], folder: Path) -> WideAndDeep:
        from tuner.models.keras.training import keras

        encoder = load_estimator(folder / record["leaf_encoder"]) if record["leaf_encoder"] else None
        return cls(keras().models.load_model(folder / record["model"], safe_mode=True), record["task"], record["deep_view"],
                   record["deep_keys"], record["tree_index"], encoder, record["target_scale"], record["deep_part"])


def fit_wide_deep(tree: Candidate | None, plan: DeepPlan, part: Part, encoder: LabelEncoder | None) -> FoldFit:
    """Fit the tree member, then the joint Keras model, on `part` for the deep part's step count."""
    from tuner.models.keras.training import compile_model, keras, last_hidden, output_activation, output_units

    k = keras()
    members = [fit_candidate(tree, part, encoder)] if tree is not None else []
    leaf_encoder = None
    if members:
        leaf_encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32).fit(
            leaf_indices(members[0].member, part.X(members[0].view)))
    spec = plan.source.problem_spec(**ProblemSpec.data_fields(part, encoder))
    spec = replace(spec, max_epochs=plan.steps)
    family = FAMILIES[plan.family]
    family.seed(spec.seed)
    deep_member = family.build(plan.params, spec)
    deep_model = deep_member.model
    hidden = last_hidden(deep_model)
    if isinstance(deep_model.input, (list, tuple)) or len(deep_model.outputs) > 1 or hidden is None:
        plan = _fallback_plan(plan.source, plan.steps, f"{plan.origin} has several inputs or outputs, or no single "
                              "head layer: a dense network on the tabular view")
        family = FAMILIES[plan.family]
        deep_member = family.build(plan.params, spec)
        deep_model = deep_member.model
        hidden = last_hidden(deep_model)
    deep_view = family.view_for(spec)
    deep_keys = sorted(deep_model.input) if isinstance(deep_model.input, dict) else None
    combiner = WideAndDeep(None, spec.task, deep_view, deep_keys, 0 if members else None, leaf_encoder, (0.0, 1.0),
                           plan.record())
    wide = combiner.wide_features(part.X("tabular"), members, {m.view: part.X(m.view) for m in members})
    layers = k.layers
    wide_input = k.Input(shape=(wide.shape[1],), name="wide_features")
    wide_logits = layers.Dense(output_units(spec), kernel_regularizer=k.regularizers.L2(WIDE_L2), name="wide")(wide_input)
    deep_logits = layers.Dense(output_units(spec), name="deep")(hidden)
    inputs = ({**deep_model.input} if deep_keys else {"deep": deep_model.input})
    inputs["wide_features"] = wide_input
    with warnings.catch_warnings():  # Keras asks dict keys to equal tensor names; ours are stable keys instead
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        model = k.Model(inputs, output_activation(spec)(layers.Add()([wide_logits, deep_logits])), name="wide_and_deep")
    compile_model(model, spec, plan.params["optimizer"], plan.params["learning_rate"])
    deep_X = part.X(deep_view)
    for layer, name in deep_member.adapt:  # TextVectorization vocabularies, from these rows only
        layer.adapt((deep_X[name] if name else deep_X)[:, 0].astype(str).tolist())
    y = part.y
    if spec.task == "regression":
        combiner.target_scale = (float(np.mean(y)), float(np.std(y)) or 1.0)
        y = ((y - combiner.target_scale[0]) / combiner.target_scale[1]).astype(np.float32)
    combiner.model = model
    model.fit(combiner.feed(deep_X, wide), y, epochs=spec.max_epochs, batch_size=deep_member.batch_size, verbose=0)
    return FoldFit(members, combiner, release_memory=family.release_memory)
