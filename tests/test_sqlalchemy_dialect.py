"""The tierflight:// SQLAlchemy dialect (client/tierflight_client/sqlalchemy.py) under SQLAlchemy 2
and pandas 3, against the in-process server; answers checked against DuckDB over the same rows.
(SQLAlchemy 1.4 with pandas 2.1 runs in test_superset.py, in Superset's venv.)"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import registry

from conftest import RunningServer, make_config, start_in_process
from tierflight_client.sqlalchemy import TierflightDialect


def _entry_points() -> list[str]:
    return [ep.value for ep in importlib.metadata.entry_points(group="sqlalchemy.dialects") if ep.name == "tierflight"]


@pytest.fixture(scope="module")
def engine(server: RunningServer) -> Iterator[sa.Engine]:
    if not _entry_points():
        # A venv where tierflight-client is not installed as a distribution (sources on
        # PYTHONPATH): register by hand what the entry point registers.
        registry.register("tierflight", "tierflight_client.sqlalchemy", "TierflightDialect")
    eng = sa.create_engine(server.uri.replace("grpc://", "tierflight://"))
    yield eng
    eng.dispose()


def test_entry_point_registers_the_dialect() -> None:
    if not importlib.metadata.packages_distributions().get("tierflight_client"):
        pytest.skip("tierflight-client is not installed as a distribution here (make install does that)")
    assert _entry_points() == ["tierflight_client.sqlalchemy:TierflightDialect"]
    assert isinstance(sa.create_engine("tierflight://127.0.0.1:1").dialect, TierflightDialect)


def test_reflection_shows_user_tables_and_system_only(engine: sa.Engine, server: RunningServer, flat: Any) -> None:
    inspector = sa.inspect(engine)
    assert inspector.get_schema_names() == ["main", "system"]
    # Exactly the configured tables: the fact table and the dimension tables.
    assert inspector.get_table_names() == sorted([*server.app.config.tables, *server.app.config.dimensions])
    assert inspector.get_table_names(schema="system") == ["partitions", "queries", "rollup_advice", "rollups", "snapshots"]
    assert inspector.has_table("events") and not inspector.has_table("no_such_table")
    columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns("events")]
    # NOT NULL columns reflect as not nullable (the table schema's Arrow fields say so).
    not_null = {c.name for c in server.app.config.tables["events"].columns if not c.nullable}
    assert not_null == {"ts", "type", "auction_id"}
    expected = [(name, kind, name not in not_null) for name, kind in flat.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events' ORDER BY ordinal_position").fetchall()]
    assert columns == expected
    assert inspector.get_pk_constraint("events")["constrained_columns"] == []
    # A dimension table's key is its primary key; the fact table's references are foreign keys.
    assert inspector.get_pk_constraint("advertisers") == {"constrained_columns": ["advertiser_id"], "name": "advertisers_advertiser_id_pkey"}
    assert sorted((k["constrained_columns"], k["referred_table"], k["referred_columns"]) for k in inspector.get_foreign_keys("events")) == [
        (["advertiser_id"], "advertisers", ["advertiser_id"]),
        (["publisher_id"], "publishers", ["publisher_id"]),
    ]
    assert inspector.get_foreign_keys("advertisers") == []
    with pytest.raises(sa.exc.NoSuchTableError):
        inspector.get_pk_constraint("no_such_table")


def test_reflection_hides_internal_storage(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    with engine.connect() as conn:
        # What information_schema lists besides the visible tables (nothing, since the
        # server's catalog queries run on its shadow catalog): the dialect never shows it.
        internal = conn.exec_driver_sql(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name NOT IN ('events', 'advertisers', 'publishers') AND table_schema <> 'system'"
        ).fetchall()
        rollups = {name for (name,) in conn.exec_driver_sql("SELECT name FROM system.rollups").fetchall()}
    visible = {(s, t) for s in inspector.get_schema_names() for t in inspector.get_table_names(schema=s) + inspector.get_view_names(schema=s)}
    assert not visible & set(internal)
    assert not {t for _, t in visible} & rollups
    with pytest.raises(sa.exc.NoSuchTableError):
        inspector.get_columns(next(iter(rollups)))


def test_table_reflection_and_core_select(engine: sa.Engine, flat: Any) -> None:
    with engine.connect() as conn:
        events = sa.Table("events", sa.MetaData(), autoload_with=conn)
        query = (
            sa.select(events.c.type, sa.func.count().label("n"), sa.func.sum(events.c.bid_price).label("bids"))
            .where(events.c.day >= dt.date(2024, 10, 1), events.c.advertiser_id > 100, events.c.type.in_(["impression", "click"]))
            .group_by(events.c.type)
            .order_by(events.c.type)
            .limit(5)
            .offset(1)
        )
        got = [tuple(r) for r in conn.execute(query)]
    expected = flat.execute(
        "SELECT type, count(*), sum(bid_price) FROM events WHERE day >= DATE '2024-10-01' AND advertiser_id > 100 "
        "AND type IN ('impression', 'click') GROUP BY type ORDER BY type LIMIT 5 OFFSET 1"
    ).fetchall()
    assert [r[:2] for r in got] == [r[:2] for r in expected]
    assert [r[2] for r in got] == pytest.approx([r[2] for r in expected])


def test_compiled_sql_is_duckdb(engine: sa.Engine) -> None:
    t = sa.table("events", sa.column("type"), sa.column("day"), sa.column("ts"), sa.column("order"))
    stmt = (
        sa.select(t.c.type, t.c.order)
        .where(t.c.day == dt.date(2024, 10, 1), t.c.ts < dt.datetime(2024, 10, 2, 3, 4, 5), t.c.type.is_not(sa.true()))
        .offset(3)
    )
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    assert "DATE '2024-10-01'" in sql and "TIMESTAMP '2024-10-02 03:04:05'" in sql
    assert "IS NOT true" in sql
    assert "OFFSET 3" in sql and "LIMIT" not in sql  # the generic compiler writes LIMIT -1
    assert '"order"' in sql and "events.type" in sql  # only DuckDB's reserved words are quoted


def test_literal_binds_sql_runs(engine: sa.Engine, flat: Any) -> None:
    t = sa.table("events", sa.column("type"), sa.column("day"), sa.column("ts"))
    stmt = sa.select(sa.func.count()).select_from(t).where(
        t.c.day == dt.date(2024, 10, 1), t.c.ts < dt.datetime(2024, 10, 1, 12), t.c.type == "it's"
    )
    with engine.connect() as conn:
        got = conn.exec_driver_sql(str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))).scalar()
    assert got == 0
    stmt = sa.select(sa.func.count()).select_from(t).where(t.c.day == dt.date(2024, 10, 1), t.c.ts < dt.datetime(2024, 10, 1, 12))
    with engine.connect() as conn:
        got = conn.exec_driver_sql(str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))).scalar()
    assert got == flat.execute("SELECT count(*) FROM events WHERE day = DATE '2024-10-01' AND ts < TIMESTAMP '2024-10-01 12:00:00'").fetchall()[0][0]


PARAMS: list[Any] = [
    "it's ∂",
    2**40,
    -7,
    1.25,
    True,
    False,
    dt.date(2024, 10, 1),
    dt.datetime(2024, 10, 1, 12, 30, 15, 123456),
    None,
    decimal.Decimal("12345.6789"),
]


@pytest.mark.parametrize("value", PARAMS, ids=lambda v: type(v).__name__)
def test_bound_parameter_round_trips_with_its_type(engine: sa.Engine, value: Any) -> None:
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT :v AS v"), {"v": value}).scalar()
    assert got == value and type(got) is type(value)


def test_bound_parameters_filter_like_literals(engine: sa.Engine, flat: Any) -> None:
    sql = (
        "SELECT count(*) FROM events WHERE type = :t AND advertiser_id > :a AND bid_price > :b "
        "AND day >= :d AND ts < :ts AND (:flag OR country IS NULL) AND total_price IS NOT DISTINCT FROM :none"
    )
    params = {"t": "impression", "a": 100, "b": 0.5, "d": dt.date(2024, 10, 1), "ts": dt.datetime(2024, 11, 1), "flag": True, "none": None}
    with engine.connect() as conn:
        got = conn.execute(sa.text(sql), params).scalar()
    expected = flat.execute(
        "SELECT count(*) FROM events WHERE type = 'impression' AND advertiser_id > 100 AND bid_price > 0.5 "
        "AND day >= DATE '2024-10-01' AND ts < TIMESTAMP '2024-11-01' AND total_price IS NULL"
    ).fetchall()[0][0]
    assert got == expected > 0


def test_parameter_in_limit_after_where(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        got = conn.exec_driver_sql("SELECT count(*) FROM events WHERE day >= ? LIMIT ?", (dt.date(2024, 10, 1), 1)).scalar()
    assert got is not None and got > 0


def test_pandas_read_sql_with_params(engine: sa.Engine, flat: Any) -> None:
    expected = flat.execute(
        "SELECT type, count(*) AS n FROM events WHERE type IN ('click', 'purchase') AND day >= DATE '2024-10-01' GROUP BY type ORDER BY type"
    ).fetchall()
    # Plain string: the dialect's paramstyle (qmark), params as a tuple.
    qmark = pd.read_sql(
        "SELECT type, count(*) AS n FROM events WHERE type IN (?, ?) AND day >= ? GROUP BY type ORDER BY type",
        engine,
        params=("click", "purchase", dt.date(2024, 10, 1)),
    )
    # sa.text with named parameters, as pandas documents.
    named = pd.read_sql(
        sa.text("SELECT type, count(*) AS n FROM events WHERE type IN (:a, :b) AND day >= :d GROUP BY type ORDER BY type"),
        engine,
        params={"a": "click", "b": "purchase", "d": dt.date(2024, 10, 1)},
    )
    for frame in (qmark, named):
        assert [tuple(r) for r in frame.itertuples(index=False)] == expected
        assert str(frame["n"].dtype) == "int64"


def test_pandas_read_sql_table(engine: sa.Engine, flat: Any) -> None:
    frame = pd.read_sql_table("events", engine, columns=["ts", "day", "bid_price"])
    assert len(frame) == flat.execute("SELECT count(*) FROM events").fetchall()[0][0]
    # Reflected types drive pandas' conversions: TIMESTAMP and DATE become datetimes.
    assert [str(t)[:10] for t in frame.dtypes] == ["datetime64", "datetime64", "float64"]


def test_pandas_read_sql_table_with_schema(engine: sa.Engine) -> None:
    # SQLAlchemy qualifies each column with schema and table: SELECT system.rollups.name FROM system.rollups
    frame = pd.read_sql_table("rollups", engine, schema="system")
    assert "name" in frame.columns and len(frame) > 0


def test_server_errors_reach_sqlalchemy(engine: sa.Engine) -> None:
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="no_such_table"):
        conn.exec_driver_sql("SELECT * FROM no_such_table")
    # The connection is still usable afterwards.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_url_options() -> None:
    dialect = TierflightDialect()
    args, kwargs = dialect.create_connect_args(sa.engine.make_url("tierflight://alice:s%40cret@db.example:4000/?tls=true&timeout=5"))
    assert args == ["grpc+tls://db.example:4000"]
    assert kwargs["autocommit"] is True
    assert kwargs["db_kwargs"]["username"] == "alice" and kwargs["db_kwargs"]["password"] == "s@cret"
    assert kwargs["db_kwargs"]["adbc.flight.sql.rpc.timeout_seconds.query"] == "5.0"
    args, kwargs = dialect.create_connect_args(sa.engine.make_url("tierflight://h?token=abc&tls_skip_verify=1"))
    assert args == ["grpc://h:31337"]
    assert kwargs["db_kwargs"]["adbc.flight.sql.authorization_header"] == "Bearer abc"
    assert kwargs["db_kwargs"]["adbc.flight.sql.client_option.tls_skip_verify"] == "true"
    for bad, message in [
        ("tierflight://h:1?insecure=true", "unknown tierflight URL option"),
        ("tierflight://h:1?tls=maybe", "expected true or false"),
        ("tierflight://h:1?timeout=-1", "timeout must be positive"),
        ("tierflight://u:p@h:1?token=t", "either user/password or token"),
        ("tierflight:///", "needs a host"),
    ]:
        with pytest.raises(sa.exc.ArgumentError, match=message):
            dialect.create_connect_args(sa.engine.make_url(bad))


TOKEN = "dialect-token-" + "y" * 24


@pytest.fixture(scope="module")
def auth_server(data_dir: Path) -> Iterator[RunningServer]:
    from tierflight.protocol.auth import hash_password

    config = make_config(
        data_dir,
        auth={
            "users": {
                "alice": {"password_hash": hash_password("p@ss:w/rd", 1_000), "permissions": ["read"]},
                "bot": {"permissions": ["read"]},
            },
            "tokens": {TOKEN: "bot"},
        },
    )
    running = start_in_process(config)
    yield running
    running.server.shutdown()
    running.app.close()


def test_credentials_in_the_url(engine: sa.Engine, auth_server: RunningServer) -> None:
    hostport = auth_server.uri.removeprefix("grpc://")
    for url in (f"tierflight://alice:p%40ss%3Aw%2Frd@{hostport}", f"tierflight://{hostport}?token={TOKEN}"):
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) > 0 FROM events").scalar() is True
        eng.dispose()
    for url in (f"tierflight://alice:wrong@{hostport}", f"tierflight://{hostport}"):
        eng = sa.create_engine(url)
        with pytest.raises(sa.exc.DBAPIError, match="UNAUTHENTICATED"), eng.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
        eng.dispose()
