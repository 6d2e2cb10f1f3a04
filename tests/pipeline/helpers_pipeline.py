"""Shared bits of the pipeline tests: a tiny data spec and run queries."""

from __future__ import annotations

import json

TINY = "synthetic:n=90,seed=3"
EPOCHS = 3


def last_json(text: str) -> dict:
    """The summary line a pipeline command prints last."""
    return json.loads(text.strip().splitlines()[-1])


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run (recursive)."""
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            out |= artifact_paths(client, run_id, item.path)
        else:
            out.add(item.path)
    return out


def input_contexts(run) -> dict[str, str]:
    """dataset name -> context of a run's logged inputs."""
    return {d.dataset.name: next(t.value for t in d.tags if t.key == "mlflow.data.context")
            for d in run.inputs.dataset_inputs}
