"""Several promoter processes against one store at once, and the checks that the registry ended
consistent (used on sqlite in tests/registry and on PostgreSQL in tests/server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

_PROMOTER = r"""
import json, sys, time
from mlflow import MlflowClient
from mmroute.registry import PromotionBusy, PromotionRefused, promote
uri, name, version, table, start = sys.argv[1:6]
client = MlflowClient(uri, registry_uri=uri)
time.sleep(max(0.0, float(start) - time.time()))  # all promoters go at the same moment
try:
    result = promote(name, version, to="production", eval_table=table, min_delta=-1.0, client=client)
except (PromotionBusy, PromotionRefused) as exc:
    print(json.dumps({"version": version, "ok": False, "error": f"{type(exc).__name__}: {exc}"}))
else:
    print(json.dumps({"version": version, "ok": True, "previous": result.previous}))
"""


def run_promoters(uri: str, name: str, versions: list[str], eval_table: str | Path, *,
                  delay_s: float = 8.0, timeout: float = 300) -> list[dict]:
    """Promote each of ``versions`` to production from its own process, all starting together."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MLFLOW_TRACKING_URI=uri)
    start = time.time() + delay_s  # leaves time for every interpreter to import mlflow first
    procs = [subprocess.Popen([sys.executable, "-c", _PROMOTER, uri, name, v, str(eval_table), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for v in versions]
    results = []
    for v, proc in zip(versions, procs):
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"promoter of version {v} crashed ({proc.returncode}):\n{err[-3000:]}"
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def check_consistent(client, name: str, results: list[dict]) -> list[str]:
    """The registry after concurrent promotions from no production: returns the promotion order.

    Every successful promotion names as previous the one that happened just before it (one chain
    from None), production is the end of that chain and previous-production the one before; failed
    promoters gave a clear message, and only versions that were really promoted carry the tags.
    """
    from mmroute.registry.lock import lock_name

    done = {r["version"]: r["previous"] for r in results if r["ok"]}
    for r in results:
        if not r["ok"]:
            assert "PromotionBusy" in r["error"] and "in progress" in r["error"], r
    assert done, results
    after = {prev: v for v, prev in done.items()}
    assert len(after) == len(done), f"two promotions claim the same predecessor (lost update): {done}"
    order, cur = [], None
    while cur in after:
        cur = after[cur]
        order.append(cur)
    assert sorted(order) == sorted(done), f"promotions do not form one chain: {done}"
    model = client.get_registered_model(name)
    aliases = {a: str(v) for a, v in model.aliases.items()}
    assert aliases["production"] == order[-1]
    if len(order) > 1:
        assert aliases["previous-production"] == order[-2]
        assert model.tags.get("previous_production_version") == order[-2]
    for mv in client.search_model_versions(f"name = '{name}'"):
        version, tags = str(mv.version), mv.tags
        if version in done:
            assert "promoted_to_production_at" in tags
            assert tags.get("previous_production_version") == done[version], (version, tags, done)
        else:
            assert "promoted_to_production_at" not in tags, f"version {version} tagged but never promoted"
            assert "previous_production_version" not in tags
    assert not client.search_registered_models(f"name = '{lock_name(name)}'"), "lock left behind"
    return order
