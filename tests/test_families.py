"""One contract suite over every registered family that reads the tabular view (STYLE.md)."""

import numpy as np
import optuna
import pytest

from tuner.data import TRAIN, VALID, load_dataset, make_split, prepare_parts
from tuner.core.metrics import METRICS
from tuner.models import FAMILIES, ProblemSpec, ScopedTrial

# `custom` needs a user's builder (tests/test_custom_family.py); the other families read the tabular view.
TABULAR = sorted(name for name, family in FAMILIES.items() if family.view == "tabular" and name != "custom")
PROBLEMS = {"binary": ("builtin:breast_cancer", "roc_auc"), "multiclass": ("builtin:wine", "log_loss"),
            "regression": ("builtin:diabetes", "rmse")}


@pytest.fixture(scope="module", params=sorted(PROBLEMS))
def problem(request):
    source, metric = PROBLEMS[request.param]
    dataset = load_dataset(source)
    split = make_split(dataset.y, request.param, 0.2, 0.25, 0, dataset.fingerprint)
    train, parts, _, encoder = prepare_parts(dataset, request.param, split.rows(TRAIN), {"val": split.rows(VALID)})
    spec = ProblemSpec(task=request.param, metric=metric, n_classes=len(encoder.classes_) if encoder else 0,
                       n_features=train.X("tabular").shape[1], max_epochs=3, max_rounds=30, patience=2)
    return spec, train, parts["val"]


def sampled_params(name: str, spec: ProblemSpec, seed: int = 0):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed)).ask()
    return FAMILIES[name].search_space(trial, spec), trial.params


@pytest.mark.parametrize("name", TABULAR)
def test_search_space_is_deterministic_under_fixed_trial(name, problem):
    spec, _, _ = problem
    params, raw = sampled_params(name, spec)
    assert FAMILIES[name].search_space(optuna.trial.FixedTrial(raw), spec) == params
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())


@pytest.mark.parametrize("name", TABULAR)
def test_build_fit_predict_contract(name, problem):
    spec, train, val = problem
    params, _ = sampled_params(name, spec, seed=3)
    member = FAMILIES[name].build(params, spec)
    assert member.fit(train.X("tabular"), train.y, val.X("tabular"), val.y) is member
    scores = member.predict_scores(val.X("tabular"))
    if spec.is_classification:
        assert scores.shape == (len(val), spec.n_classes)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
        assert set(np.unique(member.predict(val.X("tabular")))) <= set(range(spec.n_classes))
    else:
        assert scores.shape == (len(val),)
    assert np.isfinite(METRICS[spec.metric].score(val.y, scores))
    if member.best_step_ is not None:
        assert 1 <= member.best_step_ <= max(spec.max_epochs, spec.max_rounds)


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


@pytest.mark.parametrize("name", sorted(n for n in TABULAR if n in ("xgboost", "dense")))
def test_a_pruned_stepwise_fit_raises_trial_pruned(name, problem):
    spec, train, val = problem
    direction = METRICS[spec.metric].direction
    bound = {"lower": 1e9} if direction == "maximize" else {"upper": -1e9}  # prunes at the first report
    study = optuna.create_study(direction=direction, pruner=optuna.pruners.ThresholdPruner(**bound))
    trial = study.ask()
    params = FAMILIES[name].search_space(trial, spec)
    with pytest.raises(optuna.TrialPruned):
        FAMILIES[name].build(params, spec).fit(train.X("tabular"), train.y, val.X("tabular"), val.y, trial=trial)


def test_installed_packages_are_found_already_imported_or_not(monkeypatch):
    import sys

    import optuna_integration.xgboost  # noqa: F401  (a lazy module: find_spec refuses its missing __spec__)

    assert all(family.missing_package() is None for family in FAMILIES.values())
    monkeypatch.setitem(sys.modules, "xgboost", None)  # what an uninstalled package looks like to Python
    assert FAMILIES["xgboost"].missing_package() == "xgboost" and FAMILIES["linear"].missing_package() is None


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


@pytest.mark.parametrize("task", sorted(PROBLEMS))
def test_data_fields_give_a_spec_the_fitted_rows_classes_features_and_input_shapes(task):
    dataset = load_dataset(PROBLEMS[task][0])
    train, _, preprocessor, encoder = prepare_parts(dataset, task, np.arange(0, len(dataset.y), 2), {})
    fields = ProblemSpec.data_fields(train, encoder)
    assert fields["n_classes"] == {"binary": 2, "multiclass": 3, "regression": 0}[task]
    assert fields["n_features"] == train.X("tabular").shape[1] > 0
    assert fields.items() >= preprocessor.input_shapes().items()
    spec = ProblemSpec(task=task, metric=PROBLEMS[task][1], **fields)
    assert spec.views == preprocessor.views and spec.n_numeric == fields["n_numeric"]
