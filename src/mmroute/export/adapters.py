"""Export adapters per router family, reading each router's fitted attributes.

Torch routers need no entry here: any router with a torch ``network_`` and ``export_input`` is
exported by :data:`mmroute.export.core.TORCH_ADAPTER`. This module registers the others.
"""

from __future__ import annotations

import logging

from mmroute.export.core import register_adapter

log = logging.getLogger(__name__)

register_adapter("oracle", unsupported="it reads the actual outcomes at prediction time (an upper bound "
                 "for evaluation, not a deployable router)")
register_adapter("random", unsupported="its scores are fresh random draws, not a function of the input "
                 "(a baseline for evaluation, not a deployable router)")
