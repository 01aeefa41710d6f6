"""How rollups are stored: exact decimal sums, sketch precision, row order, and their config."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import datasketches
import pyarrow as pa
import pytest
import sqlglot
from tierflight.core.config import load_config
from tierflight.core.errors import ConfigError

from conftest import CONFIG, RunningServer, make_config
from test_rollups import _kept
from tierflight.rollups.definition import Measure, StorageGroup, exact_sum_sql, parse_rollups, storage_groups


def _exact_sums_sql(state: Any, source: str) -> str | None:
    """The rollup's decimal sums computed directly, exactly (DECIMAL arithmetic), per group."""
    from tierflight.rollups.definition import dimension_expr

    g = state.group
    sums = [m for m in g.measures if m.kind == "sum" and g.sum_digits(m.column) is not None]
    if not sums:
        return None
    dims = [f"{dimension_expr(d, 'ts')} AS {d}" for d in g.dimensions]
    exact = [f"{exact_sum_sql(m.column, g.sum_digits(m.column), width=38)} AS {m.state}" for m in sums]
    group_by = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    return f"SELECT {', '.join(dims + exact)} FROM {source} {_kept(state)} {group_by}"


def _assert_sums_exact(app: Any, oracle: Any, source: str = "events") -> int:
    """Every stored decimal sum state, merged per key, equals the exact sum bit for bit (no
    tolerance: a DOUBLE sum of the same rows would differ in the last bits)."""
    checked = 0
    for state in app.rollups.states.values():
        sql = _exact_sums_sql(state, source)
        if sql is None:
            continue
        g = state.group
        sums = [m for m in g.measures if m.kind == "sum" and g.sum_digits(m.column) is not None]
        keys = ", ".join(g.dimensions)
        merged = ", ".join(f"{exact_sum_sql(m.state, g.sum_digits(m.column), width=38)} AS {m.state}" for m in sums)
        cur = app.database.cursor()
        try:
            stored = cur.sql(
                f"SELECT {keys + ', ' if keys else ''}{merged} FROM {state.qualified} {'GROUP BY ' + keys if keys else ''}"
            ).fetchall()
        finally:
            cur.close()
        n = len(g.dimensions)
        got = {tuple(r[:n]): r[n:] for r in stored}
        want = {tuple(r[:n]): r[n:] for r in oracle.sql(sql).fetchall()}
        assert got.keys() == want.keys(), g.name
        for key, values in want.items():
            assert got[key] == values, (g.name, key, got[key], values)
        checked += 1
    return checked


def test_decimal_sums_are_exact_in_every_rollup(server: RunningServer, flat: Any) -> None:
    assert _assert_sums_exact(server.app, flat) >= 8


def test_decimal_sums_are_stored_exactly_not_as_double_sums(server: RunningServer, flat: Any) -> None:
    # The mutation this guards against: states summed as DOUBLE. On this data some group's
    # DOUBLE sum differs from its exact decimal sum, so the exact check above can fail.
    differs = flat.sql(
        "SELECT count(*) FROM (SELECT day, sum(bid_price) AS d, CAST(sum(CAST(bid_price AS DECIMAL(38, 4))) AS DOUBLE) AS e "
        "FROM events GROUP BY day) WHERE d <> e"
    ).fetchall()[0][0]
    assert differs > 0


@pytest.mark.needs_server  # a data set of its own
def test_ingested_and_compacted_sums_stay_exact(tmp_path: Path) -> None:
    from conftest import load_demo, start_in_process
    from test_ingest import _oracle, _rows

    cfg = make_config(tmp_path)
    load_demo(cfg, 20_000, dt.date(2024, 9, 20), 30, 5)  # cold and warm, as test_ingest
    running = start_in_process(make_config(tmp_path))
    try:
        batches = [_rows(3_000, dt.datetime(2024, 12, 31, h), seed=h) for h in (1, 2, 3)]
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            for b in batches:
                cur.adbc_ingest("events", b, mode="append")
        oracle = _oracle(tmp_path, batches)
        assert _assert_sums_exact(running.app, oracle) >= 8  # build states + appended deltas
        running.app.rollups.snapshot("events")  # compaction merges the deltas in DuckDB
        assert _assert_sums_exact(running.app, oracle) >= 8
    finally:
        running.server.shutdown()
        running.app.close()


@pytest.mark.needs_server  # a data set of its own
def test_a_build_refuses_data_with_more_digits_than_declared(tmp_path: Path) -> None:
    from conftest import load_demo
    from tierflight.app import App

    load_demo(make_config(tmp_path), 5_000, dt.date(2024, 9, 20), 30, 4)
    shutil.rmtree(tmp_path / "rollups", ignore_errors=True)
    # The demo's bid prices have 4 digits after the point: declaring 2 does not fit them.
    cfg = make_config(tmp_path, **{"tables.events.decimals": {"bid_price": 2, "total_price": 2}})
    app = App(cfg)
    try:
        failed = [s for s in app.rollups.states.values() if s.status == "failed"]
        assert failed, "a build over rows that break the declared digits must not produce rollups"
        assert all("bid_price" in (s.error or "") and "decimals" in (s.error or "") for s in failed)
        assert not app.rollups.usable("events")
        # Statements still answer, from the raw tiers.
        route = app.router.plan(_statement("SELECT day, sum(bid_price) FROM events GROUP BY day"))
        assert route.rollup is None
    finally:
        app.close()


def _statement(sql: str) -> Any:
    from tierflight.engine.sandbox import check_statement

    return check_statement(sql)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (1.23456, "bid_price = 1.23456 is not a decimal with at most 4 digits"),
        (float("nan"), "bid_price = nan"),
        (1e15, "bid_price = 1000000000000000.0"),
    ],
)
def test_ingest_refuses_values_with_more_digits_than_declared(server: RunningServer, value: float, needle: str) -> None:
    from test_ingest import _rows

    table = _rows(8, dt.datetime(2024, 12, 31, 9))
    rows = table.to_pylist()
    rows[5]["bid_price"] = value
    with fsql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        before = cur.fetchall()[0][0]
        with pytest.raises(Exception) as err:
            cur.adbc_ingest("events", pa.Table.from_pylist(rows, schema=table.schema), mode="append")
        message = str(err.value)
        assert "row 5" in message and needle in message and "nothing was written" in message, message
        assert "Traceback" not in message
        cur.execute("SELECT count(*) FROM events")
        assert cur.fetchall()[0][0] == before


def test_rows_are_stored_in_the_configured_order(server: RunningServer) -> None:
    state = server.app.rollups.states["day_advertiser_type"]
    assert state.group.stored_order == ["type", "advertiser_id", "day"]
    cur = server.app.database.cursor()
    try:
        rows = cur.sql(f"SELECT type, advertiser_id, day FROM {state.qualified} ORDER BY rowid").fetchall()
    finally:
        cur.close()
    assert len(rows) > 1000 and rows == sorted(rows)
    # The default keeps time first.
    assert server.app.rollups.states["day_type"].group.stored_order == ["day", "type"]


def test_sketch_precision_follows_the_measure(server: RunningServer) -> None:
    from tierflight.rollups.hll import merge_estimate

    state = server.app.rollups.states["day_country_users"]
    cur = server.app.database.cursor()
    try:
        blobs = [r[0] for r in cur.sql(f"SELECT hll__user_id FROM {state.qualified} LIMIT 5").fetchall()]
    finally:
        cur.close()
    sketches = [datasketches.hll_sketch.deserialize(b) for b in blobs]
    assert {s.lg_config_k for s in sketches} == {10}
    union = datasketches.hll_union(10)
    for s in sketches:
        union.update(s)
    # The DuckDB function reads lg_k off the sketches: the same union, not a coarser one.
    (got,) = merge_estimate(pa.array([blobs], pa.list_(pa.binary()))).to_pylist()
    assert got == union.get_result().get_estimate()


@pytest.mark.parametrize(
    ("decimals", "message"),
    [
        ({"nope": 2}, "names unknown column 'nope'"),
        ({"n": 2}, "the column is BIGINT, not DOUBLE"),
        ({"price": 12}, "must be a whole number of digits from 0 to 9"),
        ({"price": "2"}, "must be a whole number of digits"),
        ([2], "must map DOUBLE columns to digits"),
    ],
)
def test_bad_decimals_are_refused_with_the_key(tmp_path: Path, decimals: Any, message: str) -> None:
    path = _write_config(tmp_path, f"decimals = {_toml(decimals)}\n", [])
    with pytest.raises(ConfigError, match="decimals") as err:
        load_config(path, environ={})
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("rollup", "message"),
    [
        ('dimensions = ["day", "k"]\nmeasures = ["hll(n, 3)"]', "lg_k must be a whole number from 4 to 21"),
        ('dimensions = ["day", "k"]\nmeasures = ["hll(n, x)"]', "lg_k must be a whole number"),
        ('dimensions = ["day", "k"]\nmeasures = ["sum(price, 10)"]', "only hll(col, lg_k) takes a second argument"),
        ('dimensions = ["day", "k"]\nmeasures = ["count"]\norder = ["hour"]', "name each of the rollup's dimensions"),
        ('dimensions = ["day", "k"]\nmeasures = ["count"]\norder = ["k", "k"]', "at most once"),
        ('dimensions = ["day", "k"]\nmeasures = ["count"]\norder = "k"', "must be a list"),
    ],
)
def test_bad_rollup_storage_settings_are_refused(tmp_path: Path, rollup: str, message: str) -> None:
    path = _write_config(tmp_path, "", [f'name = "r"\n{rollup}'])
    with pytest.raises(ConfigError, match="rollups") as err:
        # A value of the wrong type (order = "k") is refused as the file loads, the rest as
        # the rollups are defined.
        storage_groups(parse_rollups(load_config(path, environ={}).tables["t"]))
    assert message in str(err.value)


def test_measures_and_storage_settings_parse(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path,
        "decimals = { price = 2 }\n",
        [
            'name = "a"\ndimensions = ["day", "k"]\nmeasures = ["sum(price)", "hll(n, 10)", "sum(n)"]\norder = ["k"]',
            'name = "b"\ndimensions = ["k"]\nmeasures = ["hll(n, 12)", "min(price)"]',
        ],
    )
    config = load_config(path, environ={})
    a, b = parse_rollups(config.tables["t"])
    assert Measure("hll", "n", 10) in a.measures and a.digits == (("price", 2),)
    assert Measure("hll", "n") in b.measures  # 12 is the default lg_k
    assert b.digits == ()  # min is no sum: nothing to keep exact
    (ga,) = [g for g in storage_groups([a, b]) if g.name == "a"]
    assert ga.stored_order == ["k", "day"] and ga.sum_digits("price") == 2 and ga.sum_digits("n") is None
    assert [m.label() for m in ga.measures if m.kind == "hll"] == ["hll(n, 10)"]


def test_rollups_sharing_a_copy_must_agree_on_lg_k(tmp_path: Path) -> None:
    path = _write_config(
        tmp_path,
        "",
        [
            'name = "a"\ndimensions = ["day"]\nmeasures = ["hll(n, 10)"]',
            'name = "b"\ndimensions = ["day"]\nmeasures = ["hll(n, 11)"]',
        ],
    )
    config = load_config(path, environ={})
    with pytest.raises(ConfigError, match="give them the same lg_k"):
        storage_groups(parse_rollups(config.tables["t"]))


def test_storage_settings_change_the_definition_hash() -> None:
    base = StorageGroup("g", "t", ("day", "k"), (Measure("count"),), None, None, ("g",))
    ordered = StorageGroup("g", "t", ("day", "k"), (Measure("count"),), None, None, ("g",), order=("k",))
    exact = StorageGroup("g", "t", ("day", "k"), (Measure("count"),), None, None, ("g",), digits=(("p", 2),))
    assert len({base.definition_hash(), ordered.definition_hash(), exact.definition_hash()}) == 3


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _write_config(tmp_path: Path, table_extra: str, rollups: list[str]) -> Path:
    text = (
        '[tables.t]\ntime_column = "ts"\n' + table_extra
        + '[tables.t.columns]\nts = "TIMESTAMP"\nprice = "DOUBLE"\nn = "BIGINT"\nk = "VARCHAR"\n'
        + '[tables.t.derived]\nday = "CAST(ts AS DATE)"\nhour = "date_trunc(\'hour\', ts)"\n'
        + "".join(f"[[tables.t.rollups]]\n{r}\n" for r in rollups)
    )
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def test_demo_config_parses() -> None:
    # The shipped config uses every setting above.
    config = load_config(CONFIG, environ={})
    table = config.tables["events"]
    assert table.decimals == {"bid_price": 4, "total_price": 2}
    groups = {g.name: g for g in storage_groups(parse_rollups(table))}
    assert groups["day_advertiser_type"].retention == dt.timedelta(days=90)
    assert groups["day_advertiser_type"].stored_order == ["type", "advertiser_id", "day"]


_INFO_GRAINS = {"day": "day", "week": "week", "hour": "hour", "minute": "minute"}


def _coarse(sql: str, grain: str) -> str | None:
    from tierflight.router.rules import TableInfo, coarse_time_predicate

    info = TableInfo("events", "ts", {}, _INFO_GRAINS, frozenset({"ts", "type"}))
    group = StorageGroup("g", "events", (grain, "type"), (Measure("count"),), None, None, ("g",))
    pred = sqlglot.parse_one(f"SELECT 1 WHERE {sql}", read="duckdb").args["where"].this
    out = coarse_time_predicate(pred, info, group)
    return None if out is None else out.sql(dialect="duckdb")


@pytest.mark.parametrize(
    ("sql", "grain", "expected"),
    [
        ("day BETWEEN DATE '2024-07-01' AND DATE '2024-07-31'", "month",
         "month >= CAST('2024-07-01' AS DATE) AND month < CAST('2024-08-01' AS DATE)"),
        ("day >= DATE '2024-07-01'", "month", "month >= CAST('2024-07-01' AS DATE)"),
        ("day > DATE '2024-06-30'", "month", "month >= CAST('2024-07-01' AS DATE)"),
        ("day < DATE '2024-08-01'", "month", "month < CAST('2024-08-01' AS DATE)"),
        ("day <= DATE '2024-07-31'", "month", "month < CAST('2024-08-01' AS DATE)"),
        ("hour >= TIMESTAMP '2024-07-01 00:00:00'", "day", "day >= CAST('2024-07-01' AS DATE)"),
        ("hour < TIMESTAMP '2024-07-01 23:30:00'", "day", "day < CAST('2024-07-02' AS DATE)"),
        ("day = DATE '2024-07-01'", "day", None),  # the rollup's own grain: the usual rewrite
        ("type = 'click'", "month", None),
        ("ts >= TIMESTAMP '2024-07-01'", "month", None),  # the raw column: time_predicate's rule
    ],
)
def test_coarse_time_predicates_become_bucket_ranges(sql: str, grain: str, expected: str | None) -> None:
    assert _coarse(sql, grain) == expected


@pytest.mark.parametrize(
    ("sql", "grain"),
    [
        ("day BETWEEN DATE '2024-07-01' AND DATE '2024-07-30'", "month"),
        ("day >= DATE '2024-07-02'", "month"),
        ("week < DATE '2024-07-08'", "month"),  # weeks end inside months
        ("minute = TIMESTAMP '2024-07-01 10:00:00'", "hour"),  # one minute is not a whole hour
    ],
)
def test_unaligned_coarse_ranges_are_rejected(sql: str, grain: str) -> None:
    from tierflight.router.rules import Reject

    with pytest.raises(Reject, match=f"does not select whole {grain}s") as err:
        _coarse(sql, grain)
    assert err.value.rule == "alignment"
