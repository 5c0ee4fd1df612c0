"""Every bad input to `tuner study run`, as a real process: one line on stderr naming the problem,
exit status 2, and the Optuna storage and MLflow store exactly as they were (no new study, no run).

A study `base` already exists in the stores (sealed on rows.csv), so refusals of a changed data
file or a different definition are checked against a real sealed study.

Each case is a process of its own, with its own exit status, file descriptors 1 and 2 and
environment, but forked from one that has already imported what `python -m tuner study run`
imports (`forked_cli`): the imports are most of a start's 3 s. Cases that need an import to fail
(`hiding`) and the first-run cases start a fresh `python -m tuner`, and the forking process's own
start must write nothing on stderr, so start-up noise is still caught."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import psutil
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import REPO, run_cli, tiny_study

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def rows(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["u", "v"], n)})
    return frame.assign(y=(frame.a + rng.normal(scale=0.5, size=n) > 0).astype(int))


def base_spec(**overrides) -> dict:
    spec = tiny_study("base", data={"source": "rows.csv", "target": "y"}, families=["linear"], budget={"trials": 1})
    return {**spec, **overrides}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A folder with the `base` study already run once: its storage, its MLflow store, its data."""
    from tuner.pipeline.study_run import run_study

    folder = tmp_path_factory.mktemp("stores")
    rows().to_csv(folder / "rows.csv", index=False)
    (folder / "base.yaml").write_text(yaml.safe_dump(base_spec()))
    storage, tracking = f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}"
    run_study(folder / "base.yaml", storage, tracking)
    return folder, storage, tracking


def snapshot(storage: str, tracking: str) -> tuple:
    """Every study with its attributes and each trial's state, params, value and attributes; every
    experiment with each run (deleted ones too): its status, end time, params, metrics and tags."""
    studies = {}
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = [(t.number, t.state.name, t.params, t.value, t.user_attrs, t.system_attrs) for t in study.trials]
        studies[name] = json.dumps([study.user_attrs, trials], sort_keys=True, default=str)
    client = MlflowClient(tracking)
    runs = {}
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        found = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
        runs[experiment.name] = (len(found), json.dumps(sorted(
            (r.info.run_id, r.info.status, r.info.end_time, r.info.lifecycle_stage, r.data.params, r.data.metrics,
             r.data.tags) for r in found), sort_keys=True, default=str))
    return studies, runs


def write_bad(folder: Path, make_data, spec: dict | None) -> Path:
    """A case folder: the data file the case needs and a study file (the stores stay in the module folder)."""
    if make_data is not None:
        make_data(folder)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec if spec is not None else base_spec(name="fresh")))
    return path


def csv(frame_maker):
    return lambda folder: frame_maker().to_csv(folder / "rows.csv", index=False)


def npz(**arrays):
    return lambda folder: np.savez(folder / "arrays.npz", **arrays)


def changed_rows(folder: Path) -> None:
    frame = rows()
    frame.loc[0, "a"] += 1.0
    frame.to_csv(folder / "rows.csv", index=False)


NPZ_SPEC = tiny_study("fresh", data={"source": "arrays.npz"}, families=["linear"], budget={"trials": 1})
CASES = {
    # storage URLs
    "unreachable storage host": (csv(rows), None, ["--storage", f"{PG.replace('5432', '1')}/x"],
                                 "port 1 failed: Connection refused"),
    "wrong storage scheme": (csv(rows), None, ["--storage", "mongodb://127.0.0.1/studies"],
                             "storage URL scheme 'mongodb' is not supported"),
    "storage role that does not exist": (csv(rows), None, ["--storage", "postgresql+psycopg://nobody_tuner:secret@127.0.0.1:5432/postgres"],
                                         'role "nobody_tuner" does not exist'),
    "storage database that does not exist": (csv(rows), None, ["--storage", f"{PG}/no_such_tuner_db"],
                                             'database "no_such_tuner_db" does not exist'),
    "journal storage with heartbeats": (csv(rows), None, ["--storage", "journal:///{folder}/journal.log", "--heartbeat", "2"],
                                        "the journal storage cannot keep"),
    "unreachable MLflow server": (csv(rows), None, ["--tracking-uri", "http://127.0.0.1:1"],
                                  "MLflow tracking server http://127.0.0.1:1 does not answer"),
    # the study already in the storage
    "same name, different study file": (csv(rows), base_spec(families=["random_forest"]), [],
                                        "study 'base' already exists with a different definition"),
    "data changed since sealing": (changed_rows, base_spec(), [], "the data changed since this study sealed its split"),
    # data
    "target column missing": (csv(rows), base_spec(name="fresh", data={"source": "rows.csv", "target": "label"}), [],
                              "target column 'label' not found"),
    "one-class target": (csv(lambda: rows().assign(y=1)), None, [], "the target has a single value"),
    "all-NaN column": (csv(lambda: rows().assign(empty=np.nan)), None, [], "column 'empty' is empty"),
    "infinities": (csv(lambda: rows().assign(a=[np.inf] + [0.5] * 119)), None, [], "column 'a' holds infinite values"),
    "mixed types": (csv(lambda: rows().assign(b=["x"] + ["1.5"] * 119)), None, [], "column 'b' mixes numbers and text"),
    "empty file": (lambda folder: (folder / "rows.csv").write_text(""), None, [], "is empty: it has no header and no rows"),
    "not a CSV file": (lambda folder: (folder / "rows.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"),
                       None, [], "rows.csv is not a readable CSV file"),
    "NPZ without X": (npz(y=np.zeros(20)), NPZ_SPEC, [], "NPZ needs arrays 'X' and 'y'; missing X (has y)"),
    "NPZ without y": (npz(X=np.zeros((20, 3))), NPZ_SPEC, [], "NPZ needs arrays 'X' and 'y'; missing y"),
    "NPZ lengths differ": (npz(X=np.zeros((20, 3)), y=np.zeros(7)), NPZ_SPEC, [], "X has 20 rows but y has 7"),
    # study file and options
    "unknown study-file key": (csv(rows), {**base_spec(name="fresh"), "famlies": ["linear"]}, [], "famlies: unknown key"),
    "negative budget in the file": (csv(rows), base_spec(name="fresh", budget={"trials": -2}), [],
                                    "budget.trials: Input should be greater than 0"),
    "negative budget on the command line": (csv(rows), None, ["--trials", "-2"], "Invalid value for '--trials'"),
    "huge budget on the command line": (csv(rows), None, ["--trials", "1000000"],
                                        "--trials 1000000 is out of range: a study holds 1 to 100,000 trials"),
    "unknown family": (csv(rows), base_spec(name="fresh", families=["linear", "svm"]), [], "unknown family 'svm'"),
    "family not installed": (csv(rows), base_spec(name="fresh", families=["linear", "xgboost"]), [],
                             "family 'xgboost' needs the xgboost package: pip install xgboost"),
    "custom builder that cannot be imported": (csv(rows), base_spec(name="fresh", families={"custom": {
        "builder": "no_such_module:build"}}), [], "custom builder 'no_such_module:build': cannot import 'no_such_module'"),
}
HIDDEN_MODULES = {"family not installed": ["xgboost"]}  # importable here, made unimportable for that case

FORK_SERVER = r"""
import atexit, json, os, signal, sys, traceback

import tuner.cli.app, tuner.pipeline.study_run, tuner.search.workers  # what `tuner study run` imports

main_path = os.path.join(os.path.dirname(tuner.__file__), "__main__.py")
for line in sys.stdin:
    case = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the child: `python -m tuner ARGS` in case["cwd"], its output in two files
        signal.alarm(case["timeout"])
        os.chdir(case["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdin = open(os.devnull)
        for fd, path in ((1, case["stdout"]), (2, case["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = [main_path, *case["args"]]
        code = 0
        try:
            tuner.cli.app.main()
        except SystemExit as exc:  # as the interpreter reads it
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.fixture(scope="module")
def forked_cli(tmp_path_factory):
    """`run_cli` for this module's cases: each a forked child of one process that imported tuner once."""
    folder = tmp_path_factory.mktemp("forked")
    with open(folder / "server.err", "w") as server_err:
        server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=server_err, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def run(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
        out, err = folder / "stdout", folder / "stderr"
        server.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd), "stdout": str(out), "stderr": str(err),
                                       "timeout": timeout}) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
        assert answer, f"the forking process ended: {(folder / 'server.err').read_text()[-2000:]}"
        returncode = int(answer)
        done = subprocess.CompletedProcess(args, returncode, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return done

    yield run
    server.stdin.close()
    server.wait(timeout=60)
    assert server.returncode == 0 and (folder / "server.err").read_text() == "", "importing tuner wrote on stderr"


def hiding(folder: Path, modules: list[str]) -> dict[str, str]:
    """An environment whose Python cannot import `modules` (sys.modules[name] = None, as if not installed)."""
    if not modules:
        return {}
    (folder / "hidden").mkdir()
    (folder / "hidden" / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in modules))
    return {"PYTHONPATH": str(folder / "hidden")}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_the_stores_unchanged(case, stores, tmp_path, forked_cli):
    folder, storage, tracking = stores
    make_data, spec, options, expected = CASES[case]
    path = write_bad(tmp_path, make_data, spec)
    options = [o.format(folder=tmp_path) for o in options]
    args = ["study", "run", str(path), "--storage", storage, "--tracking-uri", tracking]
    for flag in ("--storage", "--tracking-uri"):
        if flag in options:
            index = args.index(flag)
            del args[index:index + 2]
    before = snapshot(storage, tracking)
    if case in HIDDEN_MODULES:
        run = run_cli(*args, *options, cwd=tmp_path, env=hiding(tmp_path, HIDDEN_MODULES[case]))
    else:
        run = forked_cli(*args, *options, cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run.stderr
    assert expected in lines[0]
    assert "secret" not in run.stderr
    assert snapshot(storage, tracking) == before
    assert not (tmp_path / "journal.log").exists() or (tmp_path / "journal.log").stat().st_size == 0


@pytest.mark.parametrize("case", ["one-class target", "family not installed"])
def test_a_first_run_refused_in_a_fresh_folder_creates_no_store(case, tmp_path):
    """No `studies/optuna.db`, no `mlruns/mlflow.db`, nothing but the user's own files."""
    make_data, spec, _, expected = CASES[case]
    write_bad(tmp_path, make_data, spec)
    env = {"TUNER_STORAGE": "", "TUNER_TRACKING_URI": "", **hiding(tmp_path, HIDDEN_MODULES.get(case, []))}
    written = set(tmp_path.iterdir())
    run = run_cli("study", "run", "study.yaml", cwd=tmp_path, env=env)  # the default stores, in this folder
    assert run.returncode == 2 and expected in run.stderr, run.stderr
    assert set(tmp_path.iterdir()) == written
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlruns").exists()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# MLflow's HTTP retries, which tuner leaves to the user (it only lowers MLflow's default): without
# them each call to the dead server fails at once rather than after a few seconds of back-off
NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


@pytest.mark.slow
def test_mlflow_server_going_away_mid_study_degrades_tracking_and_loses_no_trial(tmp_path, write_study):
    """The server is killed while trials run: the study finishes, says tracking is degraded, keeps all trials."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tuner", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    study_run = None
    try:
        deadline = time.time() + 120
        while not _answers(uri):
            assert time.time() < deadline and server.poll() is None, "tuner server did not come up"
            time.sleep(1)
        storage = f"sqlite:///{tmp_path / 'optuna.db'}"
        path = write_study(tiny_study("outage", families=["random_forest"], budget={"trials": 6},
                                      sampler={"name": "random", "seed": 1}))
        study_run = subprocess.Popen([sys.executable, "-m", "tuner", "study", "run", str(path), "--storage", storage,
                                      "--tracking-uri", uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(REPO), **NO_RETRIES})
        while not _trials_done(storage, "outage", 2):
            assert study_run.poll() is None, study_run.communicate()
            time.sleep(0.2)
        # the server and its MLflow child (in a process group of its own, so `tuner server` can stop it)
        for process in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]:
            process.kill()
        server.wait(timeout=30)
        server_gone = datetime.now()  # Optuna stamps trials with naive local time
        out, err = study_run.communicate(timeout=600)
    finally:
        if server.poll() is None:
            for process in [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]:
                process.kill()
        if study_run is not None and study_run.poll() is None:
            study_run.kill()
            study_run.communicate(timeout=60)
    assert study_run.returncode == 0, err
    assert "MLflow tracking is degraded" in err and "Optuna kept every trial" in err
    trials = optuna.load_study(study_name="outage", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6 and [t.number for t in trials] == list(range(6))
    assert any(t.datetime_complete > server_gone for t in trials), "no trial ran after the server was killed"
    client = MlflowClient(f"sqlite:///{tmp_path / 'server.db'}")  # what the dead server had recorded
    [experiment] = [e for e in client.search_experiments() if e.name == "outage"]
    tracked = [r for r in client.search_runs([experiment.experiment_id])
               if r.data.tags.get("tuner.role") == "trial" and r.info.status == "FINISHED"]
    assert 2 <= len(tracked) < len(trials)  # Optuna kept the trials MLflow could not record


def _answers(uri: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _trials_done(storage: str, name: str, n: int) -> bool:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return False
    return sum(t.state.is_finished() for t in study.trials) >= n


@pytest.fixture
def password_postgres():
    """A throwaway PostgreSQL cluster that checks passwords (the machine's own server trusts every
    local login, so a wrong password could not fail there): user `tuner`, password `right`."""
    import glob
    import shutil
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    assert found, "PostgreSQL's server binaries (initdb, pg_ctl) are needed: apt-get install postgresql"
    bin_dir = found[-1]
    folder = Path(tempfile.mkdtemp(prefix="tuner-pgpass-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    (folder / "pw").write_text("right\n")
    if as_postgres:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    port = free_port()
    data = folder / "data"
    subprocess.run([*as_postgres, f"{bin_dir}/initdb", "-D", str(data), "-A", "scram-sha-256", "-U", "tuner",
                    "--pwfile", str(folder / "pw")], check=True, capture_output=True)
    subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_wrong_password_is_one_line_naming_the_storage_and_writes_nothing(password_postgres, write_study, tmp_path):
    import psycopg

    path = write_study(tiny_study("guarded", families=["linear"], budget={"trials": 1}))
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    url = f"postgresql+psycopg://tuner:wrong@127.0.0.1:{password_postgres}/postgres"
    result = run_cli("study", "run", str(path), "--storage", url, "--tracking-uri", tracking)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and 'password authentication failed for user "tuner"' in result.stderr
    assert "wrong" not in result.stderr and "tuner:***@" in result.stderr  # the password is never echoed
    assert not (tmp_path / "mlruns").exists()
    with psycopg.connect(f"postgresql://tuner:right@127.0.0.1:{password_postgres}/postgres") as right:
        tables = right.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
    assert tables == (0,)  # no Optuna schema was created either
