"""The portfolio a new study runs first, and the families tuner picks for a study file that names none."""

from __future__ import annotations

import pytest

from tuner.models import FAMILIES, ProblemSpec, portfolio_order
from tuner.models.portfolio import SAMPLED, choose_families, portfolio_queue

SPEC = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=10)
TABLE = ProblemSpec(task="binary", metric="roc_auc", n_classes=0, n_features=0,
                    views=("tabular", "native", "columns"), n_numeric=8, categorical_sizes=(4, 300))
TABLE_FAMILIES = ["linear", "hist_boosting", "xgboost", "random_forest", "lightgbm", "catboost"]


def rounds(queue):
    """Each queued configuration's place in its family's list (0: the family's first)."""
    seen: dict[str, int] = {}
    places = []
    for queued in queue:
        places.append(seen.get(queued.family, 0))
        seen[queued.family] = places[-1] + 1
    return places


def test_every_familys_first_configuration_comes_before_any_second_cheapest_family_first():
    queue = portfolio_queue(list(FAMILIES), SPEC, trials=1000)
    places = rounds(queue)
    assert places == sorted(places)  # round by round
    for place in set(places):
        in_round = [q.family for q, p in zip(queue, places) if p == place]
        assert in_round == portfolio_order(in_round)  # cheapest first within a round
    assert {q.family for q in queue} == set(FAMILIES)
    first = {q.family: q.label for q, p in zip(queue, places) if p == 0}
    assert all(label == ("default" if FAMILIES[n].default_params(SPEC) else SAMPLED) for n, label in first.items())
    assert len(queue) == sum(max(1, len(FAMILIES[n].portfolio(SPEC))) for n in FAMILIES)


def test_the_queue_keeps_to_the_trial_budget_and_each_familys_cap():
    full = portfolio_queue(TABLE_FAMILIES, SPEC, trials=1000)
    assert len(full) > len(TABLE_FAMILIES)  # more than one configuration per family
    assert portfolio_queue(TABLE_FAMILIES, SPEC, trials=4) == full[:4]
    assert [q.family for q in full[:len(TABLE_FAMILIES)]] == portfolio_order(TABLE_FAMILIES)
    capped = portfolio_queue(TABLE_FAMILIES, SPEC, trials=1000, caps={"lightgbm": 1, "linear": None})
    assert [q.label for q in capped if q.family == "lightgbm"] == ["default"]
    assert len(capped) == len(full) - (len(FAMILIES["lightgbm"].portfolio(SPEC)) - 1)


def test_a_short_budget_gets_the_trees_and_no_network():
    choice = choose_families(TABLE, rows=3000, columns=10, seconds=60)
    assert choice.families == portfolio_order(TABLE_FAMILIES)
    assert "dense" in choice.why and "120 s" in choice.why and "3,000 search rows" in choice.why
    assert choice.line().startswith("families chosen by tuner: linear, ")


@pytest.mark.parametrize("seconds", [None, 300])
def test_a_long_or_open_budget_adds_the_dense_network_on_a_table(seconds):
    choice = choose_families(TABLE, rows=3000, columns=10, seconds=seconds)
    assert set(choice.families) == set(TABLE_FAMILIES) | {"dense"}
    assert not any(FAMILIES[n].unsupported_reason(TABLE) for n in choice.families)


def test_images_get_the_convnet_and_an_uninstalled_family_is_left_out_with_its_reason(monkeypatch):
    images = ProblemSpec(task="multiclass", metric="accuracy", n_classes=0, n_features=0,
                         views=("tabular", "image"), image_shape=(8, 8, 1))
    assert "convnet" in choose_families(images, rows=1000, columns=0, seconds=None).families
    monkeypatch.setattr(type(FAMILIES["catboost"]), "missing_package", lambda self: "catboost")
    choice = choose_families(TABLE, rows=3000, columns=10, seconds=60)
    assert "catboost" not in choice.families and "catboost is not installed" in choice.why


def test_the_choice_round_trips_through_its_record():
    choice = choose_families(TABLE, rows=3000, columns=10, seconds=60)
    assert type(choice).from_record(choice.to_record()) == choice
