"""Parameters without a server: their order, their literals, their schema, what a batch may hold."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from conftest import make_config
from tierflight.core.errors import InvalidArgument
from tierflight.core.names import Names
from tierflight.engine.sandbox import check_statement
from tierflight.protocol.parameters import ParameterTyper, parameter_rows, require_bound
from tierflight.router.binding import bind, literal


def _bound_sql(sql: str, *row: Any) -> str:
    return bind(check_statement(sql), row).sql


# -- order ----------------------------------------------------------------------------------------


def test_positional_parameters_bind_in_text_order() -> None:
    # sqlglot's tree holds LIMIT before WHERE: binding in tree order put the first value in LIMIT.
    sql = _bound_sql("SELECT x FROM t WHERE x BETWEEN ? AND ? LIMIT ? OFFSET ?", 0.5, 1.5, 3, 4)
    assert sql == (
        "SELECT x FROM t WHERE x BETWEEN CAST('0.5' AS DOUBLE) AND CAST('1.5' AS DOUBLE) "
        "LIMIT CAST(3 AS BIGINT) OFFSET CAST(4 AS BIGINT)"
    )
    # A CTE's placeholder comes first in the text, and DuckDB numbers it first.
    con = duckdb.connect()
    text = "WITH a AS (SELECT ? AS x) SELECT x, ? AS y FROM a"
    assert con.sql(_bound_sql(text, 1, 2)).fetchall() == con.execute(text, [1, 2]).fetchall() == [(1, 2)]


def test_each_value_set_of_a_prepared_statement_binds_in_text_order() -> None:
    # The order is found once per statement text: later value sets bind through it, and the
    # checked statement's own tree is never changed by a bind.
    statement = check_statement("SELECT x FROM t WHERE x BETWEEN ? AND ? LIMIT ?")
    before = statement.tree.sql()
    for lo, hi, limit in [(1, 2, 3), (4, 5, 6), (7, 8, 9)]:
        assert bind(statement, (lo, hi, limit)).sql == (
            f"SELECT x FROM t WHERE x BETWEEN CAST({lo} AS BIGINT) AND CAST({hi} AS BIGINT) "
            f"LIMIT CAST({limit} AS BIGINT)"
        )
    assert statement.tree.sql() == before


def test_numbered_parameters_bind_by_number() -> None:
    assert _bound_sql("SELECT $2 AS a, $1 AS b", "x", 7) == "SELECT CAST(7 AS BIGINT) AS a, 'x' AS b"


# -- the bound text --------------------------------------------------------------------------------

_VALUE_SETS: list[tuple[Any, ...]] = [
    ("US", dt.date(2024, 1, 2), 5, 2.5),
    ("it's", dt.date(1999, 12, 31), -(2**70), -0.0),
    ("tf?v0 '' $1", dt.date(2024, 2, 29), 2**63, 1e300),
    (None, None, None, None),
    ("", dt.datetime(2024, 1, 2, 3, 4, 5, 6), True, decimal.Decimal("-12.3400")),
    ("x", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))), 0, decimal.Decimal("1E+3")),
]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT a FROM t WHERE s = ? AND d BETWEEN ? AND ? + INTERVAL 1 DAY LIMIT ? OFFSET ?",
        "SELECT ? AS a, count(*) FROM t WHERE x IN (?, ?) GROUP BY 1 HAVING sum(y) > ?",
        "SELECT a FROM t WHERE d > ? - INTERVAL (?) DAY AND -? < n AND s LIKE ?",
        "WITH c AS (SELECT ? AS v) SELECT v, ? FROM c WHERE v IS NOT ? OR v = coalesce(?, ?)",
        "SELECT $3 AS a, $1 AS b, $2 AS c FROM t WHERE b = $1",
    ],
)
def test_bound_text_is_the_bound_tree_written_out(sql: str) -> None:
    # The text of a value set is cut from the first set's render; whatever the values (other
    # types, quotes, a marker-like string, NULLs), it is what writing the bound tree gives.
    statement = check_statement(sql)
    for values in _VALUE_SETS:
        row = [values[i % len(values)] for i in range(statement.parameter_count)]
        bound = bind(statement, row)
        assert bound.sql == bound.tree.sql(dialect="duckdb"), (sql, row)


def test_bound_dates_are_casts_as_the_parser_reads_them() -> None:
    # A bound date is the tree of the same statement with the date written in it, so the
    # router's shape of each value set is the same shape (one template serves them).
    from tierflight.router.templates import statement_shape

    statement = check_statement("SELECT type, count(*) FROM events WHERE day BETWEEN ? AND ? AND country = ? GROUP BY type")
    shapes = set()
    for day in (dt.date(2024, 1, 1), dt.date(2024, 6, 30)):
        bound = bind(statement, (day, day + dt.timedelta(days=3), "DE"))
        written = check_statement(
            f"SELECT type, count(*) FROM events WHERE day BETWEEN CAST('{day}' AS DATE) "
            f"AND CAST('{day + dt.timedelta(days=3)}' AS DATE) AND country = 'DE' GROUP BY type"
        )
        assert bound.tree == written.tree
        shape = statement_shape(bound.tree)
        assert shape is not None and len(shape.holes) == 3
        shapes.add(shape.key)
    assert len(shapes) == 1


# -- literals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        (decimal.Decimal("0.25"), "CAST('0.25' AS DECIMAL(2, 2))"),
        (decimal.Decimal("1E+3"), "CAST('1000' AS DECIMAL(4, 0))"),
        (decimal.Decimal("-12.3400"), "CAST('-12.3400' AS DECIMAL(6, 4))"),
        (decimal.Decimal("0.1000000000000000000000000001"), "CAST('0.1000000000000000000000000001' AS DECIMAL(28, 28))"),
        (2**63, "CAST(9223372036854775808 AS UBIGINT)"),
        (-(2**70), "CAST(-1180591620717411303424 AS INT128)"),
        (dt.time(1, 2, 3, 4), "CAST('01:02:03.000004' AS TIME)"),
    ],
)
def test_literals_keep_every_digit(value: Any, sql: str) -> None:
    assert literal(value).sql(dialect="duckdb") == sql
    # DuckDB reads the literal back as the very value (no rounding through a double).
    assert duckdb.sql(f"SELECT {sql}").fetchall() == [(value,)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (decimal.Decimal("NaN"), "not a finite number"),
        (decimal.Decimal("1" * 39), "at most 38"),
        (2**130, "does not fit"),
        ([1, 2], "list is not supported"),
    ],
)
def test_unbindable_values_refused(value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        literal(value)


# -- the parameter schema ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def typer() -> ParameterTyper:
    cfg = make_config(Path("/nonexistent-tierflight-data"))
    return ParameterTyper(cfg.tables, Names(cfg.tables))


@pytest.mark.parametrize(
    ("sql", "types"),
    [
        ("SELECT count(*) FROM events WHERE type = ? AND ts >= ?", [pa.utf8(), pa.timestamp("us")]),
        ("SELECT count(*) FROM events WHERE advertiser_id > $1 AND user_id = $2", [pa.int32(), pa.int64()]),
        # Derived columns (typed by DuckDB over an empty relation), any spelling of the table.
        ("SELECT count(*) FROM TierFlight.Main.EVENTS e WHERE e.day = ? AND hour < ?", [pa.date32(), pa.timestamp("us")]),
        # Text order, whatever the tree's: BETWEEN's bounds, then LIMIT.
        ("SELECT type FROM events WHERE bid_price BETWEEN ? AND ? LIMIT ?", [pa.float64(), pa.float64(), pa.int64()]),
        ("WITH x AS (SELECT country AS c FROM events) SELECT * FROM x WHERE c IN (?, ?)", [pa.utf8(), pa.utf8()]),
        ("SELECT (SELECT max(ts) FROM events WHERE total_price > ?) AS m", [pa.float64()]),
        # Nothing to infer from: utf8, which a JDBC client can bind a string to.
        ("SELECT ? AS a, ? + 1 AS b", [pa.utf8(), pa.utf8()]),
        ("SELECT * FROM no_such_table WHERE a = ?", [pa.utf8()]),
    ],
)
def test_parameter_schema_types(typer: ParameterTyper, sql: str, types: list[pa.DataType]) -> None:
    schema = typer.schema(check_statement(sql))
    assert schema.types == types
    assert schema.names == [f"parameter_{i + 1}" for i in range(len(types))]


# -- what a parameter batch may hold -----------------------------------------------------------------

ACCEPTED: list[tuple[pa.Array, Any]] = [
    (pa.array(["a"], pa.string()), "a"),
    (pa.array(["a"], pa.large_string()), "a"),
    *[(pa.array([-5 if t.startswith("int") else 5], t), -5 if t.startswith("int") else 5) for t in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")],
    (pa.array([1.5], pa.float32()), 1.5),
    (pa.array([1.5], pa.float64()), 1.5),
    (pa.array([decimal.Decimal("1.25")], pa.decimal128(5, 2)), decimal.Decimal("1.25")),
    (pa.array([decimal.Decimal("1.25")], pa.decimal256(50, 2)), decimal.Decimal("1.25")),
    (pa.array([True]), True),
    (pa.array([dt.date(2024, 1, 2)], pa.date32()), dt.date(2024, 1, 2)),
    (pa.array([dt.date(2024, 1, 2)], pa.date64()), dt.date(2024, 1, 2)),
    *[(pa.array([dt.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp(u)), dt.datetime(2024, 1, 2, 3, 4, 5)) for u in ("s", "ms", "us", "ns")],
    (
        pa.array([dt.datetime(2024, 1, 2, tzinfo=dt.UTC)], pa.timestamp("ns", tz="UTC")),
        dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
    ),
    (pa.array([dt.time(1, 2, 3)], pa.time32("s")), dt.time(1, 2, 3)),
    (pa.array([dt.time(1, 2, 3, 5)], pa.time64("ns")), dt.time(1, 2, 3, 5)),
    (pa.array([b"\x00x"], pa.binary()), b"\x00x"),
    (pa.array([None], pa.null()), None),
    (pa.array(["a"]).dictionary_encode(), "a"),
]


@pytest.mark.parametrize(("array", "value"), ACCEPTED, ids=[str(a.type) for a, _ in ACCEPTED])
def test_every_scalar_arrow_type_binds(array: pa.Array, value: Any) -> None:
    rows = parameter_rows(pa.table([array], names=["p"]), 1)
    assert rows == [(value,)]
    # ... and as a literal DuckDB reads back as the same value.
    assert duckdb.sql(f"SELECT {literal(value).sql(dialect='duckdb')}").fetchall() == [(value,)]


@pytest.mark.parametrize(
    "array",
    [
        pa.array([[1, 2]]),
        pa.array([{"a": 1}]),
        pa.array([dt.timedelta(seconds=1)]),
        pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval()),
        pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
    ],
    ids=lambda a: str(a.type),
)
def test_unsupported_arrow_types_refused_by_name(array: pa.Array) -> None:
    with pytest.raises(InvalidArgument) as err:
        parameter_rows(pa.table([pa.array([1]), array], names=["fine", "odd"]), 2)
    assert f"parameter 2 ('odd') has Arrow type {array.type}" in str(err.value)


def test_nanoseconds_are_refused_not_rounded() -> None:
    ts = pa.array([1_700_000_000_000_000_001], pa.timestamp("ns"))
    with pytest.raises(InvalidArgument, match="sub-microsecond"):
        parameter_rows(pa.table([ts], names=["p"]), 1)


def test_wrong_number_of_parameter_columns() -> None:
    two = pa.table([pa.array([1]), pa.array([2])], names=["a", "b"])
    with pytest.raises(InvalidArgument, match="1 parameter"):
        parameter_rows(two, 1)
    # Values for a statement without parameters are refused, not ignored.
    with pytest.raises(InvalidArgument, match="0 parameter"):
        parameter_rows(two, 0)
    assert parameter_rows(pa.table({}), 0) == []


def test_unbound_placeholders_refused() -> None:
    with pytest.raises(InvalidArgument, match="2 parameter\\(s\\) but none were bound"):
        require_bound(check_statement("SELECT ? AS a, $2 AS b"), None)
    with pytest.raises(InvalidArgument, match="none were bound"):
        require_bound(check_statement("SELECT ? AS a"), [])
    require_bound(check_statement("SELECT 1"), None)


def test_null_comparison_is_logged_once_not_refused() -> None:
    from structlog.testing import capture_logs

    from tierflight.protocol.parameters import warn_null_comparison

    trap = check_statement("SELECT count(*) FROM events WHERE type = NULL AND 'null-trap-test' <> ''")
    with capture_logs() as logs:
        assert warn_null_comparison(trap, "alice") is True
        assert warn_null_comparison(trap, "alice") is True  # remembered: logged once
    events = [e for e in logs if e["event"] == "statement_compares_with_null"]
    assert len(events) == 1 and events[0]["user"] == "alice" and "type = NULL" not in str(events[0])
    assert not warn_null_comparison(check_statement("SELECT count(*) FROM events WHERE type IS NULL"), "alice")
    assert not warn_null_comparison(check_statement("SELECT NULL AS n, coalesce(type, NULL) FROM events"), "alice")
