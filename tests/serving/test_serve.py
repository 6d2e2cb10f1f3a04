"""``mlflow models serve`` on loopback answers routing requests and rejects malformed ones."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

MODELS = ("cheap", "mid", "strong")  # as registered by the production_model fixture
WIDTH = 6

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url, payload=None, timeout=30):
    """(status, body text) of a GET (payload None) or a JSON POST."""
    if payload is not None and not isinstance(payload, str):
        payload = json.dumps(payload)
    data = None if payload is None else payload.encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def server(production_model, tmp_path_factory):
    uri, name, _, _ = production_model
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli)] if mlflow_cli.exists() else [sys.executable, "-m", "mlflow"]
    cmd += ["models", "serve", "-m", f"models:/{name}@production", "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    log_file = open(log_path, "w")
    # As in an activated virtual environment: the server execs `uvicorn` from PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n"
                            f"{log_path.read_text()[-3000:]}")
            try:
                if _request(f"{base}/ping", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /ping in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log_file.close()


def test_good_requests_get_routing_decisions(server, production_model):
    base, _ = server
    _, _, router, held_out = production_model
    x = held_out.fused[:4].astype(np.float64)
    perf, cost = router.predict(held_out.subset(np.arange(4)))

    status, body = _request(f"{base}/invocations", {
        "dataframe_records": [{"features": row.tolist(), "id": f"q{i}"} for i, row in enumerate(x)]})
    assert status == 200, body
    rows = json.loads(body)["predictions"]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    assert [r["model"] for r in rows] == [MODELS[j] for j in perf.argmax(1)]
    np.testing.assert_allclose([[r[f"perf_{m}"] for m in MODELS] for r in rows], perf, atol=1e-4)

    budget = 2.0
    status, body = _request(f"{base}/invocations", {
        "dataframe_split": {"columns": ["features"], "data": [[row.tolist()] for row in x]},
        "params": {"budget": budget}})
    assert status == 200, body
    for r, p, c in zip(json.loads(body)["predictions"], perf, cost):
        fits = c <= budget
        expected = int(np.where(fits, p, -np.inf).argmax()) if fits.any() else int(c.argmin())
        assert r["model_index"] == expected and r["within_budget"] == bool(fits.any())


@pytest.mark.parametrize("payload, message", [
    ({"dataframe_records": [{"features": [0.5] * (WIDTH + 2)}]},
     f"has {WIDTH + 2} values, the router expects {WIDTH}"),
    ('{"dataframe_records": [{"features": [NaN, 0, 0, 0, 0, 0]}]}', "NaN or infinite"),
    ({"dataframe_records": [{"features": [None, 0, 0, 0, 0, 0]}]}, "NaN or infinite"),
    ({"dataframe_records": [{"inputs": [0.0] * WIDTH}]}, "features"),
    ({"dataframe_records": [{"features": [0.0] * WIDTH}], "params": {"budget": 1.0, "tradeoff": 0.5}},
     "give at most one of"),
    ("{not json", ""),
])
def test_malformed_requests_get_4xx_and_the_server_stays_up(server, payload, message):
    base, proc = server
    status, body = _request(f"{base}/invocations", payload)
    assert 400 <= status < 500, (status, body)
    assert message in body
    assert proc.poll() is None and _request(f"{base}/ping")[0] == 200
