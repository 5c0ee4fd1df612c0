from pathlib import Path

import pytest

from tuner.core.config import StudyConfig, load_study_file
from tuner.core.errors import StudyFileError

from conftest import REPO, tiny_study

SHIPPED = sorted((REPO / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_study_files_are_valid(path: Path):
    config, base_dir = load_study_file(path)
    assert config.name and config.families
    assert base_dir == path.parent.resolve()


def test_shipped_examples_cover_the_three_tasks():
    tasks = {load_study_file(REPO / "studies" / f)[0].data.source for f in
             ("breast-cancer.yaml", "digits.yaml", "diabetes.yaml")}
    assert tasks == {"builtin:breast_cancer", "builtin:digits", "builtin:diabetes"}


def test_a_study_file_may_leave_the_families_to_tuner(write_study):
    spec = tiny_study("picked")
    del spec["families"]
    config, _ = load_study_file(write_study(spec))
    assert config.picks_families and config.families is None and config.custom_monitor is None
    chosen = config.with_families(["linear", "xgboost"])
    assert list(chosen.families) == ["linear", "xgboost"] and not chosen.picks_families
    assert config.identity_hash() != load_study_file(write_study(tiny_study("picked"), "named.yaml"))[0].identity_hash()
    with pytest.raises(StudyFileError, match="name at least one family"):
        load_study_file(write_study(tiny_study("empty", families=[]), "empty.yaml"))


def test_defaults_and_family_list_shorthand(write_study):
    config, _ = load_study_file(write_study(tiny_study("s", families=["linear", {"xgboost": {"max_trials": 2}}])))
    assert config.families["xgboost"].max_trials == 2
    assert config.families["linear"].max_trials is None
    assert config.sampler.name == "tpe" and config.pruner.name == "median"
    assert config.budget.trials == 3


@pytest.mark.parametrize("change, expected", [
    ({"famlies": ["linear"]}, "famlies: unknown key"),
    ({"budget": {"trials": -3}}, "budget.trials: Input should be greater than 0"),
    ({"families": ["linear", "svm"]}, "unknown family 'svm'; choose from"),
    ({"families": []}, "name at least one family"),
    ({"metric": "f1"}, "unknown metric 'f1'"),
    ({"task": "regression", "metric": "roc_auc"}, "does not fit a regression task"),
    ({"metric": "rmse", "direction": "maximize"}, "rmse is to minimize"),
    ({"split": {"test_fraction": 0.5, "validation_fraction": 0.4}}, "must leave at least 30% for training"),
    ({"data": {"source": "rows.xlsx"}}, "neither builtin:NAME nor a .csv, .parquet or .npz file"),
    ({"name": "bad name!"}, "name: String should match pattern"),
    ({"sampler": {"name": "grid"}}, "sampler.name: Input should be"),
])
def test_bad_study_files_fail_in_one_line_naming_the_field(write_study, change, expected):
    spec = tiny_study("bad")
    spec.update(change)
    if "famlies" in change:
        del spec["families"]
    with pytest.raises(StudyFileError) as error:
        load_study_file(write_study(spec))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nfamilies: [linear\n")
    with pytest.raises(StudyFileError, match=r"not valid YAML at line \d"):
        load_study_file(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(StudyFileError, match="no such study file"):
        load_study_file(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(StudyFileError, match="YAML mapping"):
        load_study_file(tmp_path / "list.yaml")


def test_identity_ignores_budget_but_not_the_space():
    base = StudyConfig.model_validate(tiny_study("s"))
    more_budget = StudyConfig.model_validate(tiny_study("s", budget={"trials": 99}, description="x"))
    other_space = StudyConfig.model_validate(tiny_study("s", families=["linear"]))
    assert base.identity_hash() == more_budget.identity_hash()
    assert base.identity_hash() != other_space.identity_hash()


def test_a_key_given_twice_is_refused_in_one_line(tmp_path):
    from tuner.core.config import load_study_file
    from tuner.core.errors import StudyFileError

    path = tmp_path / "study.yaml"
    path.write_text("name: twice\ndata:\n  source: builtin:breast_cancer\nfamilies: [linear]\n"
                    "budget:\n  trials: 3\n  trials: 300\n")
    with pytest.raises(StudyFileError, match=r"not valid YAML at line 7: key 'trials' is given twice; keep one"):
        load_study_file(path)


def test_trials_has_an_upper_bound():
    from pydantic import ValidationError

    from tuner.core.config import MAX_TRIALS, StudyConfig

    spec = {"name": "many", "data": {"source": "builtin:breast_cancer"}, "families": ["linear"]}
    assert StudyConfig.model_validate({**spec, "budget": {"trials": MAX_TRIALS}}).budget.trials == MAX_TRIALS
    with pytest.raises(ValidationError, match="less than or equal to 100000"):
        StudyConfig.model_validate({**spec, "budget": {"trials": MAX_TRIALS + 1}})
