"""The built-in routers, listed explicitly (no registration by import side effect).

Adding a router to mmroute itself is one module under :mod:`mmroute.routers` plus one line here;
a router defined anywhere else is added with :func:`mmroute.routers.register_router` (see
``docs/adding-a-router.md``).
"""

from __future__ import annotations

from mmroute.routers.auto import AutoRouter
from mmroute.routers.base import Router
from mmroute.routers.ensemble import EnsembleRouter
from mmroute.routers.neural import CMRRouter, FusionMFRouter, MLPMFRouter, MLPRouter
from mmroute.routers.nonparametric import (
    KMeansAdaptiveRouter,
    KMeansRouter,
    KNNRouter,
    OracleRouter,
    RandomRouter,
)
from mmroute.routers.probe import AttentionProbeRouter, MLPProbeRouter, ReLopeRouter
from mmroute.routers.regression import LinearMFRouter, LinearRouter

__all__ = ["BUILTIN_ROUTERS"]

BUILTIN_ROUTERS: tuple[type[Router], ...] = (
    # evaluation baselines (not deployable)
    RandomRouter,
    OracleRouter,
    # MMR-Bench reference routers
    LinearRouter,
    LinearMFRouter,
    KNNRouter,
    KMeansRouter,
    KMeansAdaptiveRouter,
    MLPRouter,
    MLPMFRouter,
    CMRRouter,
    # mmroute's own
    FusionMFRouter,
    EnsembleRouter,
    AutoRouter,
    # probe routers on a small model's hidden states (reads = "hidden_states")
    MLPProbeRouter,
    AttentionProbeRouter,
    ReLopeRouter,
)
