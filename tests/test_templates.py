"""Parsed statements reused for texts that differ only in literal values (engine.templates):
the tree a template gives is the tree a fresh parse gives, value for value.

No server: the sandbox check and sqlglot only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from test_literal_shapes import _corpus, _revalue
from tierflight.core.errors import TierflightError
from tierflight.core.statement import DIALECT
from tierflight.engine import functions, sandbox
from tierflight.engine.literal_shapes import literal_shape
from tierflight.engine.templates import TEMPLATES, template_of


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    TEMPLATES.clear()
    functions._checked_shapes.clear()
    yield
    TEMPLATES.clear()


def _fresh(sql: str) -> object:
    """The sandbox check with no template (what a server that never saw the shape does)."""
    saved = dict(TEMPLATES._items)
    TEMPLATES.clear()
    try:
        return _outcome(sql)
    finally:
        TEMPLATES.clear()
        for k, v in saved.items():
            TEMPLATES.put(k, v)


def _outcome(sql: str) -> object:
    try:
        st = sandbox._check(sql)
    except TierflightError as exc:
        return f"{type(exc).__name__}: {exc}"
    return (st.kind, st.sql, st.parameter_count, st.tree.sql(dialect=DIALECT), st.tree)


def test_a_template_gives_the_tree_a_fresh_parse_gives() -> None:
    corpus = _corpus()
    if not corpus:
        pytest.skip("no workload or fixture statements found")
    rng = random.Random(11)
    for sql in corpus:
        _outcome(sql)  # the first text of its shape: parsed, maybe kept
        other = _revalue(sql, rng)  # one other value set each (the fast lane's time bound)
        got = _outcome(other)
        assert got == _fresh(other), other
    assert len(TEMPLATES) > len(corpus) // 2  # most dashboard statements are kept


def test_values_land_by_position_not_by_tree_order() -> None:
    # sqlglot attaches the CTE after the main query: tree order differs from text order.
    first = "WITH c AS (SELECT 1 AS a, 'x' AS b) SELECT a + 1, b FROM c WHERE b = 'x'"
    _outcome(first)
    assert len(TEMPLATES) == 1
    second = "WITH c AS (SELECT 5 AS a, 'p' AS b) SELECT a + 7, b FROM c WHERE b = 'q'"
    got = _outcome(second)
    assert got == _fresh(second)
    assert "SELECT 5 AS a, 'p' AS b" in got[3] and "a + 7" in got[3] and "b = 'q'" in got[3]  # type: ignore[index]


def test_the_template_is_not_changed_by_its_copies() -> None:
    _outcome("SELECT type FROM events WHERE country = 'US' LIMIT 10")
    (template,) = TEMPLATES._items.values()
    before = template.tree.sql(dialect=DIALECT)
    _outcome("SELECT type FROM events WHERE country = 'JPN' LIMIT 123456")
    assert template.tree.sql(dialect=DIALECT) == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT INTERVAL '1 day'",  # the parser reads into the string
        "SELECT x FROM t WHERE a = -3",  # DuckDB folds the sign into the constant
    ],
)
def test_parses_that_look_into_a_literal_are_not_kept(sql: str) -> None:
    _outcome(sql)
    shape = literal_shape(sql)
    assert shape is not None
    assert not any(key[1] == shape.key for key in TEMPLATES._items)


def test_values_that_could_leave_a_string_are_checked_again() -> None:
    base = "SELECT type FROM events WHERE country = 'US'"
    _outcome(base)
    assert len(TEMPLATES) == 1
    hostile = "SELECT type FROM events WHERE country = 'x'' OR current_query() = ''y'"
    assert _outcome(hostile) == _fresh(hostile)


def test_template_of_refuses_a_tree_with_a_literal_of_no_span() -> None:
    sql = "SELECT 1"
    shape = literal_shape(sql)
    assert shape is not None
    tree = sandbox.parse_one(sql)
    assert template_of(tree, shape, 0) is not None
    assert template_of(sandbox.parse_one("SELECT 1, 2"), shape, 0) is None
