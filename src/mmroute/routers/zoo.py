"""Imports every router family so that each registers itself (see :func:`register_router`)."""

from mmroute.routers import nonparametric, regression, neural  # noqa: F401
