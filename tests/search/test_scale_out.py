"""Several `tuner study run` processes on one study: PostgreSQL or SQLite storage, a real MLflow server,
a worker killed with SIGKILL mid-trial, a worker stopped with SIGTERM. Each test uses its own
PostgreSQL database, dropped afterwards."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import REPO, tiny_study

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
HEARTBEAT = "2"  # seconds; a silent worker is presumed dead after 4 beats (8 s)


def fresh_database():
    """A PostgreSQL database of its own for one test, dropped after it (a generator for fixtures)."""
    import psycopg

    name = f"tuner_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url():
    yield from fresh_database()


def slow_study(folder: Path, name: str, trials: int) -> dict:
    """Random forests on 1,500 rows: a trial fits long enough to be caught RUNNING, and a worker is
    frozen (SIGSTOP) before it is signalled, so a trial that ends between the look and the signal is
    simply looked for again (`freeze_a_worker_mid_trial`)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=1500, n_features=10, n_informative=6, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(10)]).assign(y=y)
    frame.to_csv(folder / "rows.csv", index=False)
    return tiny_study(name, data={"source": "rows.csv", "target": "y"}, families=["random_forest"],
                      sampler={"name": "random", "seed": 3}, budget={"trials": trials})


@pytest.fixture
def start_worker():
    """Start `tuner study run` processes; any still running when the test ends (a failed assertion) is killed."""
    started: list[subprocess.Popen] = []

    def start(study_file: Path, storage: str, tracking: str, *extra: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TUNER_HEARTBEAT_S": HEARTBEAT}
        started.append(subprocess.Popen(
            [sys.executable, "-m", "tuner", "study", "run", str(study_file), "--storage", storage,
             "--tracking-uri", tracking, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=study_file.parent, env=env))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=60)


def finish(workers: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=timeout)
        results.append((worker.returncode, out, err))
    return results


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`tuner server` as a real process on a free port; stopped by its PID (process group) at the end."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            assert time.time() < deadline and process.poll() is None, "tuner server did not come up"
            time.sleep(1)
    yield uri, process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def counted(trials) -> list:
    return [t for t in trials if not t.user_attrs.get("skipped") and t.state != TrialState.FAIL]


def trial_runs(tracking: str, name: str) -> tuple[list, list]:
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tuner.role") == "study"]
    children = [r for r in runs if r.data.tags.get("tuner.role") == "trial"]
    return parents, children


@pytest.mark.slow
def test_three_workers_on_postgres_share_one_study_and_an_exact_budget(tmp_path, write_study, pg_url, mlflow_server,
                                                                       start_worker):
    uri, server = mlflow_server
    path = write_study(tiny_study("shared", families=["linear", "random_forest"], budget={"trials": 7}))
    workers = [start_worker(path, pg_url, uri) for _ in range(3)]  # at once: schema and study creation race
    for rc, out, err in finish(workers):
        assert rc == 0, err
    study = optuna.load_study(study_name="shared", storage=pg_url)
    trials = study.get_trials()
    assert len(counted(trials)) == 7 and {t.state for t in counted(trials)} == {TrialState.COMPLETE}
    assert len({t.number for t in trials}) == len(trials)
    parents, children = trial_runs(uri, "shared")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 7 and all(r.info.status == "FINISHED" for r in children)
    assert sorted(int(r.data.tags["trial"]) for r in children) == sorted(t.number for t in counted(trials))
    # one split: every worker's trials were scored on the split the study sealed
    digest = study.user_attrs["tuner.split"]["digest"]
    assert parents[0].data.params["split_digest"] == digest
    assert {r.data.tags["split_digest"] for r in children} == {digest}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    for run in children:
        trial = next(t for t in trials if t.number == int(run.data.tags["trial"]))
        assert run.data.tags["worker"] == trial.user_attrs["worker"]
        assert run.data.tags["worker"] == f"{run.data.tags['host']}:{run.data.tags['pid']}"
        assert run.data.tags["device"] == "cpu" and "gpu" in run.data.tags
    assert server.poll() is None


@functools.lru_cache(maxsize=None)
def reader(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per URL for the polling loops below: a new one per poll
    left a PostgreSQL connection open every 0.1 s until the server refused clients."""
    return optuna.storages.RDBStorage(url)


def wait_for_running_trial(storage: str, name: str, tracking: str, timeout: float = 180) -> optuna.trial.FrozenTrial:
    """A trial in its fit: RUNNING in Optuna, its MLflow run already holding its params."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = optuna.load_study(study_name=name, storage=reader(storage)).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        for trial in running:
            if "worker" not in trial.user_attrs or "params" not in trial.user_attrs:
                continue
            _, children = trial_runs(tracking, name)
            if any(r.data.tags["trial"] == str(trial.number) and r.data.params for r in children):
                return trial
        time.sleep(0.1)
    raise AssertionError("no trial started")


def freeze_a_worker_mid_trial(storage: str, name: str, tracking: str, workers: list[subprocess.Popen],
                              timeout: float = 180) -> tuple[optuna.trial.FrozenTrial, subprocess.Popen]:
    """A worker stopped (SIGSTOP) while its trial is still RUNNING: a short trial may end between
    being seen and the signal, so the state is read again once the worker can no longer move on."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        trial = wait_for_running_trial(storage, name, tracking)
        worker = next(w for w in workers if w.pid == int(trial.user_attrs["worker"].rsplit(":", 1)[1]))
        os.kill(worker.pid, signal.SIGSTOP)
        now = optuna.load_study(study_name=name, storage=reader(storage)).get_trials(states=(TrialState.RUNNING,))
        if any(t.number == trial.number for t in now):
            return trial, worker
        os.kill(worker.pid, signal.SIGCONT)
    raise AssertionError("no worker was caught mid-trial")


def kill_one_worker_mid_trial(tmp_path, write_study, start_worker, storage: str, tracking: str, n_workers: int,
                              trials: int):
    name = f"kill{n_workers}"
    path = write_study(slow_study(tmp_path, name, trials))
    workers = [start_worker(path, storage, tracking) for _ in range(n_workers)]
    victim_trial, victim = freeze_a_worker_mid_trial(storage, name, tracking, workers)
    os.kill(victim.pid, signal.SIGKILL)
    survivors = [w for w in workers if w is not victim]
    for rc, out, err in finish(survivors):
        assert rc == 0, err
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL

    trials_after = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert len({t.number for t in trials_after}) == len(trials_after)
    killed = next(t for t in trials_after if t.number == victim_trial.number)
    assert killed.state == TrialState.FAIL and "error" not in killed.user_attrs
    [rerun] = [t for t in trials_after if t.system_attrs.get("failed_trial") == killed.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == killed.params
    complete = [t for t in trials_after if t.state == TrialState.COMPLETE]
    assert len(counted(trials_after)) == trials and len(complete) == trials

    parents, children = trial_runs(tracking, name)
    assert len(parents) == 1 and all(r.info.status != "RUNNING" for r in parents + children)
    by_trial = {int(r.data.tags["trial"]): r for r in children}
    assert len(children) == trials + 1 and set(by_trial) == {t.number for t in complete} | {killed.number}
    assert by_trial[killed.number].info.status == "KILLED"
    assert by_trial[rerun.number].info.status == "FINISHED"
    assert by_trial[rerun.number].data.params == by_trial[killed.number].data.params


@pytest.mark.slow
def test_worker_killed_mid_trial_on_postgres_is_rerun_with_same_params(tmp_path, write_study, start_worker, pg_url,
                                                                       tracking_uri):
    kill_one_worker_mid_trial(tmp_path, write_study, start_worker, pg_url, tracking_uri, n_workers=3, trials=5)


@pytest.mark.slow
def test_worker_killed_mid_trial_on_sqlite_is_rerun_with_same_params(tmp_path, write_study, start_worker, tracking_uri):
    kill_one_worker_mid_trial(tmp_path, write_study, start_worker, f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri,
                              n_workers=2, trials=4)


@pytest.mark.slow
def test_sigterm_marks_the_trial_closes_its_run_and_says_how_to_resume(tmp_path, write_study, start_worker,
                                                                       tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    path = write_study(slow_study(tmp_path, "stopped", 3))
    worker = start_worker(path, storage, tracking_uri)
    running, _ = freeze_a_worker_mid_trial(storage, "stopped", tracking_uri, [worker])
    worker.send_signal(signal.SIGTERM)  # handled the moment the worker runs again
    worker.send_signal(signal.SIGCONT)
    rc, out, err = finish([worker])[0]
    assert rc == 130
    assert "interrupted:" in err and f"resume with: tuner study run {path}" in err
    trials = optuna.load_study(study_name="stopped", storage=storage).get_trials()
    stopped = next(t for t in trials if t.number == running.number)
    assert stopped.state == TrialState.FAIL and "interrupted" in stopped.user_attrs
    [queued] = [t for t in trials if t.state == TrialState.WAITING and t.user_attrs.get("requeued_from") is not None]
    assert queued.system_attrs["fixed_params"] == stopped.params
    parents, children = trial_runs(tracking_uri, "stopped")
    assert parents[0].info.status == "KILLED" and all(r.info.status != "RUNNING" for r in children)

    resumed = start_worker(path, storage, tracking_uri)
    rc, out, err = finish([resumed])[0]
    assert rc == 0, err
    trials = optuna.load_study(study_name="stopped", storage=storage).get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3
    assert any(t.params == stopped.params and t.state == TrialState.COMPLETE for t in trials)


def test_sqlite_on_a_network_disk_is_refused(tmp_path):
    from tuner.study.storage import NETWORK_FILESYSTEMS, filesystem_type

    mounts = f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n"
    assert filesystem_type(tmp_path / "studies", mounts) in NETWORK_FILESYSTEMS
    assert filesystem_type(Path("/usr"), mounts) == "ext4"


def test_journal_storage_with_heartbeats_is_refused(monkeypatch, tmp_path):
    from tuner.core.errors import StorageError
    from tuner.study.storage import open_storage

    monkeypatch.setenv("TUNER_HEARTBEAT_S", "2")
    with pytest.raises(StorageError, match="journal storage cannot keep"):
        open_storage(f"journal:///{tmp_path / 'journal.log'}")


def allowed_hosts_of(command: list[str]) -> list[str]:
    return command[command.index("--allowed-hosts") + 1].split(",")


def test_server_accepts_this_machines_names_the_bound_address_and_the_users_hosts(monkeypatch, tmp_path):
    import socket

    from tuner.tracking import server_command

    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-box")
    monkeypatch.setattr(socket, "getfqdn", lambda: "gpu-box.lab.example")
    command = server_command(tmp_path, "0.0.0.0", 5000, 2, "mlflow.example.com, *.corp")
    hosts = allowed_hosts_of(command)
    assert {"gpu-box", "gpu-box:5000", "gpu-box.lab.example:5000", "mlflow.example.com", "*.corp"} <= set(hosts)
    assert {"localhost:*", "127.0.0.1:*", "10.*", "192.168.*", "172.16.*"} <= set(hosts)  # MLflow's own defaults
    assert "172.32.*" not in hosts and len(hosts) == len(set(hosts))
    bound = allowed_hosts_of(server_command(tmp_path, "10.1.2.3", 5001, 2))
    assert "10.1.2.3:5001" in bound and "gpu-box:5001" in bound and "mlflow.example.com" not in bound


def test_tuner_server_passes_the_allowed_hosts_to_mlflow(monkeypatch, tmp_path):
    import socket

    from typer.testing import CliRunner

    import tuner.cli.app
    import tuner.cli.ui

    started = []
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-box")
    monkeypatch.setattr(tuner.cli.ui, "run_until_stopped", lambda command, env: started.append((command, env)) or 0)
    result = CliRunner().invoke(tuner.cli.app.app, [
        "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}", "--artifacts-destination",
        str(tmp_path / "artifacts"), "--host", "0.0.0.0", "--allowed-hosts", "proxy.example.com"])
    assert result.exit_code == 0, result.output
    [(command, env)] = started
    assert {"gpu-box:5000", "proxy.example.com", "localhost:*"} <= set(allowed_hosts_of(command))
    assert env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{tmp_path / 'm.db'}" and "--backend-store-uri" not in command


def test_only_the_last_worker_to_finish_closes_the_parent_run(tmp_path, tracking_uri):
    from tuner.tracking import Tracker
    from tuner.search.workers import parent_run_status, worker_label

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="last")
    mine = study.ask()
    mine.set_user_attr("worker", worker_label())
    study.tell(mine, 1.0)
    theirs = study.ask()
    theirs.set_user_attr("worker", "other-host:4242")
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id(f"last-{uuid.uuid4().hex[:8]}")
    parent = tracker.open_study_run(experiment_id, uuid.uuid4().hex, "last", {}, {}, {})
    client = MlflowClient(tracking_uri)

    for status in ("FINISHED", "KILLED"):  # done, or stopped by SIGTERM: the other worker still runs a trial
        assert parent_run_status(study, status) is None
    tracker.finish_study(parent, {"trials_complete": 1}, {}, status=parent_run_status(study, "FINISHED"))
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.metrics["trials_complete"] == 1

    study.tell(theirs, 2.0)  # the other worker finishes last
    interrupted = study.ask()  # a trial of this worker's own still RUNNING does not hold the run open
    interrupted.set_user_attr("worker", worker_label())
    tracker.finish_study(parent, {"trials_complete": 2}, {}, status=parent_run_status(study, "FINISHED"))
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["trials_complete"] == 2


def seeded_config(seed: int | None = 5):
    from tuner.core.config import StudyConfig

    return StudyConfig.model_validate(tiny_study("seeds", sampler={"name": "random", "seed": seed}))


def test_a_seeded_process_alone_replays_its_seed_and_a_sharing_one_takes_its_own(monkeypatch):
    import tuner.search.workers as workers_module
    from tuner.search.workers import sampler_seed

    config = seeded_config()
    assert sampler_seed(config, 3, worker=0) == sampler_seed(config, 3, worker=0) == 8  # alone: seed + trials so far
    assert sampler_seed(config, 3, worker=1) == 8  # the first `--jobs` slot
    seeds, unseeded = set(), set()
    for label in ("host-a:100", "host-a:101", "host-b:100"):
        monkeypatch.setattr(workers_module, "worker_label", lambda label=label: label)
        seeds |= {sampler_seed(config, 3, worker=0, shared=True), sampler_seed(config, 3, worker=2)}
        unseeded.add(sampler_seed(seeded_config(None), 3, worker=1))
    assert len(seeds) == 3 and 8 not in seeds  # each sharing process (host:pid) has its own seed
    assert len(unseeded) == 3  # without a seed every process differs, `--jobs` slots on two machines too


def test_another_workers_trial_is_seen_from_its_start_and_queued_ones_are_no_ones(monkeypatch):
    import tuner.search.workers as workers_module
    from tuner.search.workers import other_worker_at_work

    monkeypatch.setattr(workers_module, "worker_label", lambda: "me:1")
    study = optuna.create_study()
    earlier = study.ask()
    earlier.set_user_attr("worker", "gone:7")  # a finished run of an earlier process
    study.tell(earlier, 1.0)
    study.enqueue_trial({"x": 1.0})
    first = len(study.trials)
    assert not other_worker_at_work(study.get_trials(), first)
    mine = study.ask()
    mine.set_user_attr("worker", "me:1")
    assert not other_worker_at_work(study.get_trials(), first, current=mine.number)
    theirs = study.ask()  # started a moment ago; its worker attribute is not written yet
    assert other_worker_at_work(study.get_trials(), first, current=mine.number)
    theirs.set_user_attr("worker", "other:9")
    study.tell(theirs, 2.0)
    assert other_worker_at_work(study.get_trials(), first, current=mine.number)


def test_two_seeded_workers_started_together_propose_different_params(monkeypatch):
    """Both see an empty study and take the same seed; the second to start a trial sees the first's and reseeds."""
    import tuner.search.workers as workers_module
    from tuner.search.samplers import make_sampler
    from tuner.search.workers import ReseedOnJoin, sampler_seed

    config = seeded_config()
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="together")
    now = {"label": ""}
    monkeypatch.setattr(workers_module, "worker_label", lambda: now["label"])
    workers = {}
    for label in ("host-a:1", "host-b:1"):
        study = optuna.load_study(study_name="together", storage=storage)
        study.sampler = make_sampler(config.sampler, sampler_seed(config, 0, worker=0))
        workers[label] = study, ReseedOnJoin(lambda trial, trials: trial.suggest_float("x", 0, 1), config, 0, 0)
    proposed = {}
    for label, (study, objective) in workers.items():
        now["label"] = label
        trial = study.ask()
        trial.set_user_attr("worker", label)  # what BudgetGuard writes first
        proposed[label] = objective(trial)
    assert proposed["host-a:1"] != proposed["host-b:1"]
    assert not workers["host-a:1"][1].shared and workers["host-b:1"][1].shared


def open_parent_in_a_race(storage: str, tracking: str, experiment: str, barrier, answers) -> None:
    """One worker: its first look finds no parent run (all started at once), then it creates and claims one."""
    from tuner.study.storage import claim_study_attr, open_storage
    from tuner.tracking import Tracker

    tracker = Tracker(tracking)
    study = optuna.load_study(study_name="race", storage=open_storage(storage))
    experiment_id = tracker.experiment_id(experiment)
    real_find, looks = tracker.find_study_run, []
    tracker.find_study_run = lambda *a: real_find(*a) if looks.append(1) or len(looks) > 1 else None
    barrier.wait(timeout=120)
    try:
        answers.put(tracker.open_study_run(experiment_id, "uid-race", "race", {}, {"p": 1}, {},
                                           claim=lambda run_id: claim_study_attr(study, "tuner.parent_run", run_id)))
    except Exception as exc:
        answers.put(repr(exc))


@pytest.mark.parametrize("storage_kind", ["postgresql", "journal"])
def test_workers_starting_together_keep_one_parent_run(tmp_path, tracking_uri, pg_url, storage_kind):
    """Four workers on two cores each create a parent run at the same moment; the storage's first
    record wins, every worker keeps it and the others' runs are deleted."""
    import multiprocessing

    storage = pg_url if storage_kind == "postgresql" else f"journal:///{tmp_path / 'journal.log'}"
    from tuner.study.storage import open_storage

    optuna.create_study(study_name="race", storage=open_storage(storage))
    experiment = f"race-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("fork")
    barrier, answers = context.Barrier(4), context.Queue()
    workers = [context.Process(target=open_parent_in_a_race, args=(storage, tracking_uri, experiment, barrier, answers))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    kept = {answers.get(timeout=180) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    active = client.search_runs([experiment_id])
    assert len(kept) == 1 and [r.info.run_id for r in active] == list(kept)
    assert active[0].data.params == {"p": "1"}
