"""The custom plug-in: a user's builder searched through the trial, scored by its monitor or the metric."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml

from tuner.core.config import load_study_file
from tuner.core.errors import StudyFileError
from tuner.models import FAMILIES, ProblemSpec
from tuner.models.keras.custom import resolve_builder
from tuner.models.keras.training import KerasMember, keras, release_memory


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras().utils.set_random_seed(0)
    yield
    release_memory()


def digit_images(n=300):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images[:n, ..., None].astype(np.float32)
    return (images - images.mean()) / images.std(), bunch.target[:n]


def image_spec(**options) -> ProblemSpec:
    return ProblemSpec(task="multiclass", metric="accuracy", n_classes=10, n_features=64, image_shape=(8, 8, 1),
                       views=("tabular", "image"), max_epochs=3, patience=3, **options)


def test_vae_is_scored_by_its_monitored_loss_at_the_best_epoch():
    X, y = digit_images()
    spec = image_spec(custom_builder="tuner.examples.vae:build_vae", custom_monitor="val_loss")
    family = FAMILIES["custom"]
    params = family.search_space(optuna.trial.FixedTrial(
        {"filters": 8, "latent_dim": 2, "hidden": 32, "kl_weight": 0.5, "learning_rate": 0.005}), spec)
    assert set(params) == {"filters", "latent_dim", "hidden", "kl_weight", "learning_rate"}
    member = family.build(params, spec).fit(X[:240], y[:240], X[240:], y[240:])
    losses = member.curves_["train_loss"]
    assert losses[-1] < losses[0]
    assert member.validation_score_ == pytest.approx(min(member.curves_["val_loss"]))


def test_multi_output_model_learns_the_target_on_each_head_and_predicts_from_the_first(tmp_path):
    X, y = digit_images()
    spec = image_spec(custom_builder="tuner.examples.multi_output:build_with_auxiliary_head")
    family = FAMILIES["custom"]
    params = family.search_space(optuna.trial.FixedTrial({"filters": 8, "learning_rate": 0.01, "auxiliary_weight": 0.3}), spec)
    member = family.build(params, spec).fit(X[:240], y[:240], X[240:], y[240:])
    assert member.validation_score_ is None  # no monitor: the study metric scores it
    assert {"train_main_loss", "train_auxiliary_loss"} <= set(member.curves_)
    scores = member.predict_scores(X[240:])
    assert scores.shape == (60, 10) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(KerasMember.load(member.save(tmp_path / "two_heads")).predict_scores(X[240:]), scores)


def uncompiled_builder(trial, inputs):
    k = keras()
    images = k.Input(shape=inputs.shape)
    return k.Model(images, inputs.output_head()(k.layers.Flatten()(images)))


def test_a_builder_that_returns_no_compiled_model_fails_the_trial_clearly():
    spec = image_spec(custom_builder=f"{__name__}:uncompiled_builder")
    with pytest.raises(TypeError, match="compiled keras.Model"):
        FAMILIES["custom"].build({}, spec)


@pytest.mark.parametrize("path, says", [
    ("tuner.examples.nowhere:build", "cannot import 'tuner.examples.nowhere'"),
    ("tuner.examples.vae:build_nothing", "has no function 'build_nothing'"),
])
def test_a_bad_builder_path_is_one_line_naming_it_and_the_fix(path, says):
    with pytest.raises(StudyFileError) as caught:
        resolve_builder(path)
    message = str(caught.value)
    assert says in message and path in message and "families.custom.builder" in message and "\n" not in message


def write_study(tmp_path, families, **extra):
    study = {"name": "custom-check", "data": {"source": "builtin:digits"}, "families": families, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_bad_builder_path_stops_the_study_before_storage_is_touched(tmp_path):
    from tuner.pipeline.study_run import run_study

    path = write_study(tmp_path, {"custom": {"builder": "my_models.vae:build", "monitor": "val_loss"}})
    storage = tmp_path / "optuna.db"
    with pytest.raises(StudyFileError, match="my_models.vae:build"):
        run_study(path, f"sqlite:///{storage}", f"sqlite:///{tmp_path / 'mlflow.db'}", trials=1)
    assert not storage.exists()


@pytest.mark.parametrize("families, extra, says", [
    ({"custom": {}}, {}, "needs `builder"),
    ({"custom": {"builder": "not a path"}}, {}, "is not `package.module:function`"),
    ({"custom": {"builder": "a.b:c", "monitor": "val_loss"}, "dense": {}}, {}, "drop `monitor`"),
    ({"custom": {"builder": "a.b:c", "monitor": "val_auc"}}, {}, "set `direction:`"),
    ({"dense": {"builder": "a.b:c"}}, {}, "belong to the custom family"),
])
def test_study_file_refuses_inconsistent_custom_options(tmp_path, families, extra, says):
    with pytest.raises(StudyFileError, match=says):
        load_study_file(write_study(tmp_path, families, **extra))


def test_custom_monitor_study_minimises_the_monitor():
    config, _ = load_study_file("studies/examples/vae-digits.yaml")
    assert config.objective_name("multiclass") == "loss"
    assert config.objective_direction("multiclass") == "minimize"


def raising_builder(trial, inputs):
    raise RuntimeError("my builder is broken")


@pytest.mark.parametrize("builder, says", [("os:system", "TypeError"), (f"{__name__}:raising_builder",
                                                                        "RuntimeError: my builder is broken")])
def test_a_failing_builder_fails_its_trials_and_the_search_goes_on(tmp_path, write_study, tracking_uri, builder, says):
    """Each custom trial is FAILED with its error and a FAILED run; the linear trials complete; one line
    names the builder. (Its module is importable from the tests' folder, which pytest puts on the path.)"""
    from mlflow.tracking import MlflowClient

    from conftest import tiny_study
    from tuner.search.runner import run_study

    name = f"broken-builder-{len(builder)}"
    path = write_study(tiny_study(name, families={"linear": {}, "custom": {"builder": builder}},
                                  sampler={"name": "random", "seed": 0}, budget={"trials": 5, "epochs": 2}))
    result = run_study(path, f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").get_trials()
    custom = [t for t in trials if t.user_attrs.get("family") == "custom"]
    assert custom and all(t.state.name == "FAIL" and says in t.user_attrs["error"] for t in custom)
    assert result.best_family == "linear" and result.counts["COMPLETE"] == len(trials) - len(custom)
    [line] = result.family_failures
    assert repr(builder) in line and says in line
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id], "tags.family = 'custom'")
    assert len(runs) == len(custom) and all(r.info.status == "FAILED" and says in r.data.tags["error"] for r in runs)
