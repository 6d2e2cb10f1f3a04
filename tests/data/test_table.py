import numpy as np
import pytest

from mmroute.data.table import OutcomeTable


def _table(n=6, m=3, seed=0):
    rng = np.random.default_rng(seed)
    correct = rng.integers(0, 2, size=(n, m)).astype(float)
    correct[1, 2] = np.nan
    cost = rng.uniform(0.1, 1.0, size=(n, m))
    cost[1, 2] = np.nan
    return OutcomeTable(
        ids=[f"q{i}" for i in range(n)], datasets=["a", "b"] * (n // 2),
        questions=[f"question {i}" for i in range(n)], models=("m0", "m1", "m2"),
        correct=correct, cost=cost, image_paths=["img.png", None] * (n // 2),
        contexts=["A) x", ""] * (n // 2), extra={"row": np.arange(n)},
    )


def test_shapes_and_masks():
    t = _table()
    assert (t.n_instances, t.n_models) == (6, 3)
    assert t.has_images.tolist() == [True, False] * 3
    assert t.missing.sum() == 1  # the same cell is missing in both arrays
    assert t.dataset_names == ["a", "b"]
    assert t.texts()[0] == "question 0\nA) x" and t.texts()[1] == "question 1"


def test_filled_uses_column_means():
    t = _table()
    correct, cost = t.filled()
    col = np.delete(t.correct[:, 2], 1)
    assert correct[1, 2] == pytest.approx(col.mean())
    assert not np.isnan(cost).any()
    assert np.isnan(t.correct[1, 2])  # the table itself is untouched


def test_subset_and_select_models():
    t = _table()
    s = t.subset([4, 0])
    assert s.ids.tolist() == ["q4", "q0"] and s.extra["row"].tolist() == [4, 0]
    assert np.array_equal(s.correct, t.correct[[4, 0]], equal_nan=True)
    mask = np.zeros(6, bool)
    mask[[1, 3]] = True
    assert t.subset(mask).ids.tolist() == ["q1", "q3"]
    sel = t.select_models(["m2", "m0"])
    assert sel.models == ("m2", "m0")
    assert np.array_equal(sel.cost[:, 0], t.cost[:, 2], equal_nan=True)
    with pytest.raises(KeyError, match="zz"):
        t.select_models(["zz"])


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="cost must have the shape"):
        OutcomeTable(ids=["a"], datasets=["d"], questions=["q"], models=("m",),
                     correct=np.zeros((1, 1)), cost=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="2 model names for 1 outcome columns"):
        OutcomeTable(ids=["a"], datasets=["d"], questions=["q"], models=("m", "n"),
                     correct=np.zeros((1, 1)), cost=np.zeros((1, 1)))


def test_content_hash_is_stable_and_sensitive():
    a, b = _table(), _table()
    assert a.content_hash() == b.content_hash()
    c = _table(seed=1)
    assert a.content_hash() != c.content_hash()
