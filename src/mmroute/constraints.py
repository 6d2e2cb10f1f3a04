"""Declared constraints on config fields, checked by one helper (after scikit-learn's
``_parameter_constraints``).

A config dataclass states, per field, the values it accepts::

    @dataclasses.dataclass
    class KNNConfig(RouterConfig):
        _parameter_constraints: ClassVar[Constraints] = {
            "k": [Interval(Integral, 1, None, closed="left")],
            "metric": [Options(KNN_METRICS)],
            "ks": [SequenceOf(Interval(Integral, 1, None, closed="left"), what="or empty for a fixed k")],
        }

A field accepts a value when *any* constraint in its list does (``None`` in the list accepts
``None``). :func:`validate` checks every declared field (the constraints of base classes
included) plus the cross-field checks a class adds by overriding ``problems()``, and raises one
``ValueError`` listing every problem as ``field=value (expected ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any, ClassVar, Protocol

__all__ = ["Constraint", "Constraints", "Interval", "Options", "InstanceOf", "SequenceOf", "Validated", "check",
           "validate", "declared_constraints", "Integral", "Real"]


class Constraint(Protocol):
    def is_satisfied_by(self, value: Any) -> bool: ...

    def describe(self, plural: bool = False) -> str: ...


ConstraintSpec = Constraint | None
Constraints = Mapping[str, "list[ConstraintSpec]"]


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    return not (isinstance(value, Real) and math.isnan(float(value)))


class Interval:
    """Numbers of ``kind`` (``Integral`` or ``Real``) between ``left`` and ``right`` (None = unbounded).

    ``closed``: "left", "right", "both" or "neither" says which ends are included. Booleans and NaN
    are never accepted.
    """

    def __init__(self, kind: type, left: float | None, right: float | None, *, closed: str = "both") -> None:
        if closed not in ("left", "right", "both", "neither"):
            raise ValueError(f"closed={closed!r} (expected 'left', 'right', 'both' or 'neither')")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if not _is_number(value, self.kind):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self, plural: bool = False) -> str:
        if self.kind is Integral:
            noun = "integers" if plural else "an integer"
        else:
            noun = "numbers" if plural else "a number"
        lo_in, hi_in = self.closed in ("left", "both"), self.closed in ("right", "both")
        if self.left is not None and self.right is not None:
            return f"{noun} in {'[' if lo_in else '('}{self.left}, {self.right}{']' if hi_in else ')'}"
        if self.left is not None:
            return f"{noun} {'>=' if lo_in else '>'} {self.left}"
        if self.right is not None:
            return f"{noun} {'<=' if hi_in else '<'} {self.right}"
        return noun


class Options:
    """One of a fixed set of values."""

    def __init__(self, options: Iterable[Any]) -> None:
        self.options = tuple(options)

    def is_satisfied_by(self, value: Any) -> bool:
        try:
            return value in self.options
        except TypeError:  # unhashable or incomparable values
            return False

    def describe(self, plural: bool = False) -> str:
        return f"{'values among' if plural else 'one of'} {list(self.options)}"


class InstanceOf:
    """An instance of ``kind`` (``str``, ``bool``, ...); ``what`` names it in messages."""

    def __init__(self, kind: type, what: str = "") -> None:
        self.kind, self.what = kind, what or {str: "string", bool: "boolean"}.get(kind, kind.__name__)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    def describe(self, plural: bool = False) -> str:
        return f"{self.what}s" if plural else f"a {self.what}"


class SequenceOf:
    """A tuple (or list: converted to a tuple) whose every item satisfies ``item``.

    ``min_len``: the fewest items accepted (1 = non-empty); ``what`` is appended to the
    description (e.g. "or empty for a fixed alpha").
    """

    def __init__(self, item: Constraint, *, min_len: int = 0, what: str = "") -> None:
        self.item, self.min_len, self.what = item, min_len, what

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, (tuple, list)) or len(value) < self.min_len:
            return False
        return all(self.item.is_satisfied_by(v) for v in value)

    def describe(self, plural: bool = False) -> str:
        text = f"{'a non-empty' if self.min_len >= 1 else 'a'} sequence of {self.item.describe(plural=True)}"
        return f"{text}, {self.what}" if self.what else text


def _describe(spec: list[ConstraintSpec]) -> str:
    return " or ".join("None" if c is None else c.describe() for c in spec)


def declared_constraints(cls: type) -> dict[str, list[ConstraintSpec]]:
    """The ``_parameter_constraints`` of ``cls`` and its bases (a subclass's entry wins)."""
    out: dict[str, list[ConstraintSpec]] = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get("_parameter_constraints", {}))
    return out


def check(obj: Any, constraints: Constraints | None = None) -> list[str]:
    """Problems of ``obj``'s fields against ``constraints`` (default: its class's declared ones),
    as ``"field=value (expected ...)"``; lists given for sequence fields become tuples."""
    spec = declared_constraints(type(obj)) if constraints is None else dict(constraints)
    out = []
    for name, allowed in spec.items():
        value = getattr(obj, name)
        if isinstance(value, list) and any(isinstance(c, SequenceOf) for c in allowed):
            value = tuple(value)
            object.__setattr__(obj, name, value)
        if value is None and None in allowed:
            continue
        if not any(c is not None and c.is_satisfied_by(value) for c in allowed):
            out.append(f"{name}={value!r} (expected {_describe(allowed)})")
    return out


def validate(obj: Any) -> None:
    """Raise one ``ValueError`` naming every problem of ``obj`` (declared constraints and its
    ``problems()`` cross-field checks), or return None when there is none."""
    found = obj.problems() if hasattr(obj, "problems") else check(obj)
    if found:
        raise ValueError(f"invalid {type(obj).__name__}: " + "; ".join(found))


class Validated:
    """Mixin for config dataclasses: ``__post_init__`` validates the declared constraints.

    Subclasses declare ``_parameter_constraints`` and may extend :meth:`problems` with checks that
    involve several fields (``return super().problems() + [...]``).
    """

    _parameter_constraints: ClassVar[dict[str, list[ConstraintSpec]]] = {}

    def __post_init__(self) -> None:
        validate(self)

    def problems(self) -> list[str]:
        """Every problem of this config, reported together."""
        return check(self)
