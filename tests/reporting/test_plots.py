"""Plot functions on tiny in-memory studies: real PNGs where the data allows, a note where it does not."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.reporting import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # an empty 100-dpi canvas is ~2 kB; a drawn plot with axes and text is far more


def assert_png(data: bytes) -> None:
    assert data[:8] == PNG_MAGIC
    assert len(data) > MIN_PNG_BYTES


def add(study: optuna.Study, family: str, value: float | None, state: TrialState = TrialState.COMPLETE, **params):
    distributions = {"xgboost.max_depth": IntDistribution(2, 10), "xgboost.eta": FloatDistribution(1e-3, 0.3, log=True),
                     "linear.C": FloatDistribution(1e-3, 10.0, log=True)}
    scoped = {f"{family}.{k}": v for k, v in params.items()}
    study.add_trial(create_trial(state=state, value=value, params=scoped,
                                 distributions={k: distributions[k] for k in scoped},
                                 user_attrs={"family": family, "params": params}))


@pytest.fixture
def study() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    add(study, "xgboost", 0.91, max_depth=3, eta=0.01)
    add(study, "xgboost", 0.95, max_depth=6, eta=0.1)
    add(study, "xgboost", 0.93, max_depth=8, eta=0.2)
    add(study, "linear", 0.90, C=1.0)
    add(study, "xgboost", None, TrialState.PRUNED, max_depth=4, eta=0.05)
    return study


def test_history_importances_slice_and_family_scores_are_pngs(study):
    assert_png(plots.png_bytes(plots.optimization_history(study, "roc_auc")))
    assert_png(plots.png_bytes(plots.param_importances(study, "roc_auc", "xgboost")))
    assert_png(plots.png_bytes(plots.slice_plot(study, "roc_auc", "xgboost")))
    assert_png(plots.png_bytes(plots.scores_by_family({"xgboost": [0.91, 0.95], "linear": [0.9]}, "roc_auc", "maximize")))


def test_axis_labels_name_the_metric_and_the_split(study):
    ax = plots.optimization_history(study, "roc_auc").axes[0]
    assert ax.get_ylabel() == "val_roc_auc (validation split)"
    assert "val_roc_auc" in ax.get_title()
    figure = plots.scores_by_family({"xgboost": [0.91]}, "rmse", "minimize")
    assert figure.axes[0].get_ylabel() == "val_rmse (validation split)"
    assert "lower is better" in figure.axes[0].get_title()


def test_learning_curves_of_keras_trials():
    curves = {"trial 3 dense": {"val_loss": [0.6, 0.5, 0.45], "train_loss": [0.7, 0.5, 0.4],
                                "val_auc": [0.8, 0.9, 0.92], "train_auc": [0.75, 0.88, 0.95], "learning_rate": [1e-3] * 3},
              "trial 5 dense": {"val_loss": [0.65, 0.55], "train_loss": [0.7, 0.6]}}
    figure = plots.learning_curves(curves)
    assert [ax.get_xlabel() for ax in figure.axes] == ["epoch", "epoch"]  # loss and auc panels; no learning_rate panel
    assert_png(plots.png_bytes(figure))


def test_importances_need_two_complete_trials_with_varying_params(study):
    with pytest.raises(plots.PlotSkipped, match="at least 2 complete linear trials"):
        plots.param_importances(study, "roc_auc", "linear")
    same = optuna.create_study(direction="maximize")
    add(same, "xgboost", 0.9, max_depth=3, eta=0.1)
    add(same, "xgboost", 0.8, max_depth=3, eta=0.1)
    with pytest.raises(plots.PlotSkipped, match="varying parameters"):
        plots.param_importances(same, "roc_auc", "xgboost")


def test_empty_inputs_are_skipped_with_a_note():
    empty = optuna.create_study()
    with pytest.raises(plots.PlotSkipped):
        plots.optimization_history(empty, "rmse")
    with pytest.raises(plots.PlotSkipped):
        plots.slice_plot(empty, "rmse", "xgboost")
    with pytest.raises(plots.PlotSkipped):
        plots.scores_by_family({"xgboost": []}, "rmse", "minimize")
    with pytest.raises(plots.PlotSkipped, match="Keras"):
        plots.learning_curves({"trial 1 dense": {}})


def test_study_plots_collects_images_under_plots_and_notes(study):
    result = plots.study_plots(study, "roc_auc", curves={})
    assert set(result.images) == {"plots/history.png", "plots/scores_by_family.png", "plots/importances_xgboost.png",
                                  "plots/slice_xgboost.png", "plots/slice_linear.png"}
    for png in result.images.values():
        assert_png(png)
    assert any("learning curves" in note for note in result.notes)
    assert any("importances for linear" in note for note in result.notes)


def test_later_stage_plots_on_synthetic_inputs():
    scatter = plots.validation_vs_test({"trial 3 xgboost": (0.95, 0.93), "ensemble": (0.96, 0.95)}, "roc_auc")
    assert scatter.axes[0].get_ylabel() == "test_roc_auc (sealed test split)"
    assert_png(plots.png_bytes(scatter))
    assert_png(plots.png_bytes(plots.member_weights({"trial 3 xgboost": 0.6, "trial 7 dense": 0.4})))
    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    oof = np.column_stack([base, base + rng.normal(scale=0.3, size=200), rng.normal(size=200)])
    assert_png(plots.png_bytes(plots.correlation_heatmap(["a", "b", "c"], np.corrcoef(oof, rowvar=False))))


def test_later_stage_plots_skip_without_data():
    with pytest.raises(plots.PlotSkipped):
        plots.validation_vs_test({}, "roc_auc")
    with pytest.raises(plots.PlotSkipped):
        plots.member_weights({})
    with pytest.raises(plots.PlotSkipped, match="at least 2 members"):
        plots.correlation_heatmap(["a"], np.ones((1, 1)))


def test_constant_scores_skip_importances_and_keep_the_other_plots():
    """A study whose trials all score the same (a constant model) still gets its history and slices."""
    flat = optuna.create_study(direction="maximize")
    add(flat, "xgboost", 0.5, max_depth=3, eta=0.01)
    add(flat, "xgboost", 0.5, max_depth=6, eta=0.1)
    result = plots.study_plots(flat, "roc_auc", curves={})
    assert {"plots/history.png", "plots/slice_xgboost.png"} <= set(result.images)
    assert any("varying parameters and scores" in note for note in result.notes)
