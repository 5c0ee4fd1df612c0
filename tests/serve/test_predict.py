"""`tuner predict`'s input gets training's care: infinities and JSON named .csv refused in one line,
columns the model learns nothing from warned about, the input file never overwritten."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.ensemble_fixtures import tiny_ensemble
from tests.serve.test_export import make_build
from tuner.core.errors import DataError, TunerError
from tuner.serve.export import export_ensemble
from tuner.serve.predict import predict_file


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tracking_uri):
    """A blend over generated_mixed (numbers, categoricals, text), exported once, and unseen raw rows."""
    root = tmp_path_factory.mktemp("exports")
    ensemble, rest = tiny_ensemble("builtin:generated_mixed", "binary", "roc_auc")
    make_build(root, "inputs", ensemble)
    return export_ensemble("inputs", root=root, tracking_uri=tracking_uri, refit="none").folder, rest.raw.copy()


def test_infinity_in_a_numeric_column_is_one_line_exit_2(tmp_path, exported):
    folder, rows = exported[0], exported[1].copy()
    rows.loc[3, "age"] = np.inf
    rows.to_csv(tmp_path / "rows.csv", index=False)
    done = run_cli("predict", str(folder), str(tmp_path / "rows.csv"), "-o", str(tmp_path / "out.csv"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
    assert "column 'age' holds infinite values (row 4)" in done.stderr and not (tmp_path / "out.csv").exists()


def test_a_column_of_unseen_levels_or_all_empty_is_warned_about_with_its_share(tmp_path, exported):
    folder, rows = exported[0], exported[1].copy()
    rows["region"] = ["atlantis"] * (len(rows) - 4) + [None] * 4
    rows["monthly_spend"] = np.nan
    rows.to_csv(tmp_path / "rows.csv", index=False)
    predicted = predict_file(folder, tmp_path / "rows.csv")
    assert len(predicted.frame) == len(rows)
    [spend, region] = predicted.warnings
    assert "column 'monthly_spend' is empty in all" in spend and "(100%)" in spend
    share = f"{(len(rows) - 4) / len(rows):.0%}"
    assert "column 'region' holds only levels training never saw ('atlantis')" in region and share in region
    rows["region"] = ["atlantis"] + [exported[1]["region"].dropna().iloc[0]] * (len(rows) - 1)
    rows["monthly_spend"] = 1.0
    rows.to_csv(tmp_path / "some.csv", index=False)
    assert predict_file(folder, tmp_path / "some.csv").warnings == []  # one unseen level among known ones: no warning


def test_output_never_overwrites_the_input_file(tmp_path, exported):
    folder, rows = exported[0], exported[1].copy()
    rows.to_csv(tmp_path / "rows.csv", index=False)
    before = (tmp_path / "rows.csv").read_bytes()
    with pytest.raises(TunerError, match="is the input file; write the predictions to another file"):
        predict_file(folder, tmp_path / "rows.csv", tmp_path / "sub" / ".." / "rows.csv")
    assert (tmp_path / "rows.csv").read_bytes() == before


def test_json_named_csv_is_one_line_saying_so(tmp_path, exported):
    folder, rows = exported[0], exported[1].copy()
    (tmp_path / "rows.csv").write_text(rows.head(3).to_json(orient="records"))
    with pytest.raises(DataError, match="holds JSON, not CSV"):
        predict_file(folder, tmp_path / "rows.csv")
