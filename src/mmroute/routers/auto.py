"""``auto``: the router and decision rule chosen by cross-validation on the training rows only.

Why. No single router wins on every table (a global linear model, a local average and a neural
factorisation each lose somewhere), and picking the best one by its test figures is hindsight a
user does not have. ``auto`` makes that choice the way a careful user would, on training rows:

1. every candidate (default: the zoo's deployable routers with their defaults, cheapest first) is
   fitted ``n_folds`` times, each time predicting the fold it did not see: out-of-fold predictions
   of every training row (a candidate that computes them inside one fit of its own, ``ensemble``,
   is fitted once). Candidates are fitted without their own guard (the guard acts once, on
   what ``auto`` chooses). A candidate whose first fold shows it cannot finish within what is left
   of ``time_budget_s`` is dropped (reported, not silent);
2. the options are each candidate alone and, with ``stack``, a convex blend of the candidates that
   read the same input (weights non-negative, summing to one, minimising the squared error of the
   out-of-fold predictions; cross-fitted, so the blend's own out-of-fold score is honest) and, with
   ``greedy_steps`` > 0, Caruana's greedy ensemble of them (bag counts chosen to maximise the guarded
   out-of-fold nAUC; cross-fitted too). Off by default: on nested cross-validation of the MATH-V
   training rows (5 outer folds) it changed the choice in 2 folds, +0.017 nAUC in one, a degenerate
   (one-point) held-out frontier in the other; not enough evidence to make it the default;
3. each option is scored by the nAUC of its out-of-fold predictions, after the guard
   (:mod:`mmroute.routers.guard`) it would get, under each decision rule (:mod:`mmroute.evaluation`);
   the best (option, rule) wins: ``chosen_``, ``rule_``;
4. the chosen members are refitted on all training rows; the Router base then fits the guard
   on the chosen option's out-of-fold predictions (no further fits).

Everything is read from the rows given to ``fit``: test rows are never seen.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mmroute.constraints import InstanceOf, Integral, Interval, Options, Real, SequenceOf
from mmroute.features.types import Features
from mmroute.routers.base import Router, RouterConfig, create_router, list_routers, router_class

__all__ = ["AutoConfig", "AutoRouter", "default_candidates", "COST_ORDER"]

log = logging.getLogger(__name__)


# Typical fit cost, cheapest first (routers not listed go last, in name order).
COST_ORDER = ("kmeans", "knn", "linear", "linear_mf", "kmeans_adaptive", "ensemble", "mlp", "mlp_mf",
              "fusion_mf", "cmr")


def default_candidates() -> tuple[str, ...]:
    """The zoo's deployable routers (not ``auto`` itself), cheapest first."""
    names = [n for n in list_routers() if n != "auto" and router_class(n).deployable
             and getattr(router_class(n), "reads", "features") != "hidden_states"]
    rank = {n: i for i, n in enumerate(COST_ORDER)}
    return tuple(sorted(names, key=lambda n: (rank.get(n, len(rank)), n)))


@dataclasses.dataclass
class AutoConfig(RouterConfig):
    """``candidates``: router names (empty = :func:`default_candidates`); ``n_folds``: folds of the
    cross-validation; ``greedy_steps``: additions of the greedy ensemble option (0: no such option);
    ``time_budget_s``: seconds the cross-validation may take (candidates that would
    overrun it are dropped); ``stack``: also try a convex blend; ``rules``: the decision rules to
    choose among; ``max_epochs``: handed to the candidates that train by epochs (None: theirs);
    ``threads``: native threads (BLAS, OpenMP, torch) for the whole fit (None: the process's
    settings). One by default: on a busy machine multi-threaded BLAS and OpenMP spin-wait and run
    several times slower (:mod:`mmroute._threads`), and the candidates' operations are small."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "candidates": [SequenceOf(InstanceOf(str, "router name"))],
        "n_folds": [Interval(Integral, 2, None, closed="left")],
        "time_budget_s": [Interval(Real, 0, None, closed="neither")],
        "stack": [InstanceOf(bool)],
        "greedy_steps": [Interval(Integral, 0, None, closed="left")],
        "rules": [SequenceOf(Options(("budget", "tradeoff")), min_len=1)],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    candidates: tuple[str, ...] = ()
    n_folds: int = 5
    time_budget_s: float = 540.0
    stack: bool = True
    greedy_steps: int = 0
    rules: tuple[str, ...] = ("budget", "tradeoff")
    max_epochs: int | None = None
    threads: int | None = 1

    def problems(self) -> list[str]:
        out = super().problems()
        valid = list(default_candidates())
        bad = [c for c in self.candidates if c not in valid]
        if bad:
            out.append(f"candidates {bad} are not candidate routers; valid: {valid}")
        return out


def _input_kind(router: Router, features: Features) -> str:
    """What a fitted router's graph reads: "fused" (the fused vector) or "own" (its own layout,
    e.g. [text, image, mask]); only routers of one kind are stacked, so the stack is one graph."""
    sample = features.subset(np.arange(min(len(features), 4)))
    x = router.onnx_input(sample)
    fused = np.ascontiguousarray(sample.fused, dtype=np.float32)
    return "fused" if x.shape == fused.shape and np.array_equal(x, fused) else f"own:{x.shape[1]}"


class AutoRouter(Router):
    """Cross-validated choice (or convex stack) of routers and the decision rule.

    Fitted: ``chosen_`` (the winning option: a router name or ``"stack"``), ``rule_`` (the decision
    rule it scored best under), ``members_`` (fitted routers), ``perf_weights_`` / ``cost_weights_``
    (n_members,), ``cv_scores_`` (option -> rule -> out-of-fold metrics), ``cv_seconds_`` (candidate
    -> seconds of its cross-validation), ``skipped_`` (candidate -> why it was dropped),
    ``cv_seconds_total_``.
    """

    name = "auto"
    config_class = AutoConfig
    deployable = True   # its members are (candidates are deployable routers)
    blendable = False

    def _candidate(self, name: str) -> Router:
        options: dict[str, Any] = {"seed": self.config.seed, "guard": "off"}
        if self.config.max_epochs is not None and "max_epochs" in {
                f.name for f in dataclasses.fields(router_class(name).config_class)}:
            options["max_epochs"] = self.config.max_epochs
        return create_router(name, **options)

    def _fit(self, features, correct, cost, **_):
        from mmroute._threads import native_threads

        names = list(self.config.candidates or default_candidates())
        if self.config.threads is not None and any(
                hasattr(self._candidate(name), "lightning_callbacks") for name in names):
            import torch  # noqa: F401  (imported first, so that its intra-op pool is capped too)
        with native_threads(self.config.threads):
            self._fit_capped(features, correct, cost, names)

    def _twin(self, candidate: Router, features: Features, done: dict[str, Any]) -> str | None:
        """An already cross-validated candidate predicting exactly what ``candidate`` would."""
        twin = candidate.same_predictions_as(features)
        if twin is None:
            return None
        for name in done:
            other = self._candidate(name)
            if type(other) is type(twin) and other.config == twin.config:
                return name
        return None

    def _fit_capped(self, features, correct, cost, names):
        from sklearn.model_selection import KFold

        c = self.config
        n, m = correct.shape
        n_folds = min(c.n_folds, n)
        if n_folds < 2:
            raise ValueError(f"auto needs at least 2 training rows for its folds, got {n}")
        folds = list(KFold(n_splits=n_folds, shuffle=True, random_state=c.seed).split(np.arange(n)))
        start = time.perf_counter()
        oof, kinds, prefitted = self._cross_validate(features, correct, cost, names, folds, start)

        options = self._options(oof, kinds, correct, cost, folds)
        best = self._choose(options, correct, cost)
        self.chosen_, self.rule_ = best
        members, pw, cw, pred = options[self.chosen_]
        self.member_names_ = tuple(members)
        self.perf_weights_, self.cost_weights_ = pw, cw
        self._oof = pred if c.guard == "oof" else None
        self.cv_seconds_total_ = time.perf_counter() - start
        t0 = time.perf_counter()
        self.members_ = [prefitted.get(name) or self._candidate(name).fit(features, correct, cost)
                         for name in members]
        self.refit_seconds_ = time.perf_counter() - t0
        log.info("auto: chose %s under the %s rule (out-of-fold nAUC %.4f; members %s); cross-validation "
                 "%.1fs, refit %.1fs", self.chosen_, self.rule_, self.cv_scores_[self.chosen_][self.rule_]["nAUC"],
                 dict(zip(members, np.round(pw, 3))), self.cv_seconds_total_, self.refit_seconds_)

    def _options(self, oof, kinds, correct, cost, folds):
        """option -> (member names, perf weights, cost weights, out-of-fold (perf, cost)): each
        candidate alone, and with ``stack`` the convex blends (and with ``greedy_steps`` the greedy
        ensembles) of the candidates of one input kind."""
        c = self.config
        options: dict[str, tuple[list[str], np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]] = {
            name: ([name], np.ones(1), np.ones(1), pred) for name, pred in oof.items()}
        if c.stack:
            options.update(self._stacks(oof, kinds, correct, cost, folds))
        if c.greedy_steps:
            options.update(self._greedy(oof, kinds, correct, cost, folds))
        return options

    def _choose(self, options, correct, cost):
        """Scores every option as it would be served (after the guard, fitted on the same out-of-fold
        rows) under every rule: ``cv_scores_`` (``cv_scores_raw_`` without the guard); returns the
        best (option, rule)."""
        from mmroute.routers.guard import fit_guard, oof_scores

        c = self.config
        self.cv_scores_, self.cv_scores_raw_ = {}, {}
        for opt, (_, _, _, pred) in options.items():
            guard = fit_guard(pred[0], pred[1], correct, cost, rules=c.rules, z=c.guard_z)
            self.cv_scores_raw_[opt] = oof_scores(pred[0], pred[1], correct, cost, c.rules)
            self.cv_scores_[opt] = oof_scores(guard.apply(pred[0]), pred[1], correct, cost, c.rules)
        return max(((opt, rule) for opt in options for rule in c.rules),
                   key=lambda k: _score(self.cv_scores_[k[0]][k[1]]))

    def _cross_validate(self, features, correct, cost, names, folds, start):
        """Out-of-fold predictions of every candidate that fits the budget: (name -> (perf, cost),
        name -> input kind, name -> a router already fitted on all rows)."""
        c = self.config
        n, m = correct.shape
        n_folds = len(folds)
        oof: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        kinds: dict[str, str] = {}
        self.cv_seconds_: dict[str, float] = {}
        self.skipped_: dict[str, str] = {}
        prefitted: dict[str, Router] = {}
        for name in names:
            t0 = time.perf_counter()
            if oof and time.perf_counter() - start >= c.time_budget_s:
                self.skipped_[name] = f"the {c.time_budget_s:g}s budget was spent before it started"
                self.cv_seconds_[name] = 0.0
                log.info("auto: %s dropped: %s", name, self.skipped_[name])
                continue
            candidate = self._candidate(name)
            twin = self._twin(candidate, features, oof)
            if twin is not None:
                # Its out-of-fold predictions would be the twin's, bit for bit: not an option of its own.
                self.skipped_[name] = f"predicts exactly what {twin} predicts on these features (cross-validated once)"
                self.cv_seconds_[name] = time.perf_counter() - t0
                log.info("auto: %s not cross-validated: %s", name, self.skipped_[name])
                continue
            try:
                if type(candidate).cross_val_predict is not Router.cross_val_predict:
                    # It computes out-of-fold predictions inside one fit of its own (ensemble).
                    perf, pc, fitted = candidate.cross_val_predict(features, correct, cost, folds)
                    if fitted is not None:
                        prefitted[name] = fitted
                        kinds[name] = _input_kind(fitted, features)
                else:
                    perf, pc = np.zeros((n, m)), np.zeros((n, m))
                    # The first fold may take at most its share of what is left: a torch candidate is
                    # stopped mid-training when it overruns (its epochs are the slow part).
                    left = c.time_budget_s - (time.perf_counter() - start)
                    deadline = t0 + max(left, 0.0) / (n_folds + 0.3) if oof else None
                    for k, (tr, va) in enumerate(folds):
                        member = self._candidate(name)
                        if k == 0 and deadline is not None and hasattr(member, "lightning_callbacks"):
                            member.lightning_callbacks.append(_deadline_callback(deadline, c.time_budget_s))
                        member.fit(features.subset(tr), correct[tr], cost[tr])
                        perf[va], pc[va] = member.predict(features.subset(va))
                        if k == 0:
                            kinds[name] = _input_kind(member, features)
                            per_fold = time.perf_counter() - t0
                            # The remaining folds plus a final refit on all rows (a bit more data).
                            needed = per_fold * (n_folds - 1 + 1.3)
                            left = c.time_budget_s - (time.perf_counter() - start)
                            if needed > left and oof:
                                raise TimeoutError(f"needs ~{needed:.0f}s more, {max(left, 0):.0f}s of the "
                                                   f"{c.time_budget_s:g}s budget left")
            except TimeoutError as exc:
                self.skipped_[name] = str(exc)
                self.cv_seconds_[name] = time.perf_counter() - t0
                log.info("auto: %s dropped: %s", name, exc)
                continue
            except (ValueError, RuntimeError) as exc:  # e.g. a candidate that cannot fit these rows
                self.skipped_[name] = f"{type(exc).__name__}: {exc}"
                self.cv_seconds_[name] = time.perf_counter() - t0
                log.warning("auto: %s failed in cross-validation: %s", name, exc)
                continue
            kinds.setdefault(name, "fused")
            oof[name] = (perf, pc)
            self.cv_seconds_[name] = time.perf_counter() - t0
            log.info("auto: %s cross-validated in %.1fs", name, self.cv_seconds_[name])
        if not oof:
            raise RuntimeError(f"auto: no candidate finished its cross-validation: {self.skipped_}")
        return oof, kinds, prefitted

    def _stacks(self, oof, kinds, correct, cost, folds):
        """Cross-fitted convex blends, one per input kind with >= 2 candidates."""
        from mmroute.routers.ensemble import simplex_least_squares

        def perf_weights(stack_p, blended_cost, correct, cost):
            return _weights(stack_p, correct, simplex_least_squares)

        return self._blends("stack", perf_weights, oof, kinds, correct, cost, folds)

    def _greedy(self, oof, kinds, correct, cost, folds):
        """Cross-fitted greedy ensembles, one per input kind with >= 2 candidates.

        Greedy ensemble selection with replacement (Caruana et al., ICML 2004): start from the best
        candidate, add (again and again, with replacement) the candidate whose addition most raises
        the guarded out-of-fold nAUC (mean over ``rules``) of the equal-weight average of the bag,
        for ``greedy_steps`` steps, and keep the best bag seen. It optimises what the choice is made
        by, and the bag's integer counts are few, coarse weights (less to overfit than a free
        blend). Costs are blended by least squares (as ``_stacks`` does). The weights of the rows of
        each fold are selected on the other folds' rows, so the option's own score is honest."""
        c = self.config

        def perf_weights(stack_p, blended_cost, correct, cost):
            return _greedy_weights(stack_p, blended_cost, correct, cost, steps=c.greedy_steps,
                                   rules=c.rules, z=c.guard_z)

        return self._blends("greedy", perf_weights, oof, kinds, correct, cost, folds)

    def _blends(self, label, perf_weights, oof, kinds, correct, cost, folds):
        """One cross-fitted blend per input kind with >= 2 candidates: costs by least squares, perf by
        ``perf_weights(stack_p, blended_cost, correct, cost)``; the rows of each fold are blended with
        weights fitted on the other folds' rows, so the option's own score is honest."""
        from mmroute.routers.ensemble import simplex_least_squares

        out = {}
        for kind in sorted(set(kinds[nm] for nm in oof)):
            names = [nm for nm in oof if kinds[nm] == kind]
            if len(names) < 2:
                continue
            stack_p = np.stack([oof[nm][0] for nm in names])      # (p, n, M)
            stack_c = np.stack([oof[nm][1] for nm in names])
            blend_p, blend_c = np.zeros(correct.shape), np.zeros(correct.shape)
            for tr, va in folds:
                wc = _weights(stack_c[:, tr], cost[tr], simplex_least_squares)
                wp = perf_weights(stack_p[:, tr], np.tensordot(wc, stack_c[:, tr], axes=1), correct[tr], cost[tr])
                blend_p[va] = np.tensordot(wp, stack_p[:, va], axes=1)
                blend_c[va] = np.tensordot(wc, stack_c[:, va], axes=1)
            wc = _weights(stack_c, cost, simplex_least_squares)
            wp = perf_weights(stack_p, np.tensordot(wc, stack_c, axes=1), correct, cost)
            keep = (wp > 1e-4) | (wc > 1e-4)
            name = label if len(set(kinds.values())) == 1 else f"{label}_{kind}"
            out[name] = ([nm for nm, k in zip(names, keep) if k], _renorm(wp[keep]), _renorm(wc[keep]),
                         (blend_p, blend_c))
        return out

    def _oof_predictions(self, features, correct, cost):
        oof, self._oof = self._oof, None
        return oof

    def _predict(self, features: Features, **_):
        preds = [member.predict(features) for member in self.members_]
        perf = sum(w * p for w, (p, _) in zip(self.perf_weights_, preds))
        pc = sum(w * q for w, (_, q) in zip(self.cost_weights_, preds))
        return perf, pc

    def onnx_input(self, features: Features) -> np.ndarray:
        # Every member reads the same input (auto only stacks routers of one input kind).
        self.check_fitted()
        return self.members_[0].onnx_input(features)

    def write_onnx(self, x_sample: np.ndarray, path: Path, *, opset: int, exporter: str) -> str:
        """The chosen member's graph, or the stacked members' graphs spliced and blended."""
        from mmroute.routers.ensemble import write_blend_onnx

        return write_blend_onnx(self.members_, self.perf_weights_, self.cost_weights_, x_sample, path,
                                opset=opset, exporter=exporter, what=f"auto ({self.chosen_})")

    def fit_report(self) -> dict[str, Any]:
        """What was chosen and why: JSON-safe, for logs and benchmark output."""
        self.check_fitted()
        from mmroute.evaluation import json_safe

        return json_safe({
            "chosen": self.chosen_, "rule": self.rule_,
            "members": dict(zip(self.member_names_, self.perf_weights_)),
            "cost_weights": dict(zip(self.member_names_, self.cost_weights_)),
            "cv_nAUC": {opt: {rule: round(s["nAUC"], 5) for rule, s in by_rule.items()}
                        for opt, by_rule in self.cv_scores_.items()},
            "cv_nAUC_unguarded": {opt: {rule: round(s["nAUC"], 5) for rule, s in by_rule.items()}
                                  for opt, by_rule in self.cv_scores_raw_.items()},
            "cv_seconds": {k: round(v, 2) for k, v in self.cv_seconds_.items()},
            "cv_seconds_total": round(self.cv_seconds_total_, 2), "refit_seconds": round(self.refit_seconds_, 2),
            "skipped": self.skipped_,
            "guard": None if self.guard_ is None else self.guard_.describe(),
            "validation": self.validation_,
        })


def _deadline_callback(deadline: float, budget: float):
    """A Lightning callback raising TimeoutError once ``time.perf_counter()`` passes ``deadline``."""
    from lightning.pytorch.callbacks import Callback

    class _Deadline(Callback):
        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"its first fold overran its share of the {budget:g}s budget")

    return _Deadline()


def _score(metrics: dict[str, float]) -> float:
    v = metrics.get("nAUC", math.nan)
    return v if math.isfinite(v) else -math.inf


def _renorm(w: np.ndarray) -> np.ndarray:
    s = w.sum()
    return w / s if s > 0 else np.full(len(w), 1.0 / len(w))


def _weights(preds: np.ndarray, target: np.ndarray, solver) -> np.ndarray:
    observed = ~np.isnan(target)
    return solver(preds[:, observed].T, target[observed])


def _guarded_nauc(perf: np.ndarray, cost_pred: np.ndarray, correct: np.ndarray, cost: np.ndarray,
                  rules, z: float) -> float:
    """Mean nAUC over ``rules`` of ``perf`` after the guard fitted on these rows (how options are scored)."""
    from mmroute.routers.guard import fit_guard, oof_scores

    guard = fit_guard(perf, cost_pred, correct, cost, rules=rules, z=z)
    scores = [_score(s) for s in oof_scores(guard.apply(perf), cost_pred, correct, cost, rules).values()]
    return float(np.mean(scores))


def _greedy_weights(preds: np.ndarray, cost_pred: np.ndarray, correct: np.ndarray, cost: np.ndarray, *,
                    steps: int, rules, z: float) -> np.ndarray:
    """Caruana's greedy selection with replacement over ``preds`` (p, n, M): the bag counts (as
    weights summing to one) of the best-scoring bag within ``steps`` additions; ties go to the
    earlier (smaller) bag and the earlier candidate."""
    p = preds.shape[0]
    counts = np.zeros(p)
    total = np.zeros(preds.shape[1:])
    best_w, best_score = None, -math.inf
    for step in range(max(int(steps), 1)):
        scores = [_guarded_nauc((total + preds[j]) / (step + 1), cost_pred, correct, cost, rules, z)
                  for j in range(p)]
        j = int(np.argmax(scores))
        counts[j] += 1
        total += preds[j]
        if scores[j] > best_score + 1e-12:
            best_score, best_w = scores[j], counts / counts.sum()
    assert best_w is not None
    return best_w
