"""Joined rollups (router/joined.py): the statement over the joined rows gives the flat join's
answer, names and types, checked in DuckDB over small tables that hold what breaks groupings
(dimension rows missing for some keys, NULL attributes and measures, several dimensions); and
the joins it must leave alone."""

from __future__ import annotations

import random

import duckdb
import pytest

from tierflight.router.joined import MARKER, derive

R = "tf_rollup.main.r"
A = "tf_dimension.main.adv"
P = "tf_dimension.main.pub"


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("ATTACH ':memory:' AS tf_rollup")
    c.execute("ATTACH ':memory:' AS tf_dimension")
    c.execute(
        f"CREATE TABLE {R} (day DATE, k INTEGER, p INTEGER, type VARCHAR, _count BIGINT, s DOUBLE, d DECIMAL(18, 2), hi DOUBLE)"
    )
    rng = random.Random(5)
    rows = []
    for day in range(20):
        for k in range(1, 30):
            for t in ("click", "view", None):
                if rng.random() < 0.6:
                    s = None if rng.random() < 0.1 else round(rng.uniform(0, 10), 3)
                    rows.append((day, k, rng.randrange(1, 8), t, rng.randrange(1, 50), s, rng.randrange(0, 10**6) / 100, s))
    c.executemany(f"INSERT INTO {R} VALUES (DATE '2024-01-01' + ?::INTEGER, ?, ?, ?, ?, ?, ?, ?)", rows)
    c.execute(f"CREATE TABLE {A} (k INTEGER, name VARCHAR, vertical VARCHAR)")
    # Keys 25..29 have no advertiser row (an inner join drops them, a left join keeps NULLs).
    c.executemany(f"INSERT INTO {A} VALUES (?, ?, ?)", [(k, f"adv {k}", None if k % 7 == 0 else f"v{k % 4}") for k in range(1, 25)])
    c.execute(f"CREATE TABLE {P} (p INTEGER, category VARCHAR)")
    c.executemany(f"INSERT INTO {P} VALUES (?, ?)", [(p, f"c{p % 3}") for p in range(1, 7)])
    return c


COUNT = "COALESCE(CAST(SUM(COALESCE(CAST(e._count AS BIGINT), 0)) AS BIGINT), 0)"

DERIVED = [
    f'SELECT a.vertical AS "v", SUM(e.s) AS "s", {COUNT} AS "n" FROM {R} AS e JOIN {A} AS a ON e.k = a.k '
    "WHERE e.type = 'click' GROUP BY 1 ORDER BY 1",
    f'SELECT a.vertical AS "v", e.type AS "t", MIN(a.name) AS "lo", MAX(e.hi) AS "hi", COUNT(DISTINCT a.name) AS "names", '
    f'{COUNT} AS "n" FROM {R} AS e LEFT JOIN {A} AS a ON e.k = a.k GROUP BY ALL ORDER BY ALL',
    f'SELECT a.vertical AS "v", p.category AS "c", SUM(e.d) AS "d", SUM(e.s) / CAST({COUNT} AS DOUBLE) AS "avg" '
    f"FROM {R} AS e JOIN {A} AS a ON e.k = a.k LEFT JOIN {P} AS p ON e.p = p.p GROUP BY 1, 2",
    f'SELECT a.vertical AS "v", SUM(e.s) AS "s" FROM {R} AS e, {A} AS a WHERE e.type <> \'view\' AND e.k = a.k GROUP BY a.vertical',
    f'SELECT p.category AS "c", {COUNT} AS "n" FROM {R} AS e JOIN {P} AS p USING (p) GROUP BY p.category',
    f'SELECT a.name AS "name", SUM(e.s) AS "spend" FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE a.vertical = \'v1\' '
    f"GROUP BY a.name HAVING SUM(e.s) > 5 ORDER BY spend DESC, SUM(e.s), a.name LIMIT 3",
    f"SELECT CAST(DATE_TRUNC('WEEK', CAST(e.day AS TIMESTAMP)) AS DATE) AS \"week\", a.vertical AS \"vertical\", "
    f'SUM(e.s) AS "s" FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE e.day BETWEEN CAST(\'2024-01-03\' AS DATE) '
    "AND CAST('2024-01-15' AS DATE) GROUP BY 1, 2 ORDER BY 1, 3 DESC",
    f'SELECT e.k, COUNT(DISTINCT e.type) AS "types", SUM(CASE WHEN a.name IS NOT NULL THEN e._count END) AS "named" FROM {R} AS e '
    f"LEFT JOIN {A} AS a ON e.k = a.k WHERE e.k > 20 GROUP BY e.k",
    f'SELECT SUM(e.s) AS "s", MAX(a.vertical) AS "top" FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE a.vertical IS NOT NULL',
    # Output names equal to the derived columns' names, as whole sort keys (bound to the outputs).
    f'SELECT a.vertical AS "tf_g1", e.type AS "tf_g0", SUM(e.s) AS "tf_m0" FROM {R} AS e JOIN {A} AS a ON e.k = a.k '
    "GROUP BY 1, 2 ORDER BY tf_g0 NULLS FIRST, tf_g1 DESC NULLS LAST, tf_m0",
]


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    return con.execute(sql).fetchall()


@pytest.mark.parametrize("sql", DERIVED)
def test_the_joined_rows_answer_as_the_join(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    joined = derive(sql)
    assert joined is not None, sql
    assert joined.source == R
    name = f"tf_rollup.main.j{abs(hash(sql)) % 10**8}"
    con.execute(f"CREATE OR REPLACE TABLE {name} AS {joined.build}")
    outer = joined.outer.replace(MARKER, name)
    assert con.execute(f"DESCRIBE {outer}").fetchall() == con.execute(f"DESCRIBE {sql}").fetchall()
    expected, actual = _rows(con, sql), _rows(con, outer)
    ordered = "ORDER BY" in sql
    if not ordered:
        expected, actual = sorted(expected, key=repr), sorted(actual, key=repr)
    assert len(actual) == len(expected) > 0
    for a, e in zip(actual, expected, strict=True):
        for x, y in zip(a, e, strict=True):
            assert x == y or (isinstance(x, float) and isinstance(y, float) and abs(x - y) <= 1e-9 * max(1.0, abs(y))), (sql, a, e)
    # Fewer rows than the rollup: the joined rows are grouped by what the statement reads.
    held = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0]
    assert held <= con.execute(f"SELECT count(*) FROM {R}").fetchall()[0][0]


def test_statements_reading_the_same_columns_share_one_build() -> None:
    a = derive(f'SELECT a.vertical AS "v", SUM(e.s) AS "s" FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE e.type = \'x\' GROUP BY 1')
    b = derive(f'SELECT SUM(e.s) AS "total", a.vertical AS "v" FROM {R} AS e JOIN {A} AS a ON a.k = e.k WHERE e.type IN (\'y\') GROUP BY 2')
    assert a is not None and b is not None
    assert a.build != b.build  # the ON is written as the statement wrote it
    c = derive(f'SELECT a.vertical AS "v", SUM(e.s) AS "s" FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE e.type = \'z\' GROUP BY 1')
    assert c is not None and c.build == a.build and c.outer != a.outer


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT a.vertical AS v, COUNT(*) AS n FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",  # counts joined rows
        f"SELECT a.vertical AS v, AVG(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(DISTINCT e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) FILTER (WHERE e.type = 'x') AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) AS s, rank() OVER (ORDER BY SUM(e.s)) AS r FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE e.k IN (SELECT 1) GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k WHERE type = 'x' GROUP BY 1",  # unqualified
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e RIGHT JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e LEFT JOIN {A} AS a USING (k) WHERE k > 3 GROUP BY 1",
        f"SELECT a.vertical, SUM(e.s) FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",  # named by its text
        f"SELECT SUM(e.s) AS s FROM {R} AS e",  # no join
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM main.r AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",  # not a rollup
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e, {A} AS a WHERE e.k = a.k OR e.k = 1 GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(SUM(e.s)) OVER () AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"WITH x AS (SELECT 1) SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY ROLLUP (1)",
        "SELECT a.vertical AS v, SUM(e.s) AS s FROM",  # not SQL
        # DuckDB aggregates sqlglot does not know: over the joined rows they weigh each group once.
        f"SELECT e.type AS t, histogram(a.vertical) AS h, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, fsum(e.s) AS f, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
        f"SELECT a.vertical AS v, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1 HAVING product(e.k) > 1",
        # An output name inside a sort expression: DuckDB binds a column first, over the joined
        # rows the derived tf_g1 (e.type), not the output tf_g1 (a.vertical).
        f"SELECT a.vertical AS tf_g1, e.type AS t, SUM(e.s) AS s FROM {R} AS e JOIN {A} AS a ON e.k = a.k "
        "GROUP BY 1, 2 ORDER BY tf_g1 || '', t",
        # The engine puts the table's name in place of the marker's text, wherever it stands.
        f"SELECT a.vertical AS v, SUM(e.s) AS s, '{MARKER}' AS m FROM {R} AS e JOIN {A} AS a ON e.k = a.k GROUP BY 1",
    ],
)
def test_joins_the_joined_rows_cannot_answer_keep_the_join(sql: str) -> None:
    assert derive(sql) is None
