"""Torch routers trained with Lightning: ``mlp``, ``mlp_mf``, ``cmr``, ``fusion_mf``.

They are listed in :mod:`mmroute.routers.zoo`. torch and lightning are imported only when a router is
built or fitted, so ``import mmroute.routers.neural`` stays cheap.
"""

from mmroute.routers.neural.base import NeuralRouter, NeuralRouterConfig
from mmroute.routers.neural.routers import (
    CMRConfig,
    CMRRouter,
    FusionMFConfig,
    FusionMFRouter,
    MLPConfig,
    MLPMFConfig,
    MLPMFRouter,
    MLPRouter,
)

__all__ = ["NeuralRouter", "NeuralRouterConfig", "MLPConfig", "MLPRouter", "MLPMFConfig", "MLPMFRouter",
           "CMRConfig", "CMRRouter", "FusionMFConfig", "FusionMFRouter"]
