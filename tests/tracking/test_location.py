"""Tracking location: default SQLite store, env override, fast failure on unusable locations."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from mmroute.tracking import (
    TrackingUnavailableError,
    check_tracking_uri,
    resolve_tracking_uri,
    setup_tracking,
)


def test_default_is_sqlite_in_cwd_with_mlartifacts(tmp_path):
    loc = resolve_tracking_uri(cwd=tmp_path, env={})
    assert loc.is_default
    assert loc.uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert loc.artifact_root == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_env_uri_wins_and_sqlite_gets_artifacts_beside_db(tmp_path):
    uri = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    loc = resolve_tracking_uri(cwd="/nonexistent", env={"MLFLOW_TRACKING_URI": uri})
    assert not loc.is_default and loc.uri == uri
    assert loc.artifact_root == (tmp_path / "sub" / "mlartifacts").resolve().as_uri()
    remote = resolve_tracking_uri(env={"MLFLOW_TRACKING_URI": "http://tracking:5000"})
    assert remote.uri == "http://tracking:5000" and remote.artifact_root is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast_with_clear_message():
    port = _free_port()  # closed again: nothing listens there
    with pytest.raises(TrackingUnavailableError, match=rf"127\.0\.0\.1:{port}.*unreachable"):
        check_tracking_uri(f"http://127.0.0.1:{port}", timeout=2)


def test_silent_server_times_out():
    # Accepts the connection but never answers: the check must give up after its timeout.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    conns = []
    threading.Thread(target=lambda: conns.append(server.accept()), daemon=True).start()
    try:
        with pytest.raises(TrackingUnavailableError, match="unreachable"):
            check_tracking_uri(f"http://127.0.0.1:{port}", timeout=0.5)
    finally:
        server.close()


def test_sqlite_in_missing_directory_is_refused(tmp_path):
    with pytest.raises(TrackingUnavailableError, match="does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'missing' / 'mlflow.db'}")
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # an existing directory is fine


def test_unreachable_database_fails_fast():
    port = _free_port()
    with pytest.raises(TrackingUnavailableError, match="unreachable|driver") as err:
        check_tracking_uri(f"postgresql://u:secret@127.0.0.1:{port}/mlflow", timeout=2)
    assert "secret" not in str(err.value)  # the password never reaches logs


def test_setup_creates_experiment_with_local_artifact_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    import mlflow

    loc, exp_id = setup_tracking("unit")
    exp = mlflow.MlflowClient(loc.uri).get_experiment(exp_id)
    assert exp.name == "unit"
    assert exp.artifact_location == (tmp_path.resolve() / "mlartifacts").as_uri()
    with mlflow.start_run() as run:
        mlflow.log_text("x", "a.txt")
    assert Path(run.info.artifact_uri.replace("file://", "")).is_relative_to(tmp_path.resolve() / "mlartifacts")
    assert (tmp_path / "mlflow.db").is_file()
    assert setup_tracking("unit")[1] == exp_id  # reused, not duplicated


class _FailingAPI(__import__("http.server").server.BaseHTTPRequestHandler):
    """Answers /health like a live MLflow server, but every API call with 503 (a broken backend)."""

    calls: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).calls.append(self.path)
        ok = self.path == "/health"
        body = b"OK" if ok else b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "database down"}'
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_server():
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FailingAPI)
    _FailingAPI.calls = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_server_up_but_failing_fails_in_seconds_before_any_work(failing_server, monkeypatch, capsys):
    import time

    from mmroute.cli import main

    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=r"answered HTTP 503 on /api/2\.0/mlflow/experiments/search"):
        check_tracking_uri(failing_server, timeout=2)
    assert time.monotonic() - started < 10
    monkeypatch.setenv("MLFLOW_TRACKING_URI", failing_server)
    started = time.monotonic()
    assert main(["train", "--router", "linear", "--data", "synthetic:n=40,seed=0"]) == 3
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tracking unavailable" in err[0] and "HTTP 503" in err[0], err
    assert all(path.startswith(("/health", "/api/2.0/mlflow/experiments/search")) for path in _FailingAPI.calls)


def test_two_first_runs_on_a_new_sqlite_store_both_succeed(tmp_path):
    import json
    import os
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    start = time.time() + 6  # both interpreters are past their imports by then
    code = ("import sys, time; from mmroute.cli import main; time.sleep(max(0, float(sys.argv[1]) - time.time())); "
            "sys.exit(main(['prepare', '--data', 'synthetic:n=30,seed=0']))")
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1])["step"] == "prepare"
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
