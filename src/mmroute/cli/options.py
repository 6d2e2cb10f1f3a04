"""Command-line flags generated from the config dataclasses, so the CLI, MLproject and the Python
API share one set of names.

A field ``split_seed`` of :class:`~mmroute.pipeline.PipelineConfig` is the flag ``--split-seed``
and the MLproject parameter ``split_seed``; its help text is the field's ``metadata["help"]``, its
argparse group ``metadata["group"]``, its choices the field's declared ``Options`` constraint.
``metadata["flag"]`` renames a flag (``router_options`` is ``--set``). Old spellings are kept for
one release as hidden aliases that log a deprecation warning (:func:`add_deprecated_alias`).

MLproject parameters arrive as strings (numbers typed ``float``, "" for "not set"): the types
here accept "42.0" for an integer and "" / "none" for None.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from mmroute.cli._types import boolean, integer, optional_int, optional_str
from mmroute.constraints import Options, declared_constraints

__all__ = ["add_config_arguments", "config_kwargs", "add_deprecated_alias", "encoder_spec", "router_option_items"]

log = logging.getLogger(__name__)


def encoder_spec(text: str) -> str:
    """``--features``: an encoder spec. A bare ``FILE.npy`` is the old spelling of
    ``precomputed:FILE.npy``: accepted for one release with a deprecation warning."""
    if text.endswith(".npy") and ":" not in text:
        _deprecated(f"--features {text}", f"--features precomputed:{text}")
        return f"precomputed:{text}"
    return text


def _deprecated(old: str, new: str) -> None:
    message = f"{old} is deprecated and will be removed in the next release; use {new}"
    warnings.warn(message, DeprecationWarning, stacklevel=3)
    log.warning(message)


def _type_for(hint: Any, name: str) -> Callable[[str], Any] | None:
    """The argparse ``type`` for a field annotation (None: keep the string)."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base = args[0] if optional and len(args) == 1 else hint
    if name == "features":
        return encoder_spec
    if base is bool:
        return boolean
    if base is int:
        return optional_int if optional else integer
    if base is float:
        return float
    if base is str and optional:
        return optional_str
    return None  # str, and tuples given as one comma/space-separated string (the dataclass splits them)


def _choices(cls: type, name: str, hint: Any) -> tuple[Any, ...] | None:
    spec = declared_constraints(cls).get(name, [])
    options = [c for c in spec if isinstance(c, Options)]
    if len(options) == 1 and len(spec) == 1 and typing.get_origin(hint) is None:
        return options[0].options
    return None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Sequence[str] | None = None,
                         skip: Sequence[str] = (), defaults: dict[str, Any] | None = None,
                         groups: dict[str, Any] | None = None) -> None:
    """Add one flag per field of dataclass ``cls`` (those in ``only``, none in ``skip``).

    ``defaults`` overrides field defaults for this command (e.g. the benchmark's ``train_frac``).
    Fields with ``metadata["append"]`` repeat (``--set A --set B``; several space-separated per flag).
    """
    hints = typing.get_type_hints(cls)
    groups = {} if groups is None else groups
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        meta = f.metadata
        title = meta.get("group", "options")
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        help_text = meta.get("help", "")
        kwargs: dict[str, Any] = {"dest": f.name, "help": f"{help_text} (default: %(default)s)"}
        if meta.get("append"):
            kwargs.update(action="append", default=[], metavar=meta.get("metavar"), help=help_text)
        else:
            kwargs["default"] = default
            kind = _type_for(hints[f.name], f.name)
            if kind is boolean:
                kwargs.update(nargs="?", const=True)
            if kind is not None:
                kwargs["type"] = kind
            choices = _choices(cls, f.name, hints[f.name])
            if choices is not None:
                kwargs["choices"] = choices
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        flags = [meta.get("flag", "--" + f.name.replace("_", "-")), *meta.get("aliases", ())]
        groups[title].add_argument(*flags, **kwargs)


def router_option_items(chunks: Sequence[str]) -> tuple[str, ...]:
    """``--set`` values: each flag may hold several space-separated ``ROUTER.FIELD=VALUE`` items."""
    return tuple(item for chunk in chunks for item in chunk.split())


def config_kwargs(args: argparse.Namespace, cls: type, **fixed: Any) -> dict[str, Any]:
    """The keyword arguments of ``cls`` a parsed namespace holds (fields without a flag keep their
    defaults), updated by ``fixed``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            out[f.name] = router_option_items(value) if f.metadata.get("append") else value
    out.update(fixed)
    return out


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "",
                 convert: Callable[[str], Any] | None = None, **kwargs: Any) -> None:
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        _deprecated(str(option_string), self.new)
        value = self.convert(values) if self.convert else values
        current = getattr(namespace, self.dest, None)
        if isinstance(current, list):  # an alias of a repeatable flag adds to it
            value = [*current, value]
        setattr(namespace, self.dest, value)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, *, dest: str, new: str,
                         convert: Callable[[str], Any] | None = None) -> None:
    """``old`` sets ``dest`` like ``new`` does, with a deprecation warning (hidden from ``--help``)."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, convert=convert, help=argparse.SUPPRESS)
