"""Stages as aliases: ``staging``, ``production`` and ``previous-production``, with a gate.

MLflow 3 deprecates stage transitions; an alias names one version of a registered model and
``models:/<name>@production`` resolves it. Promotion to staging is unconditional. Promotion to
production re-scores the candidate and the current production version on the same evaluation
table, each through its own served model (``mlflow.pyfunc.load_model``) on the table's raw rows,
so versions with different encoders compete fairly; versions with different model pools are
refused. It goes ahead only if the candidate beats production by at least ``min_delta``; the old
production version keeps the ``previous-production`` alias (and a tag on the new one) so that
:func:`rollback` can restore it. Every change goes through a small undo log: a promotion that
fails midway puts aliases and tags back as they were.

Promotions and rollbacks of one registered model are serialised across processes and machines by
:class:`~mmroute.registry.lock.RegistryLock`: the current aliases are read, the gate run and the
aliases moved while holding it, so concurrent promoters each see the outcome of the one before
(no lost update, no version tagged with a promotion that did not stick).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmroute.registry.lock import PromotionBusy, RegistryLock
from mmroute.registry.versions import DEFAULT_METRIC, get_client, register_best
from mmroute.tracking.processes import release_if_stopped

__all__ = ["STAGING", "PRODUCTION", "PREVIOUS_PRODUCTION", "STAGES", "PromotionRefused", "PromotionBusy",
           "PromotionResult", "promote", "rollback", "register_and_stage"]

log = logging.getLogger(__name__)

STAGING = "staging"
PRODUCTION = "production"
PREVIOUS_PRODUCTION = "previous-production"
STAGES = (STAGING, PRODUCTION)
PREV_TAG = "previous_production_version"


class PromotionRefused(RuntimeError):
    """The gate kept the candidate out of production (nothing was changed)."""


@dataclass
class PromotionResult:
    """What a promotion or rollback did. ``gate`` holds the scores when the gate ran."""

    model_name: str
    version: str
    stage: str
    previous: str | None = None
    gate: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "version": self.version, "stage": self.stage,
                "previous": self.previous, "gate": self.gate}


class _Changes:
    """Applies alias and tag changes, recording how to undo each one (undo runs newest first)."""

    def __init__(self, client: Any, name: str) -> None:
        self.client, self.name = client, name
        model = client.get_registered_model(name)
        self.aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
        self.model_tags = dict(model.tags or {})
        self.undo: list[tuple[str, Callable[[], None]]] = []

    def set_alias(self, alias: str, version: str) -> None:
        before = self.aliases.get(alias)
        self.undo.append((f"alias {alias}", self._alias_restorer(alias, before)))
        self.client.set_registered_model_alias(self.name, alias, str(version))
        self.aliases[alias] = str(version)

    def delete_alias(self, alias: str) -> None:
        before = self.aliases.get(alias)
        if before is None:
            return
        self.undo.append((f"alias {alias}", self._alias_restorer(alias, before)))
        self.client.delete_registered_model_alias(self.name, alias)
        del self.aliases[alias]

    def _alias_restorer(self, alias: str, before: str | None) -> Callable[[], None]:
        def restore() -> None:
            aliases = self.client.get_registered_model(self.name).aliases or {}
            current = {a: str(v) for a, v in aliases.items()}
            if before is None and alias in current:
                self.client.delete_registered_model_alias(self.name, alias)
            elif before is not None and current.get(alias) != before:
                self.client.set_registered_model_alias(self.name, alias, before)
        return restore

    def set_version_tag(self, version: str, key: str, value: str) -> None:
        before = self.client.get_model_version(self.name, str(version)).tags.get(key)

        def restore() -> None:
            if before is None:
                self.client.delete_model_version_tag(self.name, str(version), key)
            else:
                self.client.set_model_version_tag(self.name, str(version), key, before)
        self.undo.append((f"tag {key} of version {version}", restore))
        self.client.set_model_version_tag(self.name, str(version), key, value)

    def set_model_tag(self, key: str, value: str) -> None:
        before = self.model_tags.get(key)

        def restore() -> None:
            if before is None:
                self.client.delete_registered_model_tag(self.name, key)
            else:
                self.client.set_registered_model_tag(self.name, key, before)
        self.undo.append((f"model tag {key}", restore))
        self.client.set_registered_model_tag(self.name, key, value)
        self.model_tags[key] = value

    def rollback(self) -> None:
        failures = []
        for what, restore in reversed(self.undo):
            try:
                restore()
            except Exception as exc:  # noqa: BLE001 - keep restoring the rest, report all
                failures.append(f"{what}: {exc}")
        self.undo.clear()
        if failures:
            log.error("could not restore %s: %s", self.name, "; ".join(failures))
            raise RuntimeError(f"registered model {self.name!r} may be left half-changed; could not "
                               f"restore: {'; '.join(failures)}")


def _apply(client: Any, name: str, body: Callable[[_Changes], PromotionResult],
           lock: RegistryLock | None = None) -> PromotionResult:
    if lock is not None:
        lock.verify()  # a holder that outlived its lease must not write
    changes = _Changes(client, name)
    try:
        return body(changes)
    except BaseException as exc:
        release_if_stopped(exc)  # a stop may have cut a store write short: let go of it before undoing
        log.warning("change to %s failed midway; restoring aliases and tags", name)
        changes.rollback()
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _resolve_version(client: Any, name: str, version: str | int | None, to: str) -> str:
    if version is not None:
        client.get_model_version(name, str(version))  # raises if it does not exist
        return str(version)
    if to == PRODUCTION:
        aliases = client.get_registered_model(name).aliases or {}
        if STAGING not in aliases:
            raise ValueError(f"no version given and {name!r} has no {STAGING!r} alias to promote")
        return str(aliases[STAGING])
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise ValueError(f"registered model {name!r} has no versions")
    return str(max(int(v.version) for v in versions))


def resolve_version(client: Any, name: str, version: str | int | None, to: str) -> str:
    """The version a promotion to ``to`` means: ``version`` (checked to exist), else the staging one
    for production, else the newest."""
    return _resolve_version(client, name, version, to)


def _score_on_table(name: str, candidate: str, current: str | None, eval_table: Any, metric: str,
                    uris: dict[str, str]) -> tuple[dict[str, float], int]:
    """Each version scored by its own served model on the evaluation table's rows."""
    import mlflow

    from mmroute.registry.evaltable import EvalTable, ScoringRefused, load_eval_table, model_pool, score_model

    table = eval_table if isinstance(eval_table, EvalTable) else load_eval_table(eval_table)
    models = {role: mlflow.pyfunc.load_model(uri) for role, uri in uris.items()}
    if current is not None:
        pools = {role: set(model_pool(m)) for role, m in models.items()}
        if pools["candidate"] != pools["production"]:
            raise PromotionRefused(
                f"{name} version {candidate} routes between a different model pool than production "
                f"(version {current}): only in the candidate {sorted(pools['candidate'] - pools['production'])}, "
                f"only in production {sorted(pools['production'] - pools['candidate'])}; the gate only compares "
                "versions that route between the same models (register a new pool under its own model name)")
    scores = {}
    for role, model in models.items():
        try:
            scores[role] = score_model(uris[role], table, metric, model=model)
        except ScoringRefused as exc:
            raise PromotionRefused(f"{name} version {candidate} not promoted: the {role} version cannot be "
                                   f"scored on this evaluation table: {exc}") from exc
    return scores, len(table)


def _gate(name: str, candidate: str, current: str | None, eval_table: Any, metric: str,
          min_delta: float) -> dict[str, Any]:
    """Score candidate and production, each with its own served model, on the same table rows
    (or, for a ``replay/...`` metric, replayed on the same traffic log on Spark)."""
    from mmroute.tracking.compare import lower_is_better

    uris = {"candidate": f"models:/{name}/{candidate}"}
    if current is not None:
        uris["production"] = f"models:/{name}/{current}"
    if metric.startswith("replay/"):
        # A traffic log too large for one process: both versions are replayed on it on Spark.
        from mmroute.registry.replay import replay_score

        scores = {role: replay_score(uri, eval_table, metric) for role, uri in uris.items()}
        n_rows = None
    else:
        scores, n_rows = _score_on_table(name, candidate, current, eval_table, metric, uris)
    cand = scores["candidate"]
    gate = {"metric": metric, "min_delta": min_delta, "candidate": cand, "n_rows": n_rows}
    if current is None:
        gate.update(production=None, delta=None, passed=True)
        return gate
    prod = scores["production"]
    lower = lower_is_better(metric)
    # An undefined score (NaN: e.g. nAUC of a one-point frontier) is the worst possible: a NaN
    # candidate never passes, a NaN production is beaten by any defined candidate score.
    if math.isnan(cand):
        delta = -math.inf
    elif math.isnan(prod):
        delta = math.inf
    else:
        delta = (prod - cand) if lower else (cand - prod)  # > 0 means the candidate is better
    gate.update(production=prod, delta=delta, lower_is_better=lower,
                passed=bool(not math.isnan(delta) and delta >= min_delta))
    return gate


def promote(model_name: str, version: str | int | None = None, *, to: str = STAGING,
            eval_table: Any = None, metric: str = DEFAULT_METRIC, min_delta: float = 0.0,
            client: Any = None, tracking_uri: str | None = None) -> PromotionResult:
    """Point alias ``to`` at ``version``.

    ``to="staging"``: unconditional (``version`` default: the newest). ``to="production"``
    (``version`` default: the one in staging): gated. The candidate and the current production
    version are scored on ``eval_table`` (an :class:`EvalTable`, a path or an artifact URI; for a
    ``replay/...`` metric a traffic log replayed on Spark, a Parquet path or a
    :class:`~mmroute.registry.replay.ReplayLog`) with
    ``metric`` (``<rule>/<name>``, lower-is-better for QNC and costs); the candidate is promoted
    only if it beats production by at least ``min_delta``, otherwise :class:`PromotionRefused` is
    raised and nothing changes. With no production version yet, the candidate is promoted; an
    undefined (NaN) score counts as the worst.

    Raises
    ------
    PromotionRefused, ValueError (bad stage / version / missing eval table), and whatever the
    registry raises (after restoring aliases and tags).
    """
    if to not in STAGES:
        raise ValueError(f"unknown stage {to!r}; expected one of {list(STAGES)}")
    client = get_client(client, tracking_uri)
    client.get_registered_model(model_name)  # an unknown model fails before any lock is taken
    with RegistryLock(client, model_name) as lock:
        return _promote_locked(client, lock, model_name, version, to=to, eval_table=eval_table,
                               metric=metric, min_delta=min_delta)


def _promote_locked(client: Any, lock: RegistryLock, model_name: str, version: str | int | None, *,
                    to: str, eval_table: Any, metric: str, min_delta: float) -> PromotionResult:
    version = _resolve_version(client, model_name, version, to)

    if to == STAGING:
        def to_staging(ch: _Changes) -> PromotionResult:
            previous = ch.aliases.get(STAGING)
            ch.set_alias(STAGING, version)
            ch.set_version_tag(version, "promoted_to_staging_at", _now())
            return PromotionResult(model_name, version, STAGING, previous)
        result = _apply(client, model_name, to_staging, lock)
        log.info("%s version %s is now %s", model_name, version, STAGING)
        return result

    if eval_table is None:
        raise ValueError("promotion to production is gated: pass eval_table= (an evaluation table .npz)")
    current = (client.get_registered_model(model_name).aliases or {}).get(PRODUCTION)
    current = None if current is None else str(current)
    if current == version:
        raise PromotionRefused(f"{model_name} version {version} is already in {PRODUCTION}")
    gate = _gate(model_name, version, current, eval_table, metric, min_delta)
    if not gate["passed"]:
        raise PromotionRefused(
            f"{model_name} version {version} not promoted: {metric} = {gate['candidate']:.4f} vs "
            f"production (version {current}) {gate['production']:.4f}; improvement {gate['delta']:.4f} "
            f"< min_delta {min_delta:g}")

    def to_production(ch: _Changes) -> PromotionResult:
        if current is not None:
            ch.set_alias(PREVIOUS_PRODUCTION, current)
            ch.set_version_tag(version, PREV_TAG, current)
            ch.set_model_tag(PREV_TAG, current)
        ch.set_alias(PRODUCTION, version)
        ch.set_version_tag(version, "promoted_to_production_at", _now())
        ch.set_version_tag(version, "gate", _gate_text(gate))
        return PromotionResult(model_name, version, PRODUCTION, current, gate)
    result = _apply(client, model_name, to_production, lock)
    log.info("%s version %s is now %s (was %s)", model_name, version, PRODUCTION, current)
    return result


def _gate_text(gate: dict[str, Any]) -> str:
    def fmt(v: float | None) -> str:
        return "none" if v is None else f"{v:.6g}"

    return (f"{gate['metric']}: candidate {fmt(gate['candidate'])}, production {fmt(gate['production'])}, "
            f"delta {fmt(gate['delta'])}, min_delta {gate['min_delta']:g}, rows {gate['n_rows']}")


def rollback(model_name: str, *, client: Any = None, tracking_uri: str | None = None) -> PromotionResult:
    """Restore the version recorded as ``previous-production`` to ``production``.

    The version rolled back from is tagged ``rolled_back_at``; ``previous-production`` then points
    to the restored version's own predecessor when one was recorded, so rollbacks can be chained.
    """
    client = get_client(client, tracking_uri)
    client.get_registered_model(model_name)
    with RegistryLock(client, model_name) as lock:
        return _rollback_locked(client, lock, model_name)


def _rollback_locked(client: Any, lock: RegistryLock, model_name: str) -> PromotionResult:
    aliases = {a: str(v) for a, v in (client.get_registered_model(model_name).aliases or {}).items()}
    if PREVIOUS_PRODUCTION not in aliases:
        raise ValueError(f"{model_name!r} has no {PREVIOUS_PRODUCTION!r} version to roll back to")
    restored, current = aliases[PREVIOUS_PRODUCTION], aliases.get(PRODUCTION)
    earlier = client.get_model_version(model_name, restored).tags.get(PREV_TAG)

    def body(ch: _Changes) -> PromotionResult:
        ch.set_alias(PRODUCTION, restored)
        if earlier and earlier != restored:
            ch.set_alias(PREVIOUS_PRODUCTION, earlier)
            ch.set_model_tag(PREV_TAG, earlier)
        else:
            ch.delete_alias(PREVIOUS_PRODUCTION)
            ch.set_model_tag(PREV_TAG, "")
        if current is not None:
            ch.set_version_tag(current, "rolled_back_at", _now())
        return PromotionResult(model_name, restored, PRODUCTION, current)
    result = _apply(client, model_name, body, lock)
    log.info("%s rolled back: production %s -> %s", model_name, current, restored)
    return result


def register_and_stage(run_id: str, model_name: str, *, metric: str = DEFAULT_METRIC, client: Any = None,
                       tracking_uri: str | None = None) -> PromotionResult:
    """Register the best router of sweep ``run_id`` and point ``staging`` at it (how ``main`` ends)."""
    client = get_client(client, tracking_uri)
    version = register_best(run_id, model_name, metric=metric, client=client)
    try:
        return promote(model_name, version.version, to=STAGING, client=client)
    except BaseException as exc:  # a failure or a stop (SIGTERM) before staging: leave no half-registered version
        release_if_stopped(exc)
        log.warning("staging %s version %s failed; deleting that version", model_name, version.version)
        client.delete_model_version(model_name, version.version)
        raise
