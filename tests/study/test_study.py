import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import tuner
import tuner.search.runner as runner_module
import tuner.study.storage as storage_module
from tuner.data import TEST, TRAIN, VALID, SealedSplit
from tuner.core.errors import SplitMismatchError, StorageError, StudyFileError
from tuner.search.objective import Objective
from tuner.study.catalog import describe_study, list_studies
from tuner.pipeline.study_run import run_study
from tuner.study.sealed import CHOSEN_ATTR, open_sealed

from conftest import holdout_study, run_cli, tiny_study
from tiny_study import search

PACKAGE = Path(tuner.__file__).parent


@pytest.fixture
def seen_rows(monkeypatch):
    """Record the row indices every Objective is handed."""
    seen = []

    class Recording(Objective):
        def __init__(self, config, folds, *args, **kwargs):
            seen.append([{"train": f.train.rows.copy(), "val": f.val.rows.copy()} for f in folds])
            super().__init__(config, folds, *args, **kwargs)

    monkeypatch.setattr(runner_module, "Objective", Recording)
    return seen


def sealed_split(name, storage_url) -> SealedSplit:
    study = optuna.load_study(study_name=name, storage=storage_url)
    return SealedSplit.from_record(study.user_attrs["tuner.split"])


def test_objective_never_receives_a_test_row_and_resume_keeps_the_split(
        write_study, storage_url, tracking_uri, seen_rows):
    path = write_study(holdout_study("sealed", budget={"trials": 2}))
    run_study(path, storage_url, tracking_uri)
    split = sealed_split("sealed", storage_url)
    result = run_study(path, storage_url, tracking_uri, trials=4)
    assert sealed_split("sealed", storage_url).digest == split.digest
    assert result.counts == {"COMPLETE": 4} and result.trials_before == 2
    assert len(seen_rows) == 2
    test_rows = set(split.rows(TEST))
    for [rows] in seen_rows:
        assert not test_rows & set(rows["train"]) and not test_rows & set(rows["val"])
        np.testing.assert_array_equal(rows["train"], split.rows(TRAIN))
        np.testing.assert_array_equal(rows["val"], split.rows(VALID))


def test_budget_is_the_studys_total(write_study, storage_url, tracking_uri):
    path = write_study(tiny_study("total"))
    run_study(path, storage_url, tracking_uri, trials=2)
    again = run_study(path, storage_url, tracking_uri, trials=2)
    assert sum(again.counts.values()) == 2


def test_a_trial_costs_tuner_one_read_of_the_trial_list(write_study, storage_url, tracking_uri, monkeypatch):
    """Each read is a storage round trip (about 5 ms on SQLite): the budget guard reads once per trial and
    hands the list on (family caps, the time check, the progress report). A holdout study: a bagged
    trial reads the list once more to let go of fold models (Objective's let_go). Two studies of 4 and 10
    trials, so what a study reads once (set-up, plots) cancels out; Optuna's own reads are not counted."""
    reads = []

    def counted(read):
        def by_tuner(self, *args, **kwargs):
            if Path(sys._getframe(1).f_code.co_filename).is_relative_to(PACKAGE):
                reads.append(read.__name__)
            return read(self, *args, **kwargs)
        return by_tuner

    monkeypatch.setattr(optuna.Study, "get_trials", counted(optuna.Study.get_trials))
    monkeypatch.setattr(optuna.Study, "best_trial", property(counted(optuna.Study.best_trial.fget)))
    monkeypatch.setattr(optuna.Study, "user_attrs", property(counted(optuna.Study.user_attrs.fget)))
    families = {"linear": {"max_trials": 8}, "random_forest": {"max_trials": 8}}
    counts = {}
    for trials in (4, 10):
        path = write_study(holdout_study(f"reads{trials}", families=families,
                                         budget={"trials": trials, "timeout": 300, "rounds": 20}), f"reads{trials}.yaml")
        reads.clear()
        result = run_study(path, storage_url, tracking_uri)
        assert sum(result.counts.values()) == trials
        counts[trials] = len(reads)
    assert counts[10] - counts[4] <= 6, f"{counts[10] - counts[4]} reads for 6 more trials"


def test_changed_data_file_is_refused(tmp_path, write_study, storage_url, tracking_uri):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80), "y": rng.integers(0, 2, 80)})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    path = write_study(tiny_study("csv", data={"source": "rows.csv", "target": "y"}))
    run_study(path, storage_url, tracking_uri, trials=1)
    frame.loc[0, "a"] += 1.0
    frame.to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(SplitMismatchError, match="data changed since this study sealed its split"):
        run_study(path, storage_url, tracking_uri, trials=3)
    assert len(optuna.load_study(study_name="csv", storage=storage_url).trials) == 1


def test_same_name_with_another_definition_is_refused(write_study, storage_url, tracking_uri):
    run_study(write_study(tiny_study("ident")), storage_url, tracking_uri, trials=1)
    other = write_study(tiny_study("ident", families=["linear"]), "other.yaml")
    with pytest.raises(StudyFileError, match="already exists with a different definition"):
        run_study(other, storage_url, tracking_uri, trials=2)


def test_family_trial_cap(write_study, storage_url, tracking_uri):
    spec = tiny_study("capped", families={"linear": {"max_trials": 1}, "random_forest": {}},
                      sampler={"name": "random"})
    result = run_study(write_study(spec), storage_url, tracking_uri, trials=5)
    report = describe_study("capped", storage_url)
    rows = {row.family: row.trials for row in report.families}
    assert rows["linear"] <= 1 and rows["linear"] + rows["random_forest"] == 5
    assert result.counts == {"COMPLETE": 5}


def test_all_families_capped_stops_the_study(write_study, storage_url, tracking_uri):
    spec = tiny_study("allcapped", families={"linear": {"max_trials": 1}, "random_forest": {"max_trials": 1}})
    result = run_study(write_study(spec), storage_url, tracking_uri, trials=10)
    assert result.counts == {"COMPLETE": 2}


def test_a_study_without_families_searches_what_tuner_picked_and_keeps_that_choice(write_study, storage_url,
                                                                                     tracking_uri):
    spec = tiny_study("picked", budget={"trials": 3, "timeout": 60, "rounds": 20, "patience": 2})
    del spec["families"]
    run_study(write_study(spec), storage_url, tracking_uri)
    study = optuna.load_study(study_name="picked", storage=storage_url)
    chosen = study.user_attrs[CHOSEN_ATTR]["families"]
    assert "dense" not in chosen and {"linear", "xgboost", "lightgbm", "catboost"} <= set(chosen)  # a 60 s budget
    assert [t.user_attrs["family"] for t in study.trials] == chosen[:3]  # the portfolio's first round
    # a resume with a budget that would have picked the network searches the stored choice
    longer = write_study({**spec, "budget": {**spec["budget"], "timeout": 600}}, "longer.yaml")
    run_study(longer, storage_url, tracking_uri, trials=4)
    assert list(open_sealed("picked", storage_url).config.families) == chosen
    assert {t.user_attrs["family"] for t in optuna.load_study(study_name="picked", storage=storage_url).trials} <= set(chosen)
    shown = run_cli("study", "show", "picked", "--storage", storage_url)
    assert shown.returncode == 0, shown.stderr
    assert f"families chosen by tuner: {', '.join(chosen)} (binary, " in shown.stdout
    assert "left out dense: it pays from a 120 s budget" in shown.stdout


@pytest.mark.slow
def test_pruning_happens_for_the_dense_family(write_study, storage_url, tracking_uri):
    spec = holdout_study("pruned", families=["dense"], sampler={"name": "random", "seed": 0},
                      budget={"trials": 4, "epochs": 5, "patience": 5},  # 2 startup trials, then 2 the pruner may stop
                      pruner={"name": "median", "startup_trials": 2, "warmup_steps": 1})
    search(write_study(spec), storage_url, tracking_uri)  # the search alone: the plots are not what it checks
    trials = optuna.load_study(study_name="pruned", storage=storage_url).trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner stopped no dense trial"
    assert all(len(t.intermediate_values) < 5 for t in pruned)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(t.user_attrs["best_step"] >= 1 for t in complete)


def test_list_and_describe(write_study, storage_url, tracking_uri):
    run_study(write_study(tiny_study("listed")), storage_url, tracking_uri, trials=2)
    [row] = list_studies(storage_url)
    assert row["name"] == "listed" and row["trials"] == 2 and row["metric"] == "roc_auc"
    report = describe_study("listed", storage_url)
    assert report.split_counts == {"train": 455, "val": 0, "test": 114}  # 3 folds over the train part
    assert report.best_value == row["best"] and report.best_params
    with pytest.raises(StudyFileError, match="no study named 'missing'"):
        describe_study("missing", storage_url)


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot be opened"),
    ("mysql+nodriver://x@localhost/db", "cannot be opened"),
    ("just-a-path.db", "is not a URL"),
])
def test_bad_storage_urls(write_study, tracking_uri, url, expected):
    with pytest.raises(StorageError, match=expected):
        run_study(write_study(tiny_study("nostorage")), url, tracking_uri)


def test_postgres_password_is_not_printed():
    with pytest.raises(StorageError) as error:
        storage_module.open_storage("postgresql+psycopg://user:secret@127.0.0.1:1/db")
    assert "secret" not in str(error.value) and "***" in str(error.value)


def test_list_and_show_count_the_trials_the_budget_counts(write_study, storage_url, tracking_uri):
    run_study(write_study(tiny_study("counted", families=["linear"])), storage_url, tracking_uri, trials=2)
    study = optuna.load_study(study_name="counted", storage=storage_url)
    refused = study.ask()  # what BudgetGuard and the family cap record for a trial they refuse
    refused.set_user_attr("family", "linear")
    refused.set_user_attr("skipped", "the budget of 2 trials is spent")
    study.tell(refused, state=TrialState.PRUNED)
    stopped = study.ask()  # Ctrl-C: marked, and queued again with the same params
    stopped.set_user_attr("family", "linear")
    stopped.set_user_attr("interrupted", "stopped by a signal")
    study.tell(stopped, state=TrialState.FAIL)
    study.enqueue_trial({"family": "linear"})
    [row] = list_studies(storage_url)
    assert row["trials"] == 2 and len(study.trials) == 5
    report = describe_study("counted", storage_url)
    assert report.states == {"COMPLETE": 2} and [(r.family, r.trials, r.pruned, r.failed) for r in report.families] \
        == [("linear", 2, 0, 0)]
    assert report.not_counted == {"skipped": 1, "stopped and re-queued": 1, "queued": 1}


def test_read_only_commands_create_no_store_at_a_mistyped_path(tmp_path, monkeypatch):
    from conftest import run_cli

    for command in (["study", "list"], ["study", "show", "any"], ["study", "delete", "any", "--yes"]):
        done = run_cli(*command, "--storage", f"sqlite:///{tmp_path / 'typo' / 'optuna.db'}", cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
        assert "no storage at" in done.stderr
    journal = run_cli("study", "list", "--storage", f"journal:///{tmp_path / 'typo.log'}", cwd=tmp_path)
    assert journal.returncode == 2 and "no storage at" in journal.stderr
    fresh = run_cli("study", "list", cwd=tmp_path)  # a new project: nothing yet, and nothing made
    assert fresh.returncode == 0 and "no studies yet" in fresh.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"not a database at all, just text\n" * 40, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_or_foreign_storage_file_is_one_line(tmp_path, content):
    from conftest import run_cli

    (tmp_path / "optuna.db").write_bytes(content)
    done = run_cli("study", "list", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
    assert "optuna.db" in done.stderr and ("not a usable SQLite database" in done.stderr or "cannot be opened" in done.stderr)


def test_study_delete_removes_the_trials_bags(write_study, storage_url, tracking_uri):
    from tuner.study.catalog import delete_study
    from tuner.study.trial_bags import artifact_root

    run_study(write_study(tiny_study("bagged", families=["linear"])), storage_url, tracking_uri, trials=2)
    bags = artifact_root(storage_url)
    assert [p for p in bags.rglob("*") if p.is_file()]
    delete_study("bagged", storage_url)
    assert not [p for p in bags.rglob("*") if p.is_file()]
