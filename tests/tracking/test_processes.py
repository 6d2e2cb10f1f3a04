"""Honest stops: SIGINT/SIGTERM end every open run KILLED; runs of a SIGKILLed process are closed
by `mmroute runs cleanup`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

# A sweep whose mlp child trains (no early stopping) until it is stopped; knn finishes first.
_LONG_RUN = ["run", "--data", "synthetic:n=60,seed=1", "--routers", "knn,mlp", "--register-model", "stopped-router",
             "--set", "mlp.max_epochs=1000000 mlp.val_fraction=0 mlp.hidden=8"]


def _start(uri, tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mmroute", *_LONG_RUN], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _runs_of(client, pid):
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, f"tags.`mmroute.pid` = '{pid}'") if exps else []


def _wait_for_training(client, proc, timeout=600):
    """Until the mlp child run of ``proc`` is RUNNING and has logged an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        for run in _runs_of(client, proc.pid):
            if run.data.tags.get("mmroute.router") == "mlp" and run.info.status == "RUNNING" and run.data.metrics:
                return
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the mlp child never started training")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_ends_every_open_run_killed_and_exits_non_zero(tmp_path, signum):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    proc = _start(uri, tmp_path)
    _wait_for_training(client, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last == f"mmroute run: stopped by {signal.Signals(signum).name}; 2 open run(s) marked KILLED", err[-3000:]
    runs = {r.info.run_name: r for r in _runs_of(client, proc.pid)}
    assert {name: r.info.status for name, r in runs.items()} == {"main": "KILLED", "mlp": "KILLED", "knn": "FINISHED"}
    assert runs["main"].data.tags["mmroute.stopped_by"] == signal.Signals(signum).name
    assert runs["main"].data.tags["mmroute.host"] and "mmroute.process_start" in runs["main"].data.tags
    assert not client.search_registered_models("name = 'stopped-router'")  # nothing half-registered


@pytest.mark.slow
def test_cleanup_closes_the_runs_of_a_killed_process(tmp_path, capsys):
    from mmroute.cli import main

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    proc = _start(uri, tmp_path)
    _wait_for_training(client, proc)
    proc.kill()  # SIGKILL: no chance to close anything
    proc.communicate(timeout=60)
    left = {r.info.run_id for r in _runs_of(client, proc.pid) if r.info.status == "RUNNING"}
    assert len(left) == 2  # the main run and the mlp child

    assert main(["runs", "cleanup", "--dry-run"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {o["run_id"] for o in listed["orphaned"]} == left and listed["closed"] == []
    assert all(o["reason"] == f"process {proc.pid} is not running" for o in listed["orphaned"])
    assert {r.info.status for r in _runs_of(client, proc.pid) if r.info.run_id in left} == {"RUNNING"}

    assert main(["runs", "cleanup"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(done["closed"]) == left
    assert {r.info.status for r in _runs_of(client, proc.pid) if r.info.run_id in left} == {"KILLED"}
    assert main(["runs", "cleanup"]) == 0  # nothing left to close
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["orphaned"] == []


def test_runs_of_live_processes_and_other_hosts_are_left_alone(capsys):
    import mlflow

    from mmroute.cli import main
    from mmroute.tracking import start_run

    with start_run("alive") as alive:  # this very process: alive
        pass
    client = MlflowClient()
    client.set_terminated(alive.info.run_id, "RUNNING")
    with start_run("elsewhere") as other:
        mlflow.set_tag("mmroute.host", "another-machine")
    client.set_terminated(other.info.run_id, "RUNNING")
    assert main(["runs", "cleanup"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["orphaned"] == [] and out["other_hosts"][0]["run_id"] == other.info.run_id
    assert main(["runs", "cleanup", "--gone-host", "another-machine"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["closed"] == [other.info.run_id]
    assert client.get_run(other.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_a_stop_inside_a_store_write_still_ends_the_runs_killed(monkeypatch, capsys):
    """The signal lands in the middle of a store write: what the interrupted frames hold (on sqlite,
    a statement or connection in a write transaction) keeps the write lock until those frames are let
    go. Here the frames hold such a connection, as in a CI failure where the stop cut a metric write
    short. Unwinding must not write before letting go: MLflow's ``with start_run()`` exit would wait
    on the lock and turn the stop into 'database is locked' (exit 1, runs left open)."""
    import sqlite3

    import mlflow
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from mmroute.cli import main
    from mmroute.tracking.processes import Stopped, opened_runs

    fired: list[str] = []

    def stop_mid_transaction(conn, cursor, statement, parameters, context, executemany):
        run = mlflow.active_run()
        if (not fired and run is not None and run.info.run_name == "mlp"
                and statement.lstrip().upper().startswith("INSERT INTO METRICS")):
            fired.append(run.info.run_id)
            database = conn.engine.url.database
            writer = sqlite3.connect(database, isolation_level=None, timeout=0)  # noqa: F841 - held by this frame
            writer.execute("BEGIN IMMEDIATE")  # the write lock an interrupted write would hold
            raise Stopped(signal.SIGTERM, time.time())

    before = set(opened_runs())
    event.listen(Engine, "before_cursor_execute", stop_mid_transaction)
    try:
        code = main(_LONG_RUN)
    finally:
        event.remove(Engine, "before_cursor_execute", stop_mid_transaction)
    err = capsys.readouterr().err
    assert fired, "the mlp child never logged an epoch"
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert err.strip().splitlines()[-1] == "mmroute run: stopped by SIGTERM; 2 open run(s) marked KILLED"
    client = MlflowClient()
    runs = {client.get_run(r).info.run_name: client.get_run(r).info for r in set(opened_runs()) - before}
    assert {name: info.status for name, info in runs.items()} == {"main": "KILLED", "mlp": "KILLED", "knn": "FINISHED"}
    assert mlflow.active_run() is None
    assert not client.search_registered_models("name = 'stopped-router'")
