"""An export that loads without running code it carries, refuses a changed file in one line, and an
export killed with `kill -9` whose leftovers the next export removes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.tiny_study import run_in_process
from tests.ensemble_fixtures import tiny_ensemble
from tests.serve.test_export import champion, make_build, registry_versions
from tuner.core.errors import TunerError
from tuner.core.safe_files import CHECKSUMS, save_estimator, write_checksums
from tuner.data import load_dataset, prepare_parts
from tuner.ensemble import FittedEnsemble, FittedMember, WeightedAverage
from tuner.models import FAMILIES, ProblemSpec
from tuner.serve.export import export_ensemble
from tuner.serve.leftovers import clear_leftovers
from tuner.serve.predict import predict_file
from tuner.tracking.registry import PENDING_TAG

PICKLE_MAGIC = b"\x80"  # every pickle protocol from 2 on starts with PROTO


class Planted:
    """A pickle whose loading creates `path`: what an attacker would put where a model file belongs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def five_families():
    """linear + XGBoost + dense (tiny_ensemble) with a random forest and a HistGradientBoosting member
    beside them, on generated_mixed; and 40 unseen raw rows."""
    ensemble, rest = tiny_ensemble("builtin:generated_mixed", "binary", "roc_auc")
    dataset = load_dataset("builtin:generated_mixed")
    fit, _, preprocessor, _ = prepare_parts(dataset, "binary", np.arange(len(dataset.y) - 40), {})
    spec = ProblemSpec(task="binary", metric="roc_auc", n_classes=2, n_features=fit.X("tabular").shape[1],
                       max_rounds=5, **preprocessor.input_shapes())
    more = {"random_forest": ({"n_estimators": 10, "max_depth": 4, "max_features": 0.5, "min_samples_leaf": 2,
                               "bootstrap": True}, "tabular"),
            "hist_boosting": (FAMILIES["hist_boosting"].default_params(spec), "native")}
    members = list(ensemble.members)
    for trial, (family, (params, view)) in enumerate(more.items(), start=len(members)):
        members.append(FittedMember("s", trial, family, params, None, view,
                                    FAMILIES[family].build(params, spec).fit(fit.X(view), fit.y)))
    blend = FittedEnsemble("weighted", "binary", "roc_auc", ensemble.classes, ensemble.preprocessor, members,
                           WeightedAverage(np.full(5, 0.2)), ensemble.fingerprint, "digest", example=ensemble.example)
    rows = rest.raw.copy()
    rows.loc[0, "plan"] = None
    rows.loc[1, "monthly_spend"] = np.nan
    return blend, rows


@pytest.fixture(scope="module")
def exported(five_families, tracking_uri, tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    make_build(root, "safe", five_families[0])
    return export_ensemble("safe", root=root, tracking_uri=tracking_uri, refit="none").folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A private copy of an export, to change without touching the module's."""
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_an_export_of_five_families_holds_no_pickle_and_predicts_as_the_blend_in_memory(five_families, exported, tmp_path):
    blend, rows = five_families
    artifacts = [p for p in (exported / "artifacts").rglob("*") if p.is_file()]
    pickled = [p for p in artifacts if p.read_bytes()[:1] == PICKLE_MAGIC or p.suffix in (".joblib", ".pkl", ".pickle")]
    assert not pickled, pickled
    assert {p.suffix for p in artifacts} >= {".skops", ".json", ".keras", ".parquet"}
    assert (exported / "artifacts" / "weighted" / CHECKSUMS).is_file()

    rows.to_csv(tmp_path / "rows.csv", index=False)
    expected = blend.predict_frame(rows)
    direct = predict_file(exported, tmp_path / "rows.csv").frame
    through_pyfunc = mlflow.pyfunc.load_model(str(exported)).predict(rows)
    for frame in (direct, through_pyfunc):
        np.testing.assert_array_equal(frame["prediction"], expected["prediction"])
        np.testing.assert_allclose(frame[["proba_no", "proba_yes"]], expected[["proba_no", "proba_yes"]], rtol=0, atol=1e-12)


def test_a_changed_file_is_one_line_naming_it(exported, tmp_path, five_families, monkeypatch, capsys):
    folder = copy_of(exported, tmp_path)
    five_families[1].to_csv(tmp_path / "rows.csv", index=False)
    member = next((folder / "artifacts" / "weighted" / "members").glob("*-xgboost/member.json"))
    member.write_bytes(member.read_bytes().replace(b'"', b"'", 1))
    line = "file artifacts/weighted/members/.*-xgboost/member.json of this export changed since it was exported; export it again"
    with pytest.raises(TunerError, match=line):
        predict_file(folder, tmp_path / "rows.csv")
    with pytest.raises(Exception, match=line):
        mlflow.pyfunc.load_model(str(folder))

    done = run_in_process(monkeypatch, capsys, "predict", str(folder), str(tmp_path / "rows.csv"))
    assert done.returncode == 2 and "changed since it was exported" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("target", ["preprocessor.skops", "members/00-linear/member/estimator.skops"])
def test_a_pickle_put_in_place_of_a_skops_file_is_refused_and_never_run(exported, tmp_path, five_families, target,
                                                                        monkeypatch, capsys):
    """Even with checksums.json rewritten to match (a deliberate edit, which a checksum cannot stop)."""
    folder = copy_of(exported, tmp_path)
    blend = folder / "artifacts" / "weighted"
    marker = tmp_path / "pwned"
    (blend / target).write_bytes(pickle.dumps(Planted(marker)))
    write_checksums(blend)
    five_families[1].to_csv(tmp_path / "rows.csv", index=False)

    with pytest.raises(TunerError, match=f"{target}.* is not a skops file .*it was not loaded"):
        predict_file(folder, tmp_path / "rows.csv")
    done = run_in_process(monkeypatch, capsys, "predict", str(folder), str(tmp_path / "rows.csv"))
    assert done.returncode == 2 and "is not a skops file" in done.stderr, done.stderr[-2000:]
    assert not marker.exists()


def test_a_skops_file_of_an_untrusted_type_or_a_foreign_member_class_is_refused(exported, tmp_path, five_families):
    folder = copy_of(exported, tmp_path)
    blend = folder / "artifacts" / "weighted"
    five_families[1].to_csv(tmp_path / "rows.csv", index=False)
    save_estimator(Planted(tmp_path / "pwned"), blend / "preprocessor.skops")
    write_checksums(blend)
    with pytest.raises(TunerError, match=r"holds types tuner does not trust \(.*Planted\)"):
        predict_file(folder, tmp_path / "rows.csv")

    folder = copy_of(exported, tmp_path / "again")
    blend = folder / "artifacts" / "weighted"
    description = json.loads((blend / "ensemble.json").read_text())
    description["members"][0]["member_class"] = "os:system"
    (blend / "ensemble.json").write_text(json.dumps(description))
    write_checksums(blend)
    with pytest.raises(TunerError, match="member class 'os:system' is not one of tuner's"):
        predict_file(folder, tmp_path / "rows.csv")
    assert not (tmp_path / "pwned").exists()


def test_an_export_of_an_earlier_tuner_with_pickles_is_refused(exported, tmp_path, five_families):
    folder = copy_of(exported, tmp_path)
    blend = folder / "artifacts" / "weighted"
    (blend / CHECKSUMS).unlink()
    (blend / "preprocessor.joblib").write_bytes(pickle.dumps(Planted(tmp_path / "pwned")))
    five_families[1].to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(TunerError, match="has no checksums.json: an earlier tuner wrote it"):
        predict_file(folder, tmp_path / "rows.csv")
    assert not (tmp_path / "pwned").exists()


KILLED_EXPORT = """
import os, signal, sys
from tuner.serve import export
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 after the model is registered, before its folder is in place
export.swap_folder = killed
export.export_ensemble(sys.argv[1], root=sys.argv[2], tracking_uri=sys.argv[3], refit="none")
"""


def test_an_export_killed_before_its_folder_was_in_place_is_cleaned_by_the_next(tmp_path, tracking_uri, five_families, caplog):
    name = "killed-export"  # its own registered model: the session's tracking store is shared with other tests
    make_build(tmp_path, name, five_families[0])
    first = export_ensemble(name, root=tmp_path, tracking_uri=tracking_uri, refit="none")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED_EXPORT, name, str(tmp_path), tracking_uri], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stderr[-3000:]
    staging = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}-export-")]
    assert len(staging) == 1
    versions = registry_versions(tracking_uri, name)
    left_behind = versions[versions.index(first.published.version) + 1:]  # what the killed export registered
    assert left_behind and champion(tracking_uri, name) == left_behind[-1]
    assert MlflowClient(tracking_uri).get_model_version(name, left_behind[-1]).tags[PENDING_TAG] == staging[0]

    with caplog.at_level(logging.WARNING, logger="tuner"):
        again = export_ensemble(name, root=tmp_path, tracking_uri=tracking_uri, refit="none")
    said = f"removed what a stopped export left: 1 staging folder(s) ({staging[0]}) and registry version(s) "
    assert again.cleaned.startswith(said) and said in caplog.text and left_behind[-1] in again.cleaned
    assert sorted(p.name for p in tmp_path.iterdir()) == [".built", name]
    new = again.published.version
    assert registry_versions(tracking_uri, name) == [first.published.version, new] and champion(tracking_uri, name) == new
    assert PENDING_TAG not in MlflowClient(tracking_uri).get_model_version(name, new).tags


class FakeRegistry:
    def __init__(self, pending: dict[str, str]) -> None:
        self.pending, self.dropped, self.settled = pending, [], []

    def pending_versions(self, name):
        return dict(self.pending)

    def drop_unfinished(self, name, version, champion):
        self.dropped.append((version, champion))

    def settle_model(self, name, version):
        self.settled.append(version)


def test_leftovers_of_a_running_export_stay_and_an_earlier_export_left_aside_comes_back(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    final = tmp_path / "churn"
    (tmp_path / f".churn-refit-{dead_pid}-ab12").mkdir()
    (tmp_path / f".churn-export-{os.getpid()}-cd34").mkdir()  # this process: a running export
    (tmp_path / ".churn-old-ef56").mkdir()  # killed between moving the earlier export aside and the rename
    (tmp_path / ".churn-old-ef56" / "manifest.json").write_text(json.dumps({"mlflow": {"version": "4"}}))
    (tmp_path / ".churner-export-1-zz").mkdir()  # another name's
    registry = FakeRegistry({"4": ".churn-export-1-gone", "5": ".churn-export-2-gone",
                             "6": f".churn-export-{os.getpid()}-cd34"})

    said = clear_leftovers(final, registry, "churn", "manifest.json")
    assert said == (f"removed what a stopped export left: 1 staging folder(s) (.churn-refit-{dead_pid}-ab12) "
                    f"and registry version(s) 5 of 'churn' with no model folder; put the earlier export back in {final} "
                    "from .churn-old-ef56")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".churn-export-{os.getpid()}-cd34", ".churner-export-1-zz", "churn"]
    assert registry.settled == ["4"] and registry.dropped == [("5", "4")]
    assert clear_leftovers(tmp_path / "nothing", FakeRegistry({}), "nothing", "manifest.json") is None
