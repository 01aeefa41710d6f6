"""router/flatten.py: a join's fact side merged into the statement only where the answer is the
same as the nested form's (the answers themselves: tests/test_joins.py against DuckDB)."""

from __future__ import annotations

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from tierflight.core.statement import DIALECT
from tierflight.router.flatten import flatten

MARKER = "__tf_join_0"
INNER = (
    'SELECT "advertiser_id" AS "advertiser_id", type AS "_g0", COALESCE(CAST(SUM(_count) AS BIGINT), 0) AS "_m0", '
    'SUM(sum__bid_price) AS "_m1", MIN(min__bid_price) AS "_m2" FROM tf_rollup.main.advertiser_type AS e '
    "WHERE type <> 'view' GROUP BY \"advertiser_id\", type"
)
DIMS = {"a": frozenset({"advertiser_id", "name", "vertical", "type"})}


def _outer(sql: str) -> exp.Select:
    tree = sqlglot.parse_one(sql.replace("FACT", f"({MARKER})"), dialect=DIALECT)
    assert isinstance(tree, exp.Select)
    return tree


def _flat(outer: str, inner: str = INNER, using: frozenset[str] = frozenset()) -> str | None:
    flat = flatten(_outer(outer), inner, "e", DIMS, using)
    return None if flat is None else flat.outer.sql(dialect=DIALECT).replace(MARKER, flat.table)


def test_measures_merged_by_their_own_function_read_the_rollup_rows() -> None:
    sql = _flat(
        "SELECT a.vertical, e._g0 AS t, COALESCE(CAST(SUM(e._m0) AS BIGINT), 0) AS n, SUM(e._m1) AS s, MIN(e._m2) AS lo, "
        "COALESCE(CAST(SUM(CASE WHEN NOT a.name IS NULL THEN e._m0 END) AS BIGINT), 0) AS named "
        "FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id WHERE a.vertical <> 'x' GROUP BY 1, 2"
    )
    assert sql is not None
    assert "FROM tf_rollup.main.advertiser_type AS e JOIN advertisers AS a" in sql
    assert "SUM(e.sum__bid_price)" in sql and "MIN(e.min__bid_price)" in sql and "e.type AS t" in sql
    assert "WHERE e.type <> 'view' AND a.vertical <> 'x'" in sql


def test_a_grouped_alias_is_spelled_out() -> None:
    sql = _flat(
        "SELECT CAST(e._g0 AS VARCHAR) AS wk, a.vertical, SUM(e._m1) AS s FROM FACT AS e JOIN advertisers AS a "
        "ON e.advertiser_id = a.advertiser_id GROUP BY wk, a.vertical ORDER BY wk"
    )
    assert sql is not None and "GROUP BY CAST(e.type AS TEXT), a.vertical ORDER BY wk" in sql


def test_the_flat_form_answers_as_the_nested_one() -> None:
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS tf_rollup")
    con.execute(
        "CREATE TABLE tf_rollup.main.advertiser_type AS SELECT (i % 7)::INTEGER AS advertiser_id, "
        "['click', 'view', 'buy'][i % 3 + 1] AS type, (i % 5)::BIGINT AS _count, "
        "CASE WHEN i % 4 = 0 THEN NULL ELSE i * 0.5 END AS sum__bid_price, i * 0.25 AS min__bid_price FROM range(60) t(i)"
    )
    con.execute("CREATE TABLE advertisers AS SELECT i::INTEGER AS advertiser_id, 'n' || i AS name, "
                "['A', 'B'][i % 2 + 1] AS vertical, 'x' AS type FROM range(5) t(i)")  # fmt: skip
    outer = (
        "SELECT a.vertical, e._g0 AS t, COALESCE(CAST(SUM(e._m0) AS BIGINT), 0) AS n, SUM(e._m1) AS s, MIN(e._m2) AS lo, "
        "COUNT(DISTINCT e.advertiser_id) AS ids FROM FACT AS e LEFT JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    flat = _flat(outer)
    assert flat is not None
    nested = outer.replace("FACT", f"({INNER})")
    assert con.sql(flat).fetchall() == con.sql(nested).fetchall()


@pytest.mark.parametrize(
    ("outer", "inner", "using"),
    [
        # A sum of partial sums merged by another function: the groups' values, not the rows'.
        ("SELECT a.vertical, MAX(e._m1) FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id GROUP BY 1", INNER, ()),
        # A fact expression summed: counted once per group in the nested form.
        ("SELECT a.vertical, SUM(e._g0) FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id GROUP BY 1", INNER, ()),
        # A measure read outside its merge.
        ("SELECT a.vertical, e._m1 FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id", INNER, ()),
        # A select-list alias outside GROUP BY and ORDER BY: a rollup column could capture it.
        ("SELECT a.vertical AS v, SUM(e._m1) AS s FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id "
         "GROUP BY 1 HAVING s > 1", INNER, ()),
        # A fact side with raw edges (a union) or over no rollup table.
        ("SELECT a.vertical, SUM(e._m1) FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id GROUP BY 1",
         f"SELECT * FROM ({INNER}) UNION ALL SELECT 1, 'x', 1, 1.0, 1.0", ()),
        ("SELECT a.vertical, SUM(e._m1) FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id GROUP BY 1",
         INNER.replace("tf_rollup.main.advertiser_type", "__tf_source_1"), ()),
        # An average or a count the rollup does not keep as a sum.
        ("SELECT a.vertical, SUM(e._m1) FROM FACT AS e JOIN advertisers AS a ON e.advertiser_id = a.advertiser_id GROUP BY 1",
         INNER.replace("SUM(sum__bid_price)", "AVG(bid_price)"), ()),
        # USING a key the rollup spells another way.
        ("SELECT vertical, SUM(e._m1) FROM FACT AS e JOIN advertisers AS a USING (advertiser_id) GROUP BY 1",
         INNER.replace('"advertiser_id" AS "advertiser_id"', 'adv AS "advertiser_id"').replace('GROUP BY "advertiser_id"', "GROUP BY adv"),
         ("advertiser_id",)),
    ],
)  # fmt: skip
def test_the_nested_form_stays_where_the_rows_would_answer_otherwise(outer: str, inner: str, using: tuple[str, ...]) -> None:
    assert _flat(outer, inner, frozenset(using)) is None
