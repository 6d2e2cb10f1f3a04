"""A served tiny probe model (``mlflow models serve`` on loopback): raw text in, deferral out."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from loopback_server import request as _request
from loopback_server import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "probes"))
from probe_tiny import WORDS, fit_probe_router, tiny_bert, tiny_table  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(model directory, fitted router, table, features): an attention probe on a saved tiny BERT."""
    from transformers import BertTokenizer

    from mmroute.export.probe_pyfunc import save_probe_router_model

    root = tmp_path_factory.mktemp("probe-serve")
    model_dir = root / "backbone"
    tiny_bert(n_layers=3).save_pretrained(model_dir)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(str(vocab)).save_pretrained(model_dir)
    table = tiny_table(80)
    router, feats, _ = fit_probe_router(model_dir, table, root / "cache", head="attention_probe")
    save_probe_router_model(router, table.models, root / "model", backbone=str(model_dir))
    return root / "model", router, table, feats


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    with serve(str(served[0]), tmp_path_factory.mktemp("serve-probe") / "server.log") as running:
        yield running


def test_raw_text_requests_get_deferral_decisions(server, served):
    base, _ = server
    _, router, table, feats = served
    texts = [str(q) for q in table.questions[:6]]
    expected = router.predict_correctness(feats.subset(np.arange(6)))
    status, body = _request(f"{base}/invocations", {
        "dataframe_records": [{"question": t, "id": f"q{i}"} for i, t in enumerate(texts)]})
    assert status == 200, body
    rows = json.loads(body)["predictions"]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)]
    np.testing.assert_allclose([r["p_correct"] for r in rows], expected, atol=1e-4)
    for r in rows:  # default: defer when the large model is predicted better
        assert r["defer"] == (r["p_correct"] < router.large_accuracy_)
        assert r["model"] == ("large" if r["defer"] else "small")
    for params, threshold in (({"defer_share": 0.3}, router.threshold(defer_share=0.3)),
                              ({"threshold": 0.5}, 0.5)):
        status, body = _request(f"{base}/invocations", {"dataframe_records": [{"question": t} for t in texts],
                                                        "params": params})
        assert status == 200, body
        rows = json.loads(body)["predictions"]
        assert all(r["threshold"] == pytest.approx(threshold) for r in rows)
        assert [r["defer"] for r in rows] == [bool(p < threshold) for p in expected]


@pytest.mark.parametrize("payload, message", [
    ({"dataframe_records": [{"text": "the cat"}]}, "question"),
    ({"dataframe_records": [{"question": ""}]}, "non-empty string"),
    ({"dataframe_records": [{"question": "the cat", "image": "aGVsbG8="}]}, "reads text only"),
    ({"dataframe_records": [{"question": "the cat"}], "params": {"defer_share": 1.5}}, "expected a share in [0, 1]"),
    ({"dataframe_records": [{"question": "the cat"}], "params": {"defer_share": 0.2, "threshold": 0.4}},
     "give at most one of"),
    ({"dataframe_records": [{"question": "the cat"}], "params": {"target_accuracy": 2.0}}, "not reachable"),
    ("{not json", ""),
])
def test_bad_payloads_get_4xx_and_the_server_stays_up(server, payload, message):
    base, proc = server
    status, body = _request(f"{base}/invocations", payload)
    assert 400 <= status < 500, (status, body)
    assert message in body
    assert proc.poll() is None and _request(f"{base}/ping")[0] == 200


def test_referenced_backbone_missing_is_one_clear_error(served, tmp_path):
    import mlflow

    from mmroute.export.probe_pyfunc import save_probe_router_model

    model_dir, router, table, _ = served
    backbone = tmp_path / "moved-backbone"
    shutil.copytree(router.config.backbone, backbone)
    save_probe_router_model(router, table.models, tmp_path / "model", backbone=str(backbone),
                            serve_backbone="reference")
    assert not (tmp_path / "model" / "artifacts" / "backbone").exists()
    mlflow.pyfunc.load_model(str(tmp_path / "model"))  # loads while the weights are there
    shutil.rmtree(backbone)
    with pytest.raises(Exception, match="probe backbone weights are missing"):
        mlflow.pyfunc.load_model(str(tmp_path / "model"))
