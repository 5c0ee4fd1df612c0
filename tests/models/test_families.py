"""One contract suite over every registered family, each on data of the view it reads (STYLE.md;
scikit-learn's `check_estimator` and Optuna's storage test suite are the models).

Each case is a family on a small problem, named `family-problem` in the test ids. The contract:
the search space is deterministic under `FixedTrial` and returns plain values; a fitted member
predicts one finite score per row (probabilities summing to 1 for classification); save and load
give identical predictions; a stepwise family (Keras epochs, boosting rounds) raises `TrialPruned`
when its pruner says so and a one-shot family never asks; library defaults lie in the space and build.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import optuna
import pytest
from sklearn.model_selection import train_test_split

from tuner.core.metrics import METRICS
from tuner.data import Part, load_dataset, prepare_parts
from tuner.models import FAMILIES, ProblemSpec, ScopedTrial

from ensemble_fixtures import FixedAnswers

# problem -> (source, task, metric, rows kept): rows are subsampled so each fit takes a second or two
PROBLEMS = {
    "binary": ("builtin:breast_cancer", "binary", "roc_auc", 300),
    "multiclass": ("builtin:wine", "multiclass", "log_loss", 178),
    "regression": ("builtin:diabetes", "regression", "rmse", 300),
    "mixed": ("builtin:generated_mixed", "binary", "roc_auc", 300),  # numbers, categoricals with gaps, text
    "digits": ("builtin:digits", "multiclass", "accuracy", 300),  # 8x8x1 images
    "series": ("builtin:generated_series", "multiclass", "log_loss", 240),  # N x T x F
    "text": ("builtin:generated_text", "binary", "roc_auc", 240),  # a free-text column
}
# the problems each view is checked on
VIEW_PROBLEMS = {
    "tabular": ["binary", "multiclass", "regression"],
    "native": ["binary", "multiclass", "regression", "mixed"],
    "native_all_levels": ["binary", "multiclass", "regression", "mixed"],
    "image": ["digits"],
    "sequence": ["series", "text"],
    "columns": ["mixed"],
}
STEPWISE = {"xgboost", "lightgbm", "catboost"} | {name for name, family in FAMILIES.items() if family.uses_tensorflow}
CASES = [(name, problem) for name, family in sorted(FAMILIES.items()) for problem in VIEW_PROBLEMS.get(family.view, [])]
CASE_IDS = [f"{name}-{problem}" for name, problem in CASES]
FIRST_CASES = [(name, problems[0]) for name, problems in
               {name: [p for n, p in CASES if n == name] for name in sorted(FAMILIES)}.items()]


def tiny_builder(trial, inputs):
    """The custom family's builder here: one hidden layer, compiled as tuner compiles its own families."""
    from tuner.models.keras.training import compile_model, keras

    k = keras()
    features = k.Input(shape=inputs.shape)
    hidden = k.layers.Dense(trial.suggest_int("units", 4, 16, log=True), activation="relu")(features)
    model = k.Model(features, inputs.output_head()(hidden))
    compile_model(model, inputs.spec, "adam", trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True))
    return model


@dataclass(frozen=True)
class Problem:
    spec: ProblemSpec
    train: Part
    val: Part


@lru_cache(maxsize=None)
def problem(name: str) -> Problem:
    """A stratified 75/25 split of a subsample, preprocessed as a study's fold is."""
    source, task, metric, rows = PROBLEMS[name]
    dataset = load_dataset(source)
    stratify = dataset.y if task != "regression" else None
    every_row = np.arange(len(dataset.y))
    kept = every_row if rows >= len(every_row) else train_test_split(
        every_row, train_size=rows, stratify=stratify, random_state=0)[0]
    fit_rows, val_rows = train_test_split(kept, test_size=0.25, random_state=0,
                                          stratify=None if stratify is None else stratify[kept])
    train, parts, preprocessor, encoder = prepare_parts(dataset, task, np.sort(fit_rows), {"val": np.sort(val_rows)})
    spec = ProblemSpec(task=task, metric=metric, n_classes=len(encoder.classes_) if encoder else 0,
                       n_features=train.X("tabular").shape[1], max_epochs=2, max_rounds=20, patience=2,
                       custom_builder=f"{__name__}:tiny_builder", **preprocessor.input_shapes())
    return Problem(spec, train, parts["val"])


@pytest.fixture
def keras_seeded_and_released(request):
    """Keras cases that fit start from one seed and leave no graph behind for the next case (a case
    that only samples params skips it: clearing Keras' session costs a second or more)."""
    name = request.node.callspec.params.get("name") if hasattr(request.node, "callspec") else None
    keras_case = name is not None and FAMILIES[name].uses_tensorflow
    if keras_case:
        from tuner.models.keras.training import keras

        keras().utils.set_random_seed(0)
    yield
    if keras_case:
        from tuner.models.keras.training import release_memory

        release_memory()


def sampled_params(name: str, spec: ProblemSpec, seed: int = 0):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed)).ask()
    return FAMILIES[name].search_space(trial, spec), trial.params


def smallest_params(name: str, spec: ProblemSpec) -> dict:
    """Each range's low end and each list's first choice: the cheapest model of the space."""
    return FAMILIES[name].search_space(FixedAnswers({}), spec)


def fitted(name: str, data: Problem, params: dict, trial=None):
    family = FAMILIES[name]
    view = family.view_for(data.spec)
    member = family.build(params, data.spec)
    assert member.fit(data.train.X(view), data.train.y, data.val.X(view), data.val.y, trial=trial) is member
    return member, view


def test_every_registered_family_has_contract_cases():
    """A new family (or a new view) fails here until it is given data to be checked on."""
    assert {name for name, _ in CASES} == set(FAMILIES)
    assert all(FAMILIES[name].unsupported_reason(problem(p).spec) is None for name, p in CASES)


@pytest.mark.parametrize("name, problem_name", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seed", [0, 7])
def test_search_space_is_deterministic_under_fixed_trial_and_plain(name, problem_name, seed):
    spec = problem(problem_name).spec
    params, raw = sampled_params(name, spec, seed)
    again = FAMILIES[name].search_space(optuna.trial.FixedTrial(raw), spec)
    assert again == params and list(again) == list(params)
    assert all(type(value) in (int, float, str, bool) for value in params.values()), params
    assert json.loads(json.dumps(params)) == params  # what Optuna stores and MLflow logs


@pytest.mark.parametrize("name, problem_name", CASES, ids=CASE_IDS)
@pytest.mark.usefixtures("keras_seeded_and_released")
def test_a_fitted_member_predicts_by_contract_and_round_trips_through_save_and_load(name, problem_name, tmp_path):
    data = problem(problem_name)
    spec = data.spec
    member, view = fitted(name, data, smallest_params(name, spec))
    scores = member.predict_scores(data.val.X(view))
    assert np.isfinite(scores).all()
    if spec.is_classification:
        assert scores.shape == (len(data.val), spec.n_classes)
        assert (scores >= 0).all()
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(member.predict(data.val.X(view)), scores.argmax(axis=1))
    else:
        assert scores.shape == (len(data.val),)
    assert np.isfinite(METRICS[spec.metric].score(data.val.y, scores))
    if name in STEPWISE or member.best_step_ is not None:
        assert 1 <= member.best_step_ <= max(spec.max_epochs, spec.max_rounds)
    loaded = type(member).load(member.save(tmp_path / "member"))
    np.testing.assert_array_equal(loaded.predict_scores(data.val.X(view)), scores)
    assert loaded.best_step_ == member.best_step_


# every Keras family prunes through KerasMember.fit: dense and custom check it in the fast suite, the heavier rest when slow
PRUNE_CASES = [pytest.param(n, p, id=f"{n}-{p}", marks=[pytest.mark.slow] if FAMILIES[n].uses_tensorflow and n not in
                            ("dense", "custom") else []) for n, p in FIRST_CASES]


@pytest.mark.parametrize("name, problem_name", PRUNE_CASES)
@pytest.mark.usefixtures("keras_seeded_and_released")
def test_a_stepwise_fit_is_pruned_when_its_pruner_says_so_and_a_one_shot_fit_never_asks(name, problem_name):
    data = problem(problem_name)
    # prunes at the first report; the study's direction is its metric's, as a tuner study's is (LightGBM checks)
    study = optuna.create_study(direction=METRICS[data.spec.metric].direction,
                                pruner=optuna.pruners.ThresholdPruner(lower=1e300))
    trial = study.ask()
    params = smallest_params(name, data.spec)
    if name in STEPWISE:
        with pytest.raises(optuna.TrialPruned):
            fitted(name, data, params, trial=trial)
    else:
        fitted(name, data, params, trial=trial)
        assert study.trials[0].intermediate_values == {}


WITH_DEFAULTS = [(n, p) for n, p in FIRST_CASES if FAMILIES[n].default_params(problem(p).spec) is not None]


@pytest.mark.parametrize("name, problem_name", WITH_DEFAULTS, ids=[f"{n}-{p}" for n, p in WITH_DEFAULTS])
@pytest.mark.usefixtures("keras_seeded_and_released")
def test_default_params_lie_in_the_search_space_and_build(name, problem_name):
    """The portfolio enqueues them as the family's first trial: each must be a value the space can suggest."""
    data = problem(problem_name)
    defaults = FAMILIES[name].default_params(data.spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FixedTrial warns when a value is outside its distribution
        assert FAMILIES[name].search_space(optuna.trial.FixedTrial(defaults), data.spec) == defaults
    study = optuna.create_study()
    study.enqueue_trial({"family": name, **{f"{name}.{key}": value for key, value in defaults.items()}})
    assert FAMILIES[name].search_space(ScopedTrial(study.ask(), name), data.spec) == defaults
    member, view = fitted(name, data, defaults)
    assert np.isfinite(member.predict_scores(data.val.X(view))).all()


PORTFOLIO_CASES = [(n, p) for n, p in CASES if p in ("binary", "regression")
                   and len(FAMILIES[n].portfolio(problem(p).spec)) > 1]


@pytest.mark.parametrize("name, problem_name", PORTFOLIO_CASES, ids=[f"{n}-{p}" for n, p in PORTFOLIO_CASES])
@pytest.mark.usefixtures("keras_seeded_and_released")
def test_portfolio_configurations_lie_in_the_search_space_and_build(name, problem_name):
    """Each is enqueued as a point of the family's space: FixedTrial over the space gives it back unchanged
    and, the library default first, each builds and fits (the networks' fit is the default's test's)."""
    data = problem(problem_name)
    configs = FAMILIES[name].portfolio(data.spec)
    assert next(iter(configs.values())) == FAMILIES[name].default_params(data.spec)
    for label, params in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FixedTrial warns when a value is outside its distribution
            assert FAMILIES[name].search_space(optuna.trial.FixedTrial(params), data.spec) == params, label
        if label != "default" and not FAMILIES[name].uses_tensorflow:
            member, view = fitted(name, data, params)
            assert np.isfinite(member.predict_scores(data.val.X(view))).all(), label


def test_scoped_trial_prefixes_names_so_families_never_collide():
    study = optuna.create_study()
    trial = study.ask()
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=4)
    params = FAMILIES["xgboost"].search_space(ScopedTrial(trial, "xgboost"), spec)
    assert set(trial.params) == {f"xgboost.{k}" for k in params}


def test_registry_refuses_a_duplicate_name():
    from tuner.models import register

    with pytest.raises(RuntimeError, match="registered twice"):
        register(FAMILIES["linear"])


def test_installed_packages_are_found_already_imported_or_not(monkeypatch):
    import sys

    import optuna_integration.xgboost  # noqa: F401  (a lazy module: find_spec refuses its missing __spec__)

    assert all(family.missing_package() is None for family in FAMILIES.values())
    monkeypatch.setitem(sys.modules, "xgboost", None)  # what an uninstalled package looks like to Python
    assert FAMILIES["xgboost"].missing_package() == "xgboost" and FAMILIES["linear"].missing_package() is None


@pytest.mark.parametrize("forest", ["RandomForestClassifier", "ExtraTreesRegressor"])
def test_a_forest_grows_in_steps_to_the_trees_of_one_fit_and_stops_at_the_deadline(forest):
    """Under a search trial's deadline a forest adds its trees in steps (`warm_start`): uncut, the same
    trees as one fit; past the deadline, one step's trees, as a booster stops at its round."""
    import time

    import sklearn.ensemble
    from sklearn.datasets import make_classification

    from tuner.core.deadline import trial_deadline
    from tuner.models.estimators.member import TREES_PER_STEP, SklearnMember

    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    make = getattr(sklearn.ensemble, forest)
    trees = 2 * TREES_PER_STEP + 20

    def member() -> SklearnMember:
        return SklearnMember(make(n_estimators=trees, max_features=0.5, random_state=3), classification="Classifier" in forest)

    whole = make(n_estimators=trees, max_features=0.5, random_state=3).fit(X, y)
    with trial_deadline(time.monotonic() + 3600):
        stepped = member().fit(X, y)
    assert len(stepped.estimator.estimators_) == trees and not stepped.estimator.warm_start
    expected = whole.predict_proba(X) if "Classifier" in forest else whole.predict(X)
    np.testing.assert_allclose(stepped.predict_scores(X), expected, atol=1e-12)
    with trial_deadline(time.monotonic() - 1):
        cut = member().fit(X, y)
    assert len(cut.estimator.estimators_) == cut.estimator.n_estimators == TREES_PER_STEP


def test_a_forest_predicts_small_inputs_on_one_thread_and_keeps_its_own_setting():
    """Fewer rows than THREADED_PREDICT_ROWS: one thread (joblib's threads cost 3x on 1,000 rows),
    the same probabilities, and the forest's n_jobs as it was for the next fit."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    from tuner.models.estimators.member import THREADED_PREDICT_ROWS, SklearnMember

    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    member = SklearnMember(RandomForestClassifier(n_estimators=20, n_jobs=-1, random_state=0), classification=True)
    member.fit(X, y)
    threads_seen, predict_proba = [], member.estimator.predict_proba
    member.estimator.predict_proba = lambda rows: threads_seen.append(member.estimator.n_jobs) or predict_proba(rows)
    scores = member.predict_scores(X[:100])
    assert len(X[:100]) < THREADED_PREDICT_ROWS and threads_seen == [1]
    assert member.estimator.n_jobs == -1
    del member.estimator.predict_proba
    np.testing.assert_allclose(scores, member.estimator.predict_proba(X[:100]), atol=1e-12)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_data_fields_give_a_spec_the_fitted_rows_classes_features_and_input_shapes(task):
    dataset = load_dataset(PROBLEMS[task][0])
    train, _, preprocessor, encoder = prepare_parts(dataset, task, np.arange(0, len(dataset.y), 2), {})
    fields = ProblemSpec.data_fields(train, encoder)
    assert fields["n_classes"] == {"binary": 2, "multiclass": 3, "regression": 0}[task]
    assert fields["n_features"] == train.X("tabular").shape[1] > 0
    assert fields.items() >= preprocessor.input_shapes().items()
    spec = ProblemSpec(task=task, metric=PROBLEMS[task][2], **fields)
    assert spec.views == preprocessor.views and spec.n_numeric == fields["n_numeric"]


@pytest.mark.parametrize(("name", "problem_name"), FIRST_CASES, ids=[name for name, _ in FIRST_CASES])
@pytest.mark.usefixtures("keras_seeded_and_released")
def test_folds_fitted_side_by_side_in_workers_predict_as_a_fold_fitted_alone(name, problem_name):
    """The search fits a bag's folds in joblib workers: a worker's fold is seeded and predicts as the
    same fold fitted in this process, so parallel folds give a seeded study the same out-of-fold rows."""
    from tuner.search.fold_fits import FoldFitter, fit_fold

    family, data = FAMILIES[name], problem(problem_name)
    if not family.fits_in_workers():  # the custom family's builder lives on this process's path only
        assert FoldFitter(2).wave_size(family, 5) == 1
        return
    view = family.view_for(data.spec)
    fold = (data.train.X(view), data.train.y, data.val.X(view), data.val.y)
    params = smallest_params(name, data.spec)
    alone = fit_fold(family, params, data.spec, 3, fold, None, threads=1, predict=True)
    side_by_side = FoldFitter(2).fit(family, params, [data.spec, data.spec], 3, [fold, fold], None, predict=True)
    assert alone.error is None and [fit.error for fit in side_by_side] == [None, None]
    for fit in side_by_side:
        np.testing.assert_allclose(fit.predicted, alone.predicted, rtol=1e-5, atol=1e-6)
        assert fit.member.best_step_ == alone.member.best_step_


def test_a_fold_that_fails_in_a_worker_comes_back_as_its_own_error():
    from tuner.search.fold_fits import FoldFitter

    data = problem("binary")
    fold = (data.train.X("tabular"), data.train.y, data.val.X("tabular"), data.val.y)
    params = {**smallest_params("random_forest", data.spec), "min_samples_leaf": -3}
    fits = FoldFitter(2).fit(FAMILIES["random_forest"], params, [data.spec] * 2, 0, [fold, fold], None, predict=True)
    assert all(isinstance(fit.error, ValueError) and "min_samples_leaf" in str(fit.error) for fit in fits)
    assert all("Traceback" in fit.error_trace for fit in fits)
