"""Scoring payloads against the served pyfunc: a valid routing answer or a clear 4xx; never a
traceback, a 5xx, a hang, or a non-finite number in a 200.

In-process, ``predict`` must return a frame whose numbers are finite and whose models are in the
pool, or raise the ``MlflowException`` the scoring server answers with HTTP 400. A bounded set of
the same payloads then goes to a real ``mlflow models serve`` on loopback, as JSON.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given

from fuzz_strategies import fuzz_settings, is_finite_number, scoring_payloads
from mmroute.features.types import Features

MODELS = ("small", "medium", "large")
WIDTH = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A linear router over WIDTH features, saved as an MLflow model directory."""
    from mmroute.export.pyfunc import save_router_model
    from mmroute.routers import create_router

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, WIDTH)).astype(np.float32)
    correct = (x[:, :3] + rng.normal(scale=0.3, size=(120, 3)) > 0).astype(float)
    cost = np.tile([1.0, 3.0, 9.0], (120, 1)) * np.exp(0.2 * x[:, 3:6])
    router = create_router("linear").fit(Features.from_array(x[:100]), correct[:100], cost[:100])
    path = tmp_path_factory.mktemp("fuzz-model") / "model"
    save_router_model(router, Features.from_array(x[100:]), list(MODELS), path)
    return path


@pytest.fixture(scope="module")
def pyfunc(model_dir):
    import mlflow

    return mlflow.pyfunc.load_model(str(model_dir))


def _check_answer(frame: pd.DataFrame, n_rows: int) -> None:
    assert isinstance(frame, pd.DataFrame) and len(frame) == n_rows
    assert set(frame["model"]) <= set(MODELS)
    for col in frame.columns:
        if col.startswith(("perf_", "cost_")) or col in ("param", "model_index", "expected_cost", "expected_accuracy"):
            values = [v for v in frame[col].tolist() if v is not None]
            if col in ("param", "expected_cost", "expected_accuracy"):  # None / NaN: no such figure
                values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
            assert all(is_finite_number(v) for v in values), (col, values)


def _is_client_error(exc: BaseException) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.get_http_status_code() == 400 and bool(exc.message.strip())


@fuzz_settings(250)
@given(payload=scoring_payloads(WIDTH, MODELS))
def test_fuzzed_payloads_in_process(pyfunc, payload):
    model_input, params = payload
    try:
        out = pyfunc.predict(model_input, params=params or None)
    except Exception as exc:  # noqa: BLE001 - anything but a 400 is the bug this test looks for
        assert _is_client_error(exc), f"{type(exc).__name__}: {exc}"
        event("400")
        return
    event("200")
    n = len(model_input) if isinstance(model_input, pd.DataFrame) else len(next(iter(model_input.values())))
    _check_answer(out, n)


# ---------------------------------------------------------------- a real server on loopback
def _post(url: str, body: str, timeout: float = 30) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body.encode("utf-8", "surrogatepass"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # a hang fails here
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
    from loopback_server import serve

    with serve(str(model_dir), tmp_path_factory.mktemp("fuzz-serve") / "server.log") as running:
        yield running


def _json_body(model_input, params) -> str:
    """The request a client would send: dataframe_split of the rows (NaN/inf as JSON's NaN/Infinity
    tokens, which MLflow's parser accepts), plus params."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else None
    if frame is not None:
        body = {"dataframe_split": {"columns": [str(c) for c in frame.columns],
                                    "data": frame.astype(object).values.tolist()}}
    else:
        body = {"inputs": model_input}
    if params:
        body["params"] = params
    return json.dumps(body, default=str)


@pytest.mark.slow
@fuzz_settings(30)
@given(payload=scoring_payloads(WIDTH, MODELS))
def test_fuzzed_payloads_against_mlflow_models_serve(server, payload):
    base, proc = server
    status, text = _post(f"{base}/invocations", _json_body(*payload))
    event(str(status))
    assert status < 500, (status, text[:500])
    assert proc.poll() is None, "the server died"
    if status == 200:
        body = json.loads(text)  # strict JSON: a bare NaN token would fail here
        rows = body["predictions"]
        assert all(r["model"] in MODELS for r in rows)
        for r in rows:
            for key, value in r.items():
                if key.startswith(("perf_", "cost_")):
                    assert is_finite_number(value), (key, value)
    else:
        assert 400 <= status < 500 and text.strip(), (status, text)


@fuzz_settings(150)
@given(payload=scoring_payloads(WIDTH, MODELS))
def test_fuzzed_raw_query_requests_parse_or_refuse(payload):
    """The served model's request parser as a raw-query model uses it (question / image / context):
    base64 garbage, decompression-bomb headers and wrong types are 400s, never a crash."""
    from mmroute.export.mmroute_runtime.inputs import parse_request

    model_input, _ = payload
    try:
        request = parse_request(model_input, width=WIDTH, accepts_raw=True, max_rows=4)
    except Exception as exc:  # noqa: BLE001
        assert _is_client_error(exc), f"{type(exc).__name__}: {exc}"
        event("400")
        return
    event("raw" if request.raw else "features")
    assert 1 <= request.n <= 4
    if request.raw:
        assert len(request.texts()) == request.n
        assert all(im is None or im.size[0] * im.size[1] <= 36_000_000 for im in (request.images or []))
    else:
        assert request.features.shape == (request.n, WIDTH) and np.isfinite(request.features).all()
