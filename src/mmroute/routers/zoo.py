"""Imports every router family so that each registers itself (see :func:`register_router`)."""

from mmroute.routers import ensemble, neural, nonparametric, regression  # noqa: F401
