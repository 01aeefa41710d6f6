"""router/aggregates.py: the list of DuckDB aggregates is DuckDB's, and every aggregate sqlglot
parses as a plain call is found in a statement wherever it stands."""

from __future__ import annotations

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from tierflight.router.aggregates import DUCKDB_AGGREGATES, unknown_aggregate


def _duckdb_aggregates() -> list[str]:
    rows = duckdb.sql("SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'").fetchall()
    return sorted(r[0] for r in rows)


def test_the_list_holds_every_duckdb_aggregate() -> None:
    # A DuckDB upgrade that adds aggregates fails here until the list has them.
    assert set(_duckdb_aggregates()) <= DUCKDB_AGGREGATES


def _plain_calls() -> list[str]:
    out = []
    for name in _duckdb_aggregates():
        try:
            tree = sqlglot.parse_one(f"SELECT {name}(x) FROM t", dialect="duckdb")
        except sqlglot.errors.ParseError:
            continue
        if isinstance(tree.expressions[0], exp.Anonymous):
            out.append(name)
    return out


@pytest.mark.parametrize("name", _plain_calls())
def test_each_aggregate_sqlglot_does_not_know_is_found(name: str) -> None:
    for sql in (
        f"SELECT k, {name}(x) FROM t GROUP BY k",
        f"SELECT k FROM t GROUP BY k HAVING {name.upper()}(x) IS NOT NULL",
        f"SELECT k, 1 + coalesce({name}(x), 0) FROM t GROUP BY k ORDER BY {name}(x)",
    ):
        assert unknown_aggregate(sqlglot.parse_one(sql, dialect="duckdb")) == name, sql


def test_known_aggregates_and_scalar_calls_are_not_flagged() -> None:
    sql = "SELECT k, sum(x), count(*), approx_count_distinct(u), strftime(ts, '%Y'), my_macro(x) FROM t GROUP BY ALL"
    assert unknown_aggregate(sqlglot.parse_one(sql, dialect="duckdb")) is None
