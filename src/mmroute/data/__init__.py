"""Outcome tables: the in-memory type, loaders, validation, splits, modality modes, synthetic default."""

from mmroute.data.images import DEFAULT_MAX_IMAGE_PIXELS, ImageRoot
from mmroute.data.loaders import load_table
from mmroute.data.splits import MODES, Mode, apply_mode, split_column, split_in, split_out
from mmroute.data.synthetic import default_cache_dir, make_synthetic
from mmroute.data.table import OutcomeTable
from mmroute.data.validate import TableValidationError, validate_table

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageRoot",
    "MODES",
    "Mode",
    "OutcomeTable",
    "TableValidationError",
    "apply_mode",
    "default_cache_dir",
    "load_table",
    "make_synthetic",
    "split_column",
    "split_in",
    "split_out",
    "validate_table",
]
