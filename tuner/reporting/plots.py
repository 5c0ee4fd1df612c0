"""A study's figures: pure functions from data (an Optuna study, scores, curves) to Figures and PNGs.

Nothing here reads storage or MLflow; the caller hands the data in. Drawing uses matplotlib's Agg
backend because tuner runs on servers and in CI without a display. A plot that the data cannot
support yet raises `PlotSkipped` with a note the report and the CLI show instead of the image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (Optuna's matplotlib plots draw through pyplot)
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from tuner.study.trial_attrs import FAMILY_ATTR  # noqa: E402
from tuner.core.metrics import direction_sign  # noqa: E402

DPI = 110
FINALIZE_PLOT = "plots/validation_vs_test.png"  # put on the study's run by `study finalize`
ENSEMBLE_PLOT_PREFIX = "plots/ensemble-"  # plots/ensemble-NAME-weights.png etc., put there by `ensemble build`


def is_study_plot(path: str) -> bool:
    """Whether a file under the study run's `plots/` is one `study_plots` draws (not finalize's or an ensemble's)."""
    return path != FINALIZE_PLOT and not path.startswith(ENSEMBLE_PLOT_PREFIX)


class PlotSkipped(Exception):
    """The data cannot support this plot yet; the message says what is missing."""


@dataclass
class PlotSet:
    """The study's plots as artifact paths (`plots/history.png`) -> PNG bytes, and what was skipped."""

    images: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def png_bytes(fig: Figure) -> bytes:
    """Render and release the figure (pyplot keeps every open figure alive otherwise)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def score_label(metric: str) -> str:
    """The search score with its split: a bare metric name is a validation score (`val_`)."""
    return metric if metric.startswith(("val_", "cv_")) else f"val_{metric}"


def _axis_label(metric: str) -> str:
    score = score_label(metric)
    return f"{score} ({'mean over folds' if score.startswith('cv_') else 'validation split'})"


def _complete(study: optuna.Study, family: str | None = None) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if family is None or t.user_attrs.get(FAMILY_ATTR) == family]


def _family_params(trials: list[FrozenTrial], family: str) -> list[str]:
    """The family's own parameters (scoped `family.name`) present in every one of its trials."""
    names = [set(t.params) for t in trials]
    common = set.intersection(*names) if names else set()
    return sorted(p for p in common if p.startswith(f"{family}."))


def optimization_history(study: optuna.Study, metric: str) -> Figure:
    if not _complete(study):
        raise PlotSkipped("optimisation history needs at least 1 complete trial")
    ax = optuna_plots.plot_optimization_history(study, target_name=score_label(metric))
    ax.set_title(f"Optimisation history: {score_label(metric)} by trial ({study.direction.name.lower()})")
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(_axis_label(metric))
    return ax.figure


def param_importances(study: optuna.Study, metric: str, family: str) -> Figure:
    """fANOVA importances of one family's parameters, over that family's complete trials."""
    trials = _complete(study, family)
    varying = [p for p in _family_params(trials, family) if len({repr(t.params[p]) for t in trials}) > 1]
    if len(trials) < 2 or not varying or len({t.value for t in trials}) < 2:
        raise PlotSkipped(f"parameter importances for {family} need at least 2 complete {family} trials with "
                          f"varying parameters and scores (it has {len(trials)} complete)")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    ax = optuna_plots.plot_param_importances(study, evaluator=evaluator, params=varying,
                                             target_name=score_label(metric))
    ax.set_title(f"Parameter importances for {score_label(metric)}: {family} ({len(trials)} complete trials)")
    ax.set_xlabel(f"importance for {_axis_label(metric)} (fANOVA)")
    return ax.figure


def slice_plot(study: optuna.Study, metric: str, family: str) -> Figure:
    """The search score against each of one family's parameters, one panel per parameter."""
    trials = _complete(study, family)
    params = _family_params(trials, family)
    if not trials or not params:
        raise PlotSkipped(f"slice plot for {family} needs a complete {family} trial with parameters")
    axes = np.atleast_1d(optuna_plots.plot_slice(study, params=params, target_name=score_label(metric)))
    for ax in axes:
        ax.set_title("")
        ax.set_xlabel(ax.get_xlabel().removeprefix(f"{family}."))
    axes[0].set_ylabel(_axis_label(metric))
    figure = axes[0].figure
    figure.suptitle(f"{family}: {score_label(metric)} against each parameter ({len(trials)} complete trials)")
    return figure


def scores_by_family(scores: dict[str, list[float]], metric: str, direction: str) -> Figure:
    """Box and strip plot of complete trials' validation scores, best family first."""
    scores = {family: values for family, values in scores.items() if values}
    if not scores:
        raise PlotSkipped("score distribution by family needs at least 1 complete trial")
    sign = direction_sign(direction)
    families = sorted(scores, key=lambda f: -sign * max(sign * v for v in scores[f]))
    figure = Figure(figsize=(max(4.5, 1.4 * len(families) + 2), 4.2))
    ax = figure.add_subplot()
    ax.boxplot([scores[f] for f in families], tick_labels=families, showfliers=False, widths=0.5)
    jitter = np.random.default_rng(0)
    for position, family in enumerate(families, start=1):
        values = scores[family]
        ax.scatter(position + jitter.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.7, zorder=3)
    ax.set_title(f"{score_label(metric)} by family ({'higher' if sign > 0 else 'lower'} is better; complete trials)")
    ax.set_xlabel("model family")
    ax.set_ylabel(_axis_label(metric))
    ax.grid(axis="y", alpha=0.3)
    return figure


def learning_curves(curves: dict[str, dict[str, list[float]]]) -> Figure:
    """Per-epoch loss and metric curves of a few trials (label -> {`val_loss`: [...], ...})."""
    curves = {label: c for label, c in curves.items() if any(c.values())}
    if not curves:
        raise PlotSkipped("learning curves need a complete Keras trial with per-epoch metrics")
    keys = sorted({k for c in curves.values() for k in c if k != "learning_rate"})
    panels = ["loss"] + sorted({k.removeprefix("train_").removeprefix("val_") for k in keys} - {"loss"})
    figure = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    colors = matplotlib.colormaps["tab10"]
    for i, (label, trial_curves) in enumerate(curves.items()):
        for ax, panel in zip(axes, panels):
            for split, style in (("val", "-"), ("train", "--")):
                values = trial_curves.get(f"{split}_{panel}", [])
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=colors(i % 10),
                            label=f"{label} ({'validation' if split == 'val' else 'training'})")
    for ax, panel in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(panel)
        ax.set_title(f"{panel}: val_{panel} (validation split, solid), train_{panel} (dashed)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"Learning curves of the best {len(curves)} Keras trial(s)")
    return figure


def validation_vs_test(scores: dict[str, tuple[float, float]], metric: str, search_score: str | None = None) -> Figure:
    """For finalize: each model's (validation, test) score; distance from the diagonal is search optimism.

    `search_score` names the x axis (`cv_<metric>` for a K-fold study); default `val_<metric>`.
    """
    if not scores:
        raise PlotSkipped("validation-vs-test scatter needs at least 1 finalized model")
    figure = Figure(figsize=(5.2, 5.0), layout="constrained")
    ax = figure.add_subplot()
    values = np.array(list(scores.values()), dtype=float)
    low, high = float(values.min()), float(values.max())
    pad = (high - low) * 0.1 or 0.01
    ax.plot([low - pad, high + pad], [low - pad, high + pad], "--", color="grey", label="test = validation")
    ax.scatter(values[:, 0], values[:, 1], zorder=3)
    for label, (val, test) in scores.items():
        ax.annotate(label, (val, test), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(_axis_label(search_score or metric))
    ax.set_ylabel(f"test_{metric} (sealed test split)")
    ax.set_title(f"{metric}: {score_label(search_score or metric)} against test_{metric}")
    ax.legend(fontsize=8)
    return figure


def member_weights(weights: dict[str, float]) -> Figure:
    """For ensembles: each member's weight in the blend, largest first."""
    if not weights:
        raise PlotSkipped("member weights need an ensemble with at least 1 member")
    members = sorted(weights, key=lambda m: weights[m])
    figure = Figure(figsize=(6.0, 0.4 * len(members) + 1.6), layout="constrained")
    ax = figure.add_subplot()
    ax.barh(members, [weights[m] for m in members])
    ax.set_xlabel("weight in the ensemble")
    ax.set_title(f"Ensemble member weights ({len(members)} members)")
    return figure


def correlation_heatmap(members: list[str], correlation: np.ndarray) -> Figure:
    """For ensembles: the correlation matrix of members' out-of-fold predictions (from the build record)."""
    correlation = np.asarray(correlation, dtype=float)
    if len(members) < 2 or correlation.shape != (len(members), len(members)):
        raise PlotSkipped("prediction correlation needs at least 2 members and their square correlation matrix")
    figure = Figure(figsize=(0.6 * len(members) + 3.0, 0.6 * len(members) + 2.4), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(correlation, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(members)), members, rotation=45, ha="right")
    ax.set_yticks(range(len(members)), members)
    for (i, j), value in np.ndenumerate(correlation):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=ax, label="Pearson correlation")
    ax.set_title("Correlation of out-of-fold predictions")
    return figure


def ensemble_plots(record: dict) -> dict[str, bytes]:
    """An ensemble build record's plots by kind: `weights`, and `correlation` with 2 or more members."""
    members = record["members"]
    images = {"weights": png_bytes(member_weights({m["label"]: m["weight"] for m in members}))}
    if len(members) > 1:
        images["correlation"] = png_bytes(correlation_heatmap(record["correlation"]["members"],
                                                              record["correlation"]["matrix"]))
    return images


def study_plots(study: optuna.Study, metric: str, curves: dict[str, dict[str, list[float]]]) -> PlotSet:
    """Every plot the study supports, as PNGs under `plots/`; the others become notes."""
    plots = PlotSet()
    families = sorted({t.user_attrs.get(FAMILY_ATTR, "?") for t in _complete(study)})
    scores = {f: [t.value for t in _complete(study, f)] for f in families}
    drawings = [("plots/history.png", lambda: optimization_history(study, metric)),
                ("plots/scores_by_family.png", lambda: scores_by_family(scores, metric, study.direction.name.lower())),
                ("plots/learning_curves.png", lambda: learning_curves(curves))]
    for family in families:
        drawings += [(f"plots/importances_{family}.png", lambda f=family: param_importances(study, metric, f)),
                     (f"plots/slice_{family}.png", lambda f=family: slice_plot(study, metric, f))]
    for path, draw in drawings:
        try:
            plots.images[path] = png_bytes(draw())
        except PlotSkipped as note:
            plots.notes.append(str(note))
        except Exception as exc:  # one plot Optuna or matplotlib cannot draw must not cost the others
            plots.notes.append(f"{path} was not drawn: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}")
    return plots
