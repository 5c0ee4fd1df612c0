"""K-fold and repeated K-fold objective: study-file keys, sealed folds, per-fold preprocessing,
the mean over folds as `cv_<metric>`, pruning per fold, and finalize on a K-fold study."""

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

import tuner.search.runner as runner_module
from tuner.core.config import PrunerConfig, StudyConfig, load_study_file
from tuner.data import HOLDOUT, TEST, VALID, SealedSplit, load_dataset, make_split
from tuner.core.errors import DataError, SplitMismatchError, StudyFileError
from tuner.evaluate.finalize import finalize_study
from tuner.core.metrics import Metric
from tuner.search.objective import Objective
from tuner.search.runner import search_folds
from tuner.search.samplers import make_pruner
from tuner.study.sealed import open_sealed, open_study
from tuner.pipeline.study_run import run_study

from conftest import holdout_study, run_cli, tiny_study
from tiny_study import search

LEGACY_IDENTITY = "bebad9999cf21d43"  # holdout_study("legacy") hashed by tuner before folds and holdout existed
LEGACY_IRIS_RECORD = {  # make_split(iris, "multiclass", 0.2, 0.2, 0, "abc").to_record() before folds existed
    "fingerprint": "abc", "seed": 0, "n_rows": 150,
    "parts": "eNo1jYEBACAIwoD/jw6QTE1tpAiRAOV0JlzNhQfxIEpp3Dd7SmPSwQyjSjrV9G38wP8pbu/4rWHSAxtLAFs=",
    "digest": "51dbf6981d05aaa5", "n_train": 90, "n_val": 30, "n_test": 30,
}


def cv_study(name: str, folds: int = 3, repeats: int = 1, **overrides) -> dict:
    """tiny_study with K folds instead of a validation part (an explicit `split=` replaces them)."""
    return tiny_study(name, **{"split": {"folds": folds, "repeats": repeats, "seed": 1}, **overrides})


class TestStudyFile:
    @pytest.mark.parametrize("split, expected", [
        ({"folds": 5, "validation_fraction": 0.2}, "validation_fraction is unused with folds"),
        ({"repeats": 2, "validation_fraction": 0.2}, "repeats needs folds"),
        ({"folds": 1}, "greater than or equal to 2"),
        ({"thresholdout": {"budget": 5}}, "thresholdout needs holdout_fraction"),
        ({"test_fraction": 0.4, "holdout_fraction": 0.2, "validation_fraction": 0.2}, "at least 30% for training"),
    ])
    def test_bad_split_keys_fail_in_one_line(self, write_study, split, expected):
        with pytest.raises(StudyFileError, match=expected) as caught:
            load_study_file(write_study(tiny_study("bad", split=split)))
        assert "\n" not in str(caught.value)

    def test_old_study_files_keep_their_identity(self):
        assert StudyConfig.model_validate(holdout_study("legacy")).identity_hash() == LEGACY_IDENTITY
        folds = StudyConfig.model_validate(cv_study("legacy"))
        assert folds.identity_hash() != LEGACY_IDENTITY
        assert folds.split.score_prefix() == "cv_" and folds.split.validation_share is None

    def test_stored_config_validates_again(self):
        config = StudyConfig.model_validate(cv_study("again", repeats=2))
        assert StudyConfig.model_validate(config.model_dump(mode="json")).identity_hash() == config.identity_hash()


class TestSealedFolds:
    def test_folds_partition_the_search_rows_and_keep_the_test_part(self):
        y = load_dataset("builtin:breast_cancer").y
        plain = make_split(y, "binary", 0.2, 0.2, 3, "f")
        split = make_split(y, "binary", 0.2, None, 3, "f", folds=4, repeats=2)
        np.testing.assert_array_equal(split.rows(TEST), plain.rows(TEST))  # the test part is sealed as before
        assert len(split.rows(VALID)) == 0 and split.n_folds == 4
        pairs = split.fold_rows()
        assert len(pairs) == 8
        search = set(split.search_rows())
        for repeat in range(2):
            validated = np.concatenate([val for _, val in pairs[repeat * 4:(repeat + 1) * 4]])
            assert sorted(validated) == sorted(search)  # each search row validates once per repeat
        for train, val in pairs:
            assert not set(train) & set(val) and set(train) | set(val) == search
            assert abs(y[val].mean() - y[train].mean()) < 0.03  # stratified
        assert not np.array_equal(pairs[0][1], pairs[4][1])  # the repeat redraws the folds

    def test_deterministic_in_the_seed(self):
        y = load_dataset("builtin:wine").y
        first = make_split(y, "multiclass", 0.2, None, 5, "f", folds=3)
        again = make_split(y, "multiclass", 0.2, None, 5, "f", folds=3)
        other = make_split(y, "multiclass", 0.2, None, 6, "f", folds=3)
        np.testing.assert_array_equal(first.folds, again.folds)
        assert first.digest == again.digest != other.digest

    def test_record_round_trip_tamper_and_old_records(self):
        y = load_dataset("builtin:diabetes").y
        split = make_split(y, "regression", 0.2, None, 0, "abc", folds=3, repeats=2)
        record = split.to_record()
        assert record["n_folds"] == 3 and record["n_repeats"] == 2
        np.testing.assert_array_equal(SealedSplit.from_record(record).folds, split.folds)
        other = make_split(y, "regression", 0.2, None, 1, "abc", folds=3, repeats=2)
        with pytest.raises(SplitMismatchError, match="altered"):
            SealedSplit.from_record(dict(record, folds=other.to_record()["folds"]))
        old = SealedSplit.from_record(LEGACY_IRIS_RECORD)
        assert old.folds is None and old.fold_rows() == [] and old.digest == LEGACY_IRIS_RECORD["digest"]
        assert old.counts() == {"train": 90, "val": 30, "test": 30}

    def test_too_many_folds_for_a_class(self):
        y = np.array([0] * 40 + [1] * 4)
        with pytest.raises(DataError, match="fewer than split.folds=5"):
            make_split(y, "binary", 0.2, None, 0, "f", folds=5)

    def test_holdout_is_a_fourth_sealed_part(self):
        y = load_dataset("builtin:breast_cancer").y
        plain = make_split(y, "binary", 0.2, 0.2, 3, "f")
        split = make_split(y, "binary", 0.2, 0.2, 3, "f", holdout_fraction=0.15)
        np.testing.assert_array_equal(split.rows(TEST), plain.rows(TEST))
        counts = split.counts()
        assert counts["holdout"] == pytest.approx(0.15 * len(y), abs=2)
        assert counts["val"] == pytest.approx(0.2 * len(y), abs=2)
        assert not set(split.search_rows()) & set(split.rows(HOLDOUT))
        with_folds = make_split(y, "binary", 0.2, None, 3, "f", folds=3, holdout_fraction=0.15)
        for train, val in with_folds.fold_rows():
            assert not (set(train) | set(val)) & (set(with_folds.rows(HOLDOUT)) | set(with_folds.rows(TEST)))
        assert SealedSplit.from_record(split.to_record()).counts() == counts


@pytest.fixture
def seen_folds(monkeypatch):
    """The folds every Objective is handed."""
    seen = []

    class Recording(Objective):
        def __init__(self, config, folds, *args, **kwargs):
            seen.append(folds)
            super().__init__(config, folds, *args, **kwargs)

    monkeypatch.setattr(runner_module, "Objective", Recording)
    return seen


def test_kfold_study_end_to_end(write_study, storage_url, tracking_uri, seen_folds):
    spec = cv_study("kfold", folds=3, repeats=2, families=["linear"], sampler={"name": "random", "seed": 0},
                    pruner={"name": "none"}, split={"folds": 3, "repeats": 2, "seed": 1, "holdout_fraction": 0.1})
    result = run_study(write_study(spec), storage_url, tracking_uri)
    assert result.counts == {"COMPLETE": 3} and result.score_name == "cv_roc_auc"
    study = optuna.load_study(study_name="kfold", storage=storage_url)
    split = SealedSplit.from_record(study.user_attrs["tuner.split"])
    dataset = load_dataset("builtin:breast_cancer")

    [folds] = seen_folds
    sealed = set(split.rows(TEST)) | set(split.rows(HOLDOUT))
    assert len(folds) == 6
    for fold, (train_rows, val_rows) in zip(folds, split.fold_rows()):
        np.testing.assert_array_equal(fold.train.rows, train_rows)
        np.testing.assert_array_equal(fold.val.rows, val_rows)
        assert not sealed & (set(fold.train.rows) | set(fold.val.rows))  # no test or holdout row reaches the search
        scaler = fold.train.preprocessor.table_.named_transformers_["numeric"][-1]
        np.testing.assert_allclose(scaler.mean_, dataset.X.iloc[train_rows].mean().to_numpy(), rtol=1e-6)

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("kfold")
    for trial in study.trials:
        scores = trial.user_attrs["fold_scores"]
        assert len(scores) == 6 and trial.value == pytest.approx(np.mean(scores))
        assert trial.intermediate_values == pytest.approx(  # the running mean over folds, step = fold index
            {k: np.mean(scores[:k + 1]) for k in range(6)})
        [run] = client.search_runs([experiment.experiment_id], f"tags.trial = '{trial.number}'")
        assert run.data.metrics["cv_roc_auc"] == pytest.approx(trial.value)
        history = client.get_metric_history(run.info.run_id, "fold/val_roc_auc")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(scores)
    parent = client.search_runs([experiment.experiment_id], "tags.`tuner.role` = 'study'")[0]
    assert "best_cv_roc_auc" in parent.data.metrics and parent.data.params["cv_folds"] == "3"

    report = finalize_study("kfold", storage_url, tracking_uri, top=1)
    assert report.score_name == "cv_roc_auc" and report.rows_scored == len(split.search_rows())
    assert report.rows_train + report.rows_val == len(split.search_rows())


def test_kfold_finalize_refits_on_every_search_row_but_not_the_holdout(write_study, storage_url, tracking_uri,
                                                                       monkeypatch):
    import tuner.evaluate.finalize as finalize_module

    spec = cv_study("kfold-fin", families=["linear"], split={"folds": 2, "seed": 1, "holdout_fraction": 0.1})
    run_study(write_study(spec), storage_url, tracking_uri, trials=2)
    fitted_on = []
    real = finalize_module.prepare_parts
    monkeypatch.setattr(finalize_module, "prepare_parts",
                        lambda dataset, task, rows, other: fitted_on.append((rows, other)) or real(dataset, task, rows, other))
    finalize_study("kfold-fin", storage_url, tracking_uri, top=1)
    split = open_sealed("kfold-fin", storage_url).split
    [(rows, other)] = fitted_on
    np.testing.assert_array_equal(rows, split.search_rows())
    assert set(other) == {"test"} and not set(rows) & set(split.rows(HOLDOUT))


class NoTracking:
    def start_trial(self, *args, **kwargs):
        return None

    def finish_trial(self, *args, **kwargs):
        return None


def test_a_poor_trial_is_pruned_after_its_second_fold(write_study, storage_url):
    config, base_dir = load_study_file(write_study(cv_study("prune", folds=4, families=["linear"])))
    sealed = open_study(config, base_dir, storage_url)
    objective = Objective(config, search_folds(sealed), NoTracking(), "0", "parent", {})
    study = sealed.study
    study.pruner = make_pruner(PrunerConfig(startup_trials=1), folds=4)
    study.optimize(objective, n_trials=1)
    good = study.trials[0]
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [0, 1, 2, 3]  # the running mean after each fold
    assert good.intermediate_values[1] == pytest.approx(np.mean(good.user_attrs["fold_scores"][:2]))
    objective.metric = Metric("roc_auc", "maximize", frozenset({"binary"}), lambda y, p: 0.0, "auc", "auc")
    study.optimize(objective, n_trials=1)
    poor = study.trials[1]
    assert poor.state == optuna.trial.TrialState.PRUNED
    assert poor.user_attrs["fold_scores"] == [0.0, 0.0]  # stopped after 2 of 4 folds


def test_kfold_names_cv_in_the_cli(write_study, storage_url, tracking_uri):
    path = write_study(cv_study("kfold-cli", folds=2, families=["linear"]))
    run = run_cli("study", "run", str(path), "--trials", "2", "--storage", storage_url, "--tracking-uri", tracking_uri)
    assert run.returncode == 0, run.stderr
    assert "best cv_roc_auc" in run.stdout and "val_roc_auc" not in run.stdout
    show = run_cli("study", "show", "kfold-cli", "--storage", storage_url)
    assert "best cv_roc_auc" in show.stdout and "2 folds x 1 repeat" in show.stdout
    listed = run_cli("study", "list", "--storage", storage_url)
    assert "cv_roc_auc" in listed.stdout


@pytest.mark.slow
def test_kfold_with_the_dense_family(write_study, storage_url, tracking_uri):
    spec = cv_study("kfold-dense", folds=2, families=["dense"], budget={"trials": 2, "epochs": 2, "patience": 1})
    result = search(write_study(spec), storage_url, tracking_uri)  # the search alone, no plots
    assert result.counts == {"COMPLETE": 2}
    study = optuna.load_study(study_name="kfold-dense", storage=storage_url)
    for trial in study.trials:
        assert len(trial.user_attrs["fold_scores"]) == 2 and 1 <= trial.user_attrs["best_step"] <= 2
    report = finalize_study("kfold-dense", storage_url, tracking_uri, top=1)
    assert report.rows[0].steps == study.best_trial.user_attrs["best_step"]


def test_a_bag_is_assembled_with_the_view_its_fold_models_were_trained_on():
    """CatBoost's bags read `native_all_levels` now; a bag stored before bags recorded their view
    was trained on `native`, and reading it with every level's codes would predict garbage."""
    from optuna.trial import create_trial

    from tuner.study.trial_attrs import VIEW_ATTR
    from tuner.study.trial_bags import stored_view

    recorded = create_trial(value=0.9, user_attrs={VIEW_ATTR: "native_all_levels"})
    older = create_trial(value=0.9, user_attrs={})
    assert stored_view(recorded, "native_all_levels") == "native_all_levels"
    assert stored_view(older, "native_all_levels") == "native"
    assert stored_view(older, "tabular") == "tabular"
