"""Routers: one interface, one registry, one module per family.

``create_router(name, **cfg)`` builds any registered router; ``list_routers()`` names them.
"""

from mmroute.routers.base import (
    NotFittedError,
    Router,
    RouterConfig,
    create_router,
    list_routers,
    register_router,
    router_class,
)

__all__ = ["NotFittedError", "Router", "RouterConfig", "create_router", "list_routers",
           "register_router", "router_class"]
