"""The differential comparison itself: what it accepts as the same answer, and what not."""

from __future__ import annotations

import pyarrow as pa
import pytest

from differential import assert_same

ORDERED = "SELECT a, b FROM t ORDER BY b DESC"


def _table(rows: list[tuple[int, float]]) -> pa.Table:
    return pa.table({"a": [r[0] for r in rows], "b": [r[1] for r in rows]})


def test_rows_tied_on_a_float_key_may_come_in_either_order() -> None:
    # 38.1369 summed in two orders: equal within tolerance, so either row may come first.
    got = _table([(1, 38.136900000000004), (2, 38.1369), (3, 1.0)])
    expected = _table([(2, 38.1369), (1, 38.1369), (3, 1.0)])
    assert_same(got, expected, ORDERED)


@pytest.mark.parametrize(
    "got",
    [
        [(2, 2.0), (1, 1.0), (3, 0.5)],  # two distinct values swapped
        [(3, 0.5), (2, 1.0), (1, 2.0)],  # reversed
        [(1, 2.0), (2, 1.5), (3, 0.5)],  # a wrong value
    ],
)
def test_ordered_answers_that_differ_are_refused(got: list[tuple[int, float]]) -> None:
    with pytest.raises(AssertionError):
        assert_same(_table(got), _table([(1, 2.0), (2, 1.0), (3, 0.5)]), ORDERED)


def test_unordered_answers_compare_as_sets() -> None:
    assert_same(_table([(2, 1.0), (1, 2.0)]), _table([(1, 2.0), (2, 1.0)]), "SELECT a, b FROM t")
