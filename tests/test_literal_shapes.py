"""The function check's shape cache (engine.literal_shapes): texts that differ only in literal
values are checked once, and no text reaches a function the check would refuse by dressing it
up as a literal of a shape that was checked before.

No server: the check is DuckDB's parser on a private in-memory database.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierflight.core.errors import NotFound, StatementRefused
from tierflight.engine import functions
from tierflight.engine.functions import Outcome, check_functions
from tierflight.engine.literal_shapes import literal_shape, spans_are_constants

WORKLOADS = Path(__file__).resolve().parents[1].parent / "shared" / "workloads"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "router" / "routes"


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    functions._checked_shapes.clear()
    yield
    functions._checked_shapes.clear()


class CountingParser:
    """Counts DuckDB parses of the function check (a shape hit makes none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = functions._parser

        def counted() -> duckdb.DuckDBPyConnection:
            self.calls += 1
            return real()

        monkeypatch.setattr(functions, "_parser", counted)


def _outcome(sql: str) -> str:
    try:
        return check_functions(sql).value
    except (StatementRefused, NotFound) as exc:
        return f"{type(exc).__name__}: {exc}"


def _parse_json(sql: str) -> bytes:
    out = duckdb.connect().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    assert out is not None
    return str(out[0]).encode()


DASHBOARD = (
    "SELECT type, COUNT(*) AS events, SUM(bid_price) AS spend FROM events "
    "WHERE country = {c} AND day BETWEEN DATE {d1} AND DATE {d2} GROUP BY type ORDER BY type LIMIT {n}"
)

_country = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ '-é", min_size=0, max_size=6).map(
    lambda s: "'" + s.replace("'", "''") + "'"
)
_day = st.dates().map(lambda d: f"'{d.isoformat()}'")


@settings(max_examples=30, deadline=None)
@given(_country, _day, _day, st.integers(min_value=0, max_value=10**12))
def test_new_values_of_a_checked_statement_are_not_parsed_again(c: str, d1: str, d2: str, n: int) -> None:
    functions._checked_shapes.clear()
    first = DASHBOARD.format(c="'US'", d1="'2024-03-01'", d2="'2024-03-20'", n=100)
    assert check_functions(first) is Outcome.CHECKED
    patch = pytest.MonkeyPatch()
    counting = CountingParser(patch)
    try:
        assert check_functions(DASHBOARD.format(c=c, d1=d1, d2=d2, n=n)) is Outcome.CHECKED
        # A value holding a comment marker is not masked (it could end a comment a lexer
        # were in): that text is checked on its own.
        assert counting.calls == (1 if "--" in c else 0)
    finally:
        patch.undo()


def test_shape_masks_literals_only() -> None:
    a = literal_shape("SELECT a FROM t WHERE c = 'US' AND n > 5 AND x1 = 2 AND \"col 7\" = 7 -- '9'\n")
    b = literal_shape("SELECT a FROM t WHERE c = 'JP' AND n > 50 AND x1 = 3 AND \"col 7\" = 8 -- '9'\n")
    other_name = literal_shape("SELECT a FROM t WHERE c = 'US' AND n > 5 AND x2 = 2 AND \"col 7\" = 7 -- '9'\n")
    other_comment = literal_shape("SELECT a FROM t WHERE c = 'US' AND n > 5 AND x1 = 2 AND \"col 7\" = 7 -- '8'\n")
    other_kind = literal_shape("SELECT a FROM t WHERE c = 5 AND n > 5 AND x1 = 2 AND \"col 7\" = 7 -- '9'\n")
    assert a is not None and b is not None
    assert a.key == b.key
    assert [a.text[s:e] for s, e in a.spans] == [b"'US'", b"5", b"2", b"7"]
    for different in (other_name, other_comment, other_kind):
        assert different is not None and different.key != a.key


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT x FROM t WHERE a = -3.5",  # DuckDB folds the sign into the constant
        "SELECT 'abc'\n'def'",  # two strings DuckDB reads as one
        "SELECT * FROM 'events'",  # a string that is a table
        "SELECT /* /* */ 'x' */ 1",  # a string inside DuckDB's nested comment
        "SELECT $$ 'x' $$",  # inside a dollar-quoted string
        "SELECT E'\\'' , 'x'",  # an escape string hides a quote from the scan
    ],
)
def test_spans_duckdb_does_not_read_as_one_literal_are_never_trusted(sql: str) -> None:
    shape = literal_shape(sql)
    assert shape is not None and shape.spans
    assert not spans_are_constants(shape, _parse_json(sql))


@pytest.mark.parametrize(
    ("benign", "hostile"),
    [
        # A string DuckDB reads as comment; the hostile text has the scan's shape with a call
        # where the string was.
        ("SELECT /* /* */ 'x' */ 1", "SELECT /* /* */ 'x */ , current_query() /* ' */ 1"),
        # An escape string: the scan sees a literal where DuckDB is still inside the string.
        ("SELECT E'\\'' , 'x' , 1", "SELECT E'\\'' , 'x' , current_query() , ' , 1"),
        # Dollar quoting.
        ("SELECT $q$ 'x' $q$", "SELECT $q$ 'x $q$, current_query(), $q$ ' $q$"),
        # A string used as a table name.
        ("SELECT * FROM 'events'", "SELECT * FROM '/etc/passwd'"),
    ],
)
def test_a_checked_shape_never_lets_a_refused_call_through(benign: str, hostile: str) -> None:
    assert _outcome(hostile).startswith(("StatementRefused", "NotFound", "unparsable")), _outcome(hostile)
    functions._checked_shapes.clear()
    _outcome(benign)  # checked first (and its shape kept, were it provable)
    assert _outcome(hostile).startswith(("StatementRefused", "NotFound", "unparsable"))


def _corpus() -> list[str]:
    """Statements of the shared workloads and the router fixtures (each ends with ';')."""
    texts: list[str] = []
    for folder, pattern in ((WORKLOADS, "*.sql"), (FIXTURES, "*.sql")):
        for path in sorted(folder.glob(pattern)) if folder.exists() else []:
            body = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
            texts += [s.strip() for s in body.split(";") if s.strip().upper().startswith(("SELECT", "WITH"))]
    return texts


_LITERAL = re.compile(r"'(?:[^']|'')*'|(?<![\w.$])\d+(?![\w.])")


def _revalue(sql: str, rng: random.Random) -> str:
    """``sql`` with each literal given another value of the same kind."""

    def other(m: re.Match[str]) -> str:
        text = m.group()
        if text.startswith("'"):
            return "'" + "".join(rng.choice("ABCxyz09-: ") for _ in range(rng.randint(0, 8))) + "'"
        return str(rng.randint(0, 10**6))

    return _LITERAL.sub(other, sql)


def test_the_cache_changes_no_outcome_over_the_workloads() -> None:
    corpus = _corpus()
    if not corpus:
        pytest.skip("no workload or fixture statements found")
    rng = random.Random(7)
    for sql in corpus:
        variants = [sql, *(_revalue(sql, rng) for _ in range(3))]
        cold = []
        for text in variants:
            functions._checked_shapes.clear()
            cold.append(_outcome(text))
        functions._checked_shapes.clear()
        warm = [_outcome(text) for text in variants]
        assert warm == cold, sql


def test_dashboard_shapes_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingParser(monkeypatch)
    rng = random.Random(3)
    corpus = [s for s in _corpus() if "events" in s]
    if not corpus:
        pytest.skip("no workload statements found")
    for sql in corpus:
        _outcome(sql)
    first = counting.calls
    for sql in corpus:
        _outcome(_revalue(sql, rng))
    # Most statements of the workloads keep their shape when only values change.
    assert counting.calls - first <= first // 4 + 1
