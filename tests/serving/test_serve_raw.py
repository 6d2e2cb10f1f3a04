"""A real ``mlflow models serve`` on loopback answers raw text and text + image queries, and turns
every malformed request into a 4xx naming the problem (never a 200 with NaN in it)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from loopback_server import request, serve
from raw_models import MODELS, make_table, raw_records

pytestmark = pytest.mark.slow

MAX_ROWS = 16
MAX_PIXELS = 100_000


def _strict_json(body: str):
    def refuse(token):
        raise AssertionError(f"non-finite number {token} in a response body")

    return json.loads(body, parse_constant=refuse)


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    from mmroute.export.pyfunc import save_router_model
    from mmroute.features import build_feature_pipeline
    from mmroute.routers import create_router

    tmp = tmp_path_factory.mktemp("raw-serve")
    table = make_table(tmp / "images")
    train, test = table.subset(np.arange(24)), table.subset(np.arange(24, table.n_instances))
    pipe = build_feature_pipeline("offline:dim=16", fusion="adaptive", use_cache=False, progress=False).fit(train)
    train_f, test_f = pipe.transform(train), pipe.transform(test)
    router = create_router("linear_mf", rank=3).fit(train_f, train.correct, train.cost)
    save_router_model(router, test_f, list(MODELS), tmp / "model", pipeline=pipe, check_table=test,
                      model_config={"max_rows": MAX_ROWS, "max_image_pixels": MAX_PIXELS})
    return tmp / "model", router, test, test_f


@pytest.fixture(scope="module")
def server(raw_model, tmp_path_factory):
    with serve(str(raw_model[0]), tmp_path_factory.mktemp("serve-log") / "server.log") as running:
        yield running


def test_raw_text_and_image_queries_are_answered(server, raw_model):
    base, _ = server
    _, router, test, test_f = raw_model
    records = raw_records(test)
    assert any("image" in r for r in records) and any("image" not in r for r in records)
    status, body = request(f"{base}/invocations", {"dataframe_records": records})
    assert status == 200, body
    rows = _strict_json(body)["predictions"]
    perf_ref, _ = router.predict(test_f)
    assert [r["id"] for r in rows] == list(test.ids)
    np.testing.assert_allclose([[r[f"perf_{m}"] for m in MODELS] for r in rows], perf_ref, atol=1e-4)

    # The logged input example, as a client would send it (text + image, text only).
    example = json.loads((raw_model[0] / "serving_input_example.json").read_text())
    status, body = request(f"{base}/invocations", example)
    assert status == 200, body
    assert [r["model"] in MODELS for r in _strict_json(body)["predictions"]] == [True, True]


def _png(size) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 20, 20)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


BAD = [
    ({"dataframe_records": [{"context": "no question here"}]}, "missing the column 'question'"),
    ({"dataframe_records": [{"question": "fine"}, {"question": None}]}, "row 1: 'question' is missing"),
    ({"dataframe_records": [{"question": ["a", "list"]}]}, "row 0: 'question' must be a string"),
    ({"dataframe_records": [{"question": 7}]}, "row 0: 'question' must be a string"),
    ({"dataframe_records": [{"question": "q", "image": "%%% not base64"}]}, "row 0: 'image' is not valid base64"),
    ({"dataframe_records": [{"question": "q", "image": base64.b64encode(b"GIF89a but not really").decode()}]},
     "not a PNG or JPEG"),
    ({"dataframe_records": [{"question": "q", "image": _png((400, 300))}]},
     f"400x300 = 120000 pixels, above the limit of {MAX_PIXELS}"),
    ({"dataframe_records": [{"question": "q", "qestion": "typo"}]}, "unknown input columns ['qestion']"),
    ({"dataframe_records": [{"question": "q"}] * (MAX_ROWS + 1)},
     f"{MAX_ROWS + 1} rows, above the limit of {MAX_ROWS} rows per request"),
    ({"dataframe_records": [{"question": "q", "features": [0.0] * 4}]}, "both 'features' and raw query columns"),
    ({"dataframe_records": [{"features": [3.5e38] * 4}]}, "'features' has 4 values"),
    ({"dataframe_records": []}, "no rows"),
]


@pytest.mark.parametrize("payload, message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_requests_get_a_4xx_naming_the_problem(server, payload, message):
    base, proc = server
    status, body = request(f"{base}/invocations", payload)
    assert 400 <= status < 500, (status, body[:500])
    assert message in body, body[:500]
    assert proc.poll() is None and request(f"{base}/ping")[0] == 200


def test_float32_overflow_in_features_is_a_4xx(server, raw_model):
    from mmroute.export import router_input

    base, _ = server
    _, router, _, test_f = raw_model
    x = router_input(router, test_f)[:2].astype(np.float64)
    status, body = request(f"{base}/invocations", {"dataframe_records": [{"features": r.tolist()} for r in x]})
    assert status == 200 and _strict_json(body)["predictions"]
    x[0, 0] = 3.4e38 * 1.001
    status, body = request(f"{base}/invocations", {"dataframe_records": [{"features": r.tolist()} for r in x]})
    assert 400 <= status < 500 and "beyond float32's range" in body, body[:500]
