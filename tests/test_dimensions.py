"""Dimension tables through a server: joins against DuckDB over flat copies, ADBC replace and
append with their refusals, the metadata RPCs, durability across restarts and kill -9."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import RunningServer, load_demo, make_config, start_in_process, start_subprocess
from differential import assert_same
from flightsql_helpers import cmd_descriptor, read_all
from tierflight.protocol import flightsql_pb2 as pb
from tierflight.tiers.dimension import DimensionStore

JOINS = [
    "SELECT a.vertical, count(*) AS n, sum(e.bid_price) AS spend FROM events e JOIN advertisers a "
    "ON e.advertiser_id = a.advertiser_id GROUP BY a.vertical",
    "SELECT vertical, type, count(*) AS n FROM events JOIN advertisers USING (advertiser_id) "
    "WHERE day >= DATE '2024-11-01' GROUP BY ALL",
    "SELECT p.category, a.vertical, count(*) AS n FROM events e LEFT JOIN publishers p ON e.publisher_id = p.publisher_id "
    "LEFT JOIN advertisers a ON a.advertiser_id = e.advertiser_id WHERE e.type = 'click' GROUP BY ALL",
    "SELECT p.name, count(*) AS n FROM publishers p LEFT JOIN events e USING (publisher_id) "
    "GROUP BY p.name ORDER BY n DESC, p.name LIMIT 20",
    "SELECT count(*) AS n FROM events e LEFT JOIN advertisers a USING (advertiser_id) WHERE a.advertiser_id IS NULL",
    "SELECT count(*) AS n FROM main.Advertisers",
    "SELECT name, vertical FROM tierflight.main.advertisers WHERE advertiser_id IN (SELECT advertiser_id FROM events "
    "WHERE type = 'purchase' AND day = DATE '2024-11-01')",
]


def _dimension_rows(data_dir: Path, server: RunningServer, name: str) -> pa.Table:
    return DimensionStore(data_dir, server.app.config.dimensions[name], writer=False).current.data


@pytest.mark.parametrize("sql", JOINS)
def test_joins_match_duckdb_over_flat_copies(conn: Any, flat: Any, server: RunningServer, data_dir: Path, sql: str) -> None:
    oracle = flat.cursor()  # the dimensions registered on this cursor only
    for name in ("advertisers", "publishers"):
        oracle.register(name, _dimension_rows(data_dir, server, name))
    with conn.cursor() as cur:
        cur.execute(sql)
        actual = cur.fetch_arrow_table()
    expected = oracle.sql(sql.replace("tierflight.main.", "")).to_arrow_table()  # the oracle's catalog is another
    assert actual.num_rows > 0
    assert_same(actual, expected, sql)


def test_every_id_in_events_has_a_dimension_row(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE a.advertiser_id IS NULL), count(*) FILTER (WHERE p.publisher_id IS NULL), count(*) "
            "FROM events e LEFT JOIN advertisers a USING (advertiser_id) LEFT JOIN publishers p USING (publisher_id)"
        )
        missing_adv, missing_pub, total = cur.fetchall()[0]
    assert (missing_adv, missing_pub) == (0, 0) and total > 0


def test_describe_explain_and_the_shadow_catalog(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("DESCRIBE advertisers")
        assert [(r[0], r[1], r[2]) for r in cur.fetchall()] == [
            ("advertiser_id", "INTEGER", "NO"),
            ("name", "VARCHAR", "YES"),
            ("vertical", "VARCHAR", "YES"),
        ]
        cur.execute("EXPLAIN ROUTE SELECT vertical, count(*) FROM events JOIN advertisers USING (advertiser_id) GROUP BY 1")
        parts = cur.fetchall()
        assert parts[0][:2] == ("dimension", "advertisers: version 1")
        cur.execute(
            "SELECT table_name, constraint_type FROM information_schema.table_constraints "
            "WHERE constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY 1, 2"
        )
        assert cur.fetchall() == [
            ("advertisers", "PRIMARY KEY"),
            ("events", "FOREIGN KEY"),
            ("events", "FOREIGN KEY"),
            ("publishers", "PRIMARY KEY"),
        ]
        cur.execute("SELECT column_name, is_nullable FROM information_schema.columns WHERE table_name = 'publishers'")
        assert cur.fetchall() == [("publisher_id", "NO"), ("name", "YES"), ("category", "YES")]
        with pytest.raises(Exception, match="dimension table"):
            cur.execute("SELECT * FROM advertisers AT (VERSION => 1)")


def test_parameters_compared_with_a_dimension_column_take_its_type(conn: Any) -> None:
    with conn.cursor() as cur:
        sql = "SELECT name FROM Advertisers WHERE advertiser_id = ? AND vertical <> ?"
        assert cur.adbc_prepare(sql) == pa.schema([("parameter_1", pa.int32()), ("parameter_2", pa.string())])
        cur.execute("SELECT advertiser_id, name FROM advertisers ORDER BY advertiser_id LIMIT 1")
        key, name = cur.fetchall()[0]
        cur.execute(sql, parameters=(key, "nothing"))
        assert cur.fetchall() == [(name,)]


def _command(client: flight.FlightClient, cmd: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = read_all(client, client.get_flight_info(cmd_descriptor(cmd))).to_pylist()
    return rows


def test_metadata_rpcs_report_keys_and_references(server: RunningServer, conn: Any) -> None:
    with flight.connect(server.uri) as client:
        tables = _command(client, pb.CommandGetTables(table_types=["TABLE"]))
        assert [(r["db_schema_name"], r["table_name"]) for r in tables] == [
            ("main", "advertisers"),
            ("main", "events"),
            ("main", "publishers"),
        ]
        (pk,) = _command(client, pb.CommandGetPrimaryKeys(table="ADVERTISERS", db_schema="main"))
        assert pk == {
            "catalog_name": "tierflight",
            "db_schema_name": "main",
            "table_name": "advertisers",
            "column_name": "advertiser_id",
            "key_sequence": 1,
            "key_name": "advertisers_advertiser_id_pkey",
        }
        assert _command(client, pb.CommandGetPrimaryKeys(table="events")) == []
        imported = _command(client, pb.CommandGetImportedKeys(table="events"))
        assert [(r["fk_table_name"], r["fk_column_name"], r["pk_table_name"], r["pk_column_name"]) for r in imported] == [
            ("events", "advertiser_id", "advertisers", "advertiser_id"),
            ("events", "publisher_id", "publishers", "publisher_id"),
        ]
        assert _command(client, pb.CommandGetImportedKeys(table="advertisers")) == []
        exported = _command(client, pb.CommandGetExportedKeys(table="publishers"))
        assert [(r["fk_table_name"], r["fk_column_name"], r["pk_column_name"]) for r in exported] == [
            ("events", "publisher_id", "publisher_id")
        ]
        (cross,) = _command(client, pb.CommandGetCrossReference(pk_table="advertisers", fk_table="events"))
        assert (cross["fk_column_name"], cross["pk_key_name"], cross["fk_key_name"]) == (
            "advertiser_id",
            "advertisers_advertiser_id_pkey",
            "events_advertiser_id_advertiser_id_fkey",
        )
        assert _command(client, pb.CommandGetCrossReference(pk_table="events", fk_table="advertisers")) == []
        assert _command(client, pb.CommandGetCrossReference(pk_table="nope", fk_table="events")) == []
    # Through ADBC: listed as tables, the key NOT NULL in the table schema.
    (catalog,) = conn.adbc_get_objects(depth="tables", table_name_filter="%ers").read_all().to_pylist()
    names = [t["table_name"] for s in catalog["catalog_db_schemas"] for t in s["db_schema_tables"] or []]
    assert names == ["advertisers", "publishers"]
    schema = conn.adbc_get_table_schema("advertisers")
    assert [(f.name, f.type, f.nullable) for f in schema] == [
        ("advertiser_id", pa.int32(), False),
        ("name", pa.string(), True),
        ("vertical", pa.string(), True),
    ]


# -- loading through ADBC (a data set of its own: these change the tables) -----------------------


@pytest.fixture()
def fresh(tmp_path: Path) -> Iterator[RunningServer]:
    cfg = make_config(tmp_path)
    load_demo(cfg, 3_000, dt.date(2024, 12, 20), 3, 11)
    running = start_in_process(cfg)
    yield running
    running.server.shutdown()
    running.app.close()


ADV_SQL = "SELECT advertiser_id, name, vertical FROM advertisers ORDER BY advertiser_id"
JOIN_SQL = "SELECT a.vertical, count(*) AS n FROM events e JOIN advertisers a USING (advertiser_id) GROUP BY 1 ORDER BY 1"


def _advertisers(ids: list[Any], vertical: str = "Test") -> pa.Table:
    return pa.table(
        {
            "advertiser_id": pa.array(ids, pa.int32()),
            "name": [f"adv {i}" for i in ids],
            "vertical": [vertical] * len(ids),
        }
    )


def _fetch(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()]


@pytest.mark.needs_server
def test_a_cached_answer_never_outlives_the_dimension_version_it_read(fresh: RunningServer) -> None:
    """Dimension versions are DuckDB tables named by the route (nothing registered per
    statement), so joins and dimension reads are reused from the result cache; a replace
    must make the next statement read the new version, never the cached answer."""
    app = fresh.app
    plain = "SELECT vertical, count(*) AS n FROM advertisers GROUP BY 1 ORDER BY 1"
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        ids = [r[0] for r in _fetch(cur, "SELECT advertiser_id FROM advertisers")]
        cur.adbc_ingest("advertisers", _advertisers(ids, "Before"), mode="replace")
        total = sum(n for _, n in _fetch(cur, JOIN_SQL))
        assert _fetch(cur, JOIN_SQL) == [("Before", total)]
        hits = app.executor.results.hits
        assert _fetch(cur, plain) == [("Before", len(ids))] and _fetch(cur, plain) == [("Before", len(ids))]
        assert app.executor.results.hits > hits  # the second answer was reused
        # The join names the version's table (this data set's hot tail is registered: its
        # answers are not reused, whatever the dimension tables).
        relation = app.dimensions["advertisers"].current.relation
        route = app.router.plan(_statement(JOIN_SQL))
        assert relation is not None and relation in route.sql
        assert all("vertical" not in getattr(obj, "schema", pa.schema([])).names for _, obj in route.registrations)
        assert cur.adbc_ingest("advertisers", _advertisers(ids, "After"), mode="replace") == len(ids)
        assert _fetch(cur, JOIN_SQL) == [("After", total)]
        assert _fetch(cur, plain) == [("After", len(ids))]
        # The old version's table is gone: only each table's served version is held.
        held = {r[0] for r in app.database.query_internal("SELECT table_name FROM duckdb_tables() WHERE database_name = 'tf_dimension'")}
        served = {d.current.relation.rsplit(".", 1)[-1].strip('"') for d in app.dimensions.values() if d.current.relation}
        assert held == served


def _statement(sql: str) -> Any:
    from tierflight.engine.sandbox import check_statement

    return check_statement(sql)


@pytest.mark.needs_server
def test_replace_and_append_through_adbc(fresh: RunningServer) -> None:
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        before = _fetch(cur, JOIN_SQL)
        assert len(before) > 1
        ids = [r[0] for r in _fetch(cur, "SELECT advertiser_id FROM advertisers")]
        # Replace: every advertiser in one vertical; the cached plan of the join sees it at once.
        assert cur.adbc_ingest("advertisers", _advertisers(ids, "One"), mode="replace") == len(ids)
        total = sum(n for _, n in before)
        assert _fetch(cur, JOIN_SQL) == [("One", total)]
        # Append new keys (widened types accepted, as for fact tables: int16 into INTEGER).
        extra = _advertisers([1, 2]).set_column(0, "advertiser_id", pa.array([1, 2], pa.int16()))
        assert cur.adbc_ingest("ADVERTISERS", extra, mode="append") == 2
        assert _fetch(cur, "SELECT count(*) FROM advertisers") == [(len(ids) + 2,)]
        # create_append appends too; create is refused (the configured table exists).
        assert cur.adbc_ingest("advertisers", _advertisers([3]), mode="create_append") == 1
        with pytest.raises(Exception, match=r"exists .*use mode='replace'"):
            cur.adbc_ingest("advertisers", _advertisers([4]), mode="create")
        assert fresh.app.dimensions["advertisers"].current.version == 4


@pytest.mark.needs_server
@pytest.mark.parametrize(
    ("batch", "mode", "needle"),
    [
        (_advertisers([5, 1_000_000, 6]), "append", None),  # a key that is in the table: named below
        (_advertisers([7, 8, 7]), "replace", "key advertiser_id = 7 appears more than once"),
        (_advertisers([9, None]), "append", "column advertiser_id is NOT NULL but row 1 is NULL"),
        (_advertisers([10]).set_column(0, "advertiser_id", pa.array(["10"])), "append", "column advertiser_id is string"),
        (_advertisers([11]).set_column(0, "advertiser_id", pa.array([11], pa.int64())), "replace", "column advertiser_id is int64"),
        (_advertisers([12]).drop(["vertical"]), "replace", "missing column"),
        (_advertisers([13]).append_column("x", pa.array([1])), "append", "unknown column"),
    ],
)
def test_bad_batches_are_refused_and_nothing_changes(fresh: RunningServer, batch: pa.Table, mode: str, needle: str | None) -> None:
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        existing = _fetch(cur, "SELECT min(advertiser_id) FROM advertisers")[0][0]
        if needle is None:
            batch = _advertisers([5, existing, 6])
            needle = f"key advertiser_id = {existing} \\(row 1\\) is already in the table"
        before = _fetch(cur, ADV_SQL)
        version = fresh.app.dimensions["advertisers"].current.version
        with pytest.raises(Exception, match=needle):
            cur.adbc_ingest("advertisers", batch, mode=mode)
        assert _fetch(cur, ADV_SQL) == before
        assert fresh.app.dimensions["advertisers"].current.version == version


@pytest.mark.needs_server
def test_replace_on_the_fact_table_stays_refused(fresh: RunningServer) -> None:
    with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
        batch = _fetch(cur, "SELECT count(*) FROM events")
        with pytest.raises(Exception, match="only mode='append'"):
            cur.adbc_ingest("events", pa.table({"x": [1]}), mode="replace")
        assert _fetch(cur, "SELECT count(*) FROM events") == batch


@pytest.mark.needs_server
def test_a_statement_sees_one_version_while_replaces_run(fresh: RunningServer) -> None:
    """Each replace makes every row's vertical the same value: a statement that saw a mix of
    two versions would count more than one vertical."""
    ids = [r.as_py() for r in fresh.app.dimensions["advertisers"].current.data["advertiser_id"]]
    stop = threading.Event()
    errors: list[BaseException] = []

    def replace_loop() -> None:
        try:
            with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
                i = 0
                while not stop.is_set():
                    cur.adbc_ingest("advertisers", _advertisers(ids, f"v{i}"), mode="replace")
                    i += 1
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=replace_loop)
    thread.start()
    try:
        with fsql.connect(fresh.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("advertisers", _advertisers(ids, "start"), mode="replace")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                rows = _fetch(cur, "SELECT count(DISTINCT a.vertical) FROM advertisers a JOIN advertisers b USING (advertiser_id)")
                assert rows == [(1,)]
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert fresh.app.dimensions["advertisers"].current.version > 3


@pytest.mark.needs_server
def test_loaded_rows_survive_a_restart(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    load_demo(cfg, 1_000, dt.date(2024, 12, 20), 2, 3)
    first = start_in_process(cfg)
    try:
        with fsql.connect(first.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_ingest("publishers", pa.table({"publisher_id": pa.array([1, 2], pa.int32()), "name": ["x", "y"], "category": ["c", None]}), mode="replace")
            cur.adbc_ingest("publishers", pa.table({"publisher_id": pa.array([3], pa.int32()), "name": ["z"], "category": ["d"]}), mode="append")
    finally:
        first.server.shutdown()
        first.app.close()
    second = start_in_process(cfg)
    try:
        with fsql.connect(second.uri, autocommit=True) as conn, conn.cursor() as cur:
            assert _fetch(cur, "SELECT * FROM publishers ORDER BY 1") == [(1, "x", "c"), (2, "y", None), (3, "z", "d")]
    finally:
        second.server.shutdown()
        second.app.close()


@pytest.mark.subprocess
def test_kill_9_during_replaces_serves_the_old_or_the_new_version(tmp_path: Path) -> None:
    """A server killed while replaces run comes back serving one whole version: the last one
    acknowledged, or the one after it (written but not acknowledged), never a mix or nothing."""
    cfg = make_config(tmp_path)
    load_demo(cfg, 1_000, dt.date(2024, 12, 20), 2, 3)
    n = 200_000  # a few MB a version: the kill lands in the middle of writes
    srv = start_subprocess(tmp_path)
    acked: list[int] = []
    try:
        with fsql.connect(srv.uri, autocommit=True) as conn, conn.cursor() as cur:
            ids = pa.array(range(n), pa.int32())

            def version(i: int) -> pa.Table:
                return pa.table({"advertiser_id": ids, "name": pa.array([f"n{i}"] * n), "vertical": pa.array([f"v{i}"] * n)})

            cur.adbc_ingest("advertisers", version(0), mode="replace")
            acked.append(0)
            killer = threading.Timer(0.6, lambda: os.kill(srv.proc.pid, signal.SIGKILL))
            killer.start()
            try:
                for i in range(1, 200):
                    cur.adbc_ingest("advertisers", version(i), mode="replace")
                    acked.append(i)
            except Exception:  # the server was killed under the call
                pass
            killer.join()
    finally:
        if srv.proc.poll() is None:
            os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)
    assert len(acked) >= 1
    srv2 = start_subprocess(tmp_path)
    try:
        with fsql.connect(srv2.uri, autocommit=True) as conn, conn.cursor() as cur:
            rows = _fetch(cur, "SELECT count(*), count(DISTINCT vertical), min(vertical), count(DISTINCT advertiser_id) FROM advertisers")
    finally:
        srv2.proc.terminate()
        srv2.proc.wait(10)
    count, verticals, vertical, distinct = rows[0]
    assert (count, verticals, distinct) == (n, 1, n)
    assert vertical in (f"v{acked[-1]}", f"v{acked[-1] + 1}")
    directory = tmp_path / "advertisers" / "dimension"
    assert len(list(directory.glob("*.arrow"))) == 1  # left-overs of the killed write removed


@pytest.mark.needs_server
def test_first_serve_writes_the_demo_dimensions_and_fills_in_missing_ones(tmp_path: Path) -> None:
    from tierflight.cli import ensure_demo_data

    def ids(data_dir: Path, cfg: Any, name: str) -> set[int]:
        store = DimensionStore(data_dir, cfg.dimensions[name], writer=False)
        return set(store.current.data[str(store.key)].to_pylist())

    # A data dir with nothing: events and both dimension tables, every id covered.
    first = make_config(tmp_path / "a", **{"demo.rows": 2_000, "demo.days": 2, "demo.seed": 4})
    ensure_demo_data(first)
    running = start_in_process(first)
    try:
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            adv = {r[0] for r in _fetch(cur, "SELECT DISTINCT advertiser_id FROM events")}
            pub = {r[0] for r in _fetch(cur, "SELECT DISTINCT publisher_id FROM events")}
    finally:
        running.server.shutdown()
        running.app.close()
    assert adv and adv <= ids(tmp_path / "a", first, "advertisers")
    assert pub and pub <= ids(tmp_path / "a", first, "publishers")
    # Events from before dimension tables existed: the next start adds the dimension rows.
    second = make_config(tmp_path / "b", **{"demo.seed": 6})
    from tierflight.demo.load import generate_into
    from tierflight.tiers.store import TableStore

    generate_into(TableStore(second, second.table("events")), 1_000, dt.date(2024, 12, 1), 2, 6, progress=False)
    assert ids(tmp_path / "b", second, "advertisers") == set()
    ensure_demo_data(second)
    assert len(ids(tmp_path / "b", second, "advertisers")) == 1_600
    version = DimensionStore(tmp_path / "b", second.dimensions["advertisers"], writer=False).current.version
    ensure_demo_data(second)  # loaded once: a later start leaves them alone
    assert DimensionStore(tmp_path / "b", second.dimensions["advertisers"], writer=False).current.version == version


@pytest.mark.needs_server
def test_a_dimension_load_past_max_dimension_bytes_is_refused(tmp_path: Path) -> None:
    probe = make_config(tmp_path)
    load_demo(probe, 1_000, dt.date(2024, 12, 20), 2, 3)
    current = DimensionStore(tmp_path, probe.dimensions["advertisers"], writer=False).current.data.nbytes
    batch = _advertisers(list(range(1, 301)))
    limit = current + batch.nbytes - 1_000  # the batch fits; the table with it does not
    running = start_in_process(make_config(tmp_path, **{"ingest.max_dimension_bytes": limit}))
    try:
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            before = _fetch(cur, ADV_SQL)
            with pytest.raises(fsql.Error, match=r"(?i)resource.exhausted.*the table would hold .*max_dimension_bytes"):
                cur.adbc_ingest("advertisers", batch, mode="append")
            huge = _advertisers(list(range(1, 20_001)), vertical="x" * 200)  # refused while it is read
            with pytest.raises(fsql.Error, match=r"(?i)resource.exhausted.*holds at most .*max_dimension_bytes"):
                cur.adbc_ingest("advertisers", huge, mode="replace")
            assert _fetch(cur, ADV_SQL) == before
            assert cur.adbc_ingest("advertisers", batch, mode="replace") == 300  # alone it fits
    finally:
        running.server.shutdown()
        running.app.close()
