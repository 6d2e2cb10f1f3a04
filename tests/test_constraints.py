"""Declared config constraints: one check, every problem in one message naming field, value, expectation."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import pytest

from mmroute.constraints import InstanceOf, Integral, Interval, Options, Real, SequenceOf, Validated, check


@dataclasses.dataclass
class Base(Validated):
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"n": [Interval(Integral, 1, None, closed="left")]}
    n: int = 1


@dataclasses.dataclass
class Child(Base):
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "share": [Interval(Real, 0, 1, closed="left")],
        "kind": [Options(("a", "b")), None],
        "widths": [SequenceOf(Interval(Integral, 1, None, closed="left"), min_len=1)],
        "flag": [InstanceOf(bool)],
    }
    share: float = 0.5
    kind: str | None = "a"
    widths: tuple[int, ...] = (4,)
    flag: bool = True

    def problems(self) -> list[str]:
        out = super().problems()
        if self.kind == "b" and self.n > 1:
            out.append("kind='b' needs n=1")
        return out


def test_valid_values_pass_and_lists_become_tuples():
    c = Child(n=np.int64(3), share=0.0, kind=None, widths=[2, 3])
    assert c.widths == (2, 3) and check(c) == []


def test_every_problem_is_reported_once_with_field_value_and_expectation():
    with pytest.raises(ValueError) as err:
        Child(n=0, share=1.0, kind="z", widths=(), flag=1)
    msg = str(err.value)
    assert msg.startswith("invalid Child: ")
    for part in ("n=0 (expected an integer >= 1)", "share=1.0 (expected a number in [0, 1))",
                 "kind='z' (expected one of ['a', 'b'] or None)",
                 "widths=() (expected a non-empty sequence of integers >= 1)", "flag=1 (expected a boolean)"):
        assert part in msg


def test_booleans_and_nan_are_not_numbers_and_cross_field_checks_run():
    assert not Interval(Integral, 0, None).is_satisfied_by(True)
    assert not Interval(Real, None, None).is_satisfied_by(float("nan"))
    with pytest.raises(ValueError, match="kind='b' needs n=1"):
        Child(kind="b", n=2)


def test_router_and_pipeline_configs_use_it():
    from mmroute.pipeline import PipelineConfig
    from mmroute.routers import create_router

    with pytest.raises(ValueError, match=r"k=0 \(expected an integer >= 1\).*metric='l1'"):
        create_router("knn", k=0, metric="l1")
    with pytest.raises(ValueError, match=r"max_epochs=0 \(expected an integer >= 1 or None\)"):
        PipelineConfig(max_epochs=0)
