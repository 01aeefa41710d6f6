"""Schema evolution (``[tables.<t>] evolve``): batches that add nullable columns or widen a
type change the table; statements over old and new rows together answer as DuckDB does over
a flat copy where the old rows have NULL, in every tier: hot, after a flush (warm, and cold
for late rows), after a demotion and after a compaction. Refused changes write nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as fsql
import duckdb
import pyarrow as pa
import pytest

from conftest import RunningServer, load_demo, make_config, start_in_process
from differential import assert_same
from test_ingest import _rows

EVOLVE = {"tables.events.evolve": "add_columns"}

QUERIES = [
    "SELECT count(*), count(campaign), count(score), sum(score), min(campaign), max(campaign), "
    "max(advertiser_id), sum(advertiser_id) FROM events",
    "SELECT campaign, count(*) AS n, sum(score) AS s FROM events GROUP BY campaign ORDER BY campaign NULLS FIRST",
    "SELECT type, count(*) FROM events GROUP BY type ORDER BY type",
    "SELECT day, count(*), count(campaign), max(advertiser_id) FROM events GROUP BY day ORDER BY day",
    "SELECT * FROM events WHERE campaign IS NOT NULL ORDER BY ts, auction_id, type",
    "SELECT count(*) FROM events WHERE campaign IS NULL AND ts >= TIMESTAMP '2024-09-25'",
    "SELECT advertiser_id, count(*), sum(bid_price) FROM events GROUP BY 1 ORDER BY 1",
    "SELECT * FROM events WHERE day IN (DATE '2024-09-26', DATE '2024-11-20', DATE '2024-12-30') "
    "ORDER BY ts, auction_id, type",
]
BIG_ID = 3_000_000_000  # past INTEGER: the batch widens advertiser_id to BIGINT


def _query(uri: str, sql: str) -> pa.Table:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def _ingest(uri: str, table: pa.Table) -> int:
    with fsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        return int(cur.adbc_ingest("events", table, mode="append"))


def _new_rows(n: int, start: dt.datetime, seed: int) -> pa.Table:
    """Rows of a newer producer: two new columns, advertiser_id as BIGINT."""
    rows = _rows(n, start, seed=seed)
    ids = pa.array([BIG_ID + i if i % 5 == 0 else i % 50 for i in range(n)], pa.int64())
    rows = rows.set_column(rows.schema.get_field_index("advertiser_id"), "advertiser_id", ids)
    return rows.append_column("campaign", pa.array([f"c{i % 3}" if i % 4 else None for i in range(n)])).append_column(
        "score", pa.array([i / 8 for i in range(n)], pa.float64())
    )


class Oracle:
    """A flat DuckDB copy: the table as it was before any ingest plus each ingested batch,
    old rows with NULL in the new columns (DuckDB's union_by_name)."""

    def __init__(self, before: pa.Table) -> None:
        self.parts = [before]

    def add(self, batch: pa.Table) -> None:
        self.parts.append(batch)

    def query(self, sql: str) -> pa.Table:
        con = duckdb.connect()
        try:
            for i, part in enumerate(self.parts):
                con.register(f"p{i}", part)
            union = " UNION ALL BY NAME ".join(f"SELECT * FROM p{i}" for i in range(len(self.parts)))
            con.execute(
                "CREATE TABLE flat AS SELECT * REPLACE (CAST(advertiser_id AS BIGINT) AS advertiser_id), "
                "CAST(ts AS DATE) AS day, CAST(date_trunc('week', ts) AS DATE) AS week, "
                f"date_trunc('hour', ts) AS hour, date_trunc('minute', ts) AS minute FROM ({union})"
            )
            return con.sql(sql.replace("FROM events", "FROM flat")).to_arrow_table()
        finally:
            con.close()


def _check(running: RunningServer, oracle: Oracle, stage: str) -> None:
    from tierflight.engine.sandbox import check_statement

    for sql in QUERIES:
        assert_same(_query(running.uri, sql), oracle.query(sql), f"[{stage}] {sql}")
    # Rollups keep answering what they hold, widened dimension included.
    for sql in ("SELECT type, count(*) FROM events GROUP BY type", "SELECT advertiser_id, count(*) FROM events GROUP BY 1"):
        assert running.app.router.plan(check_statement(sql)).rollup, f"[{stage}] not from a rollup: {sql}"


@pytest.fixture()
def evolving(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    load_demo(make_config(tmp_path), 2_000, dt.date(2024, 9, 20), 30, 7)
    running = start_in_process(make_config(tmp_path, **EVOLVE))
    yield running, tmp_path
    running.server.shutdown()
    running.app.close()


def test_add_columns_through_every_tier(evolving: tuple[RunningServer, Path]) -> None:
    from tierflight.tiers.maintenance import compact_warm, demote
    from tierflight.tiers.store import TableStore

    running, data_dir = evolving
    uri, app = running.uri, running.app
    store = app.stores["events"]
    oracle = Oracle(_query(uri, "SELECT * EXCLUDE (day, week, hour, minute) FROM events"))
    tiers = {p.tier for p in store.partitions()}
    assert tiers == {"cold", "warm"}

    # Old producers: late rows for a cold day, rows for warm days.
    for start, seed in ((dt.datetime(2024, 9, 26, 1), 1), (dt.datetime(2024, 11, 20, 1), 2), (dt.datetime(2024, 12, 30, 1), 3)):
        batch = _rows(40, start, seed=seed)
        assert _ingest(uri, batch) == 40
        oracle.add(batch)
    # Flushed before the change: files of the old schema in warm (and cold, for the late rows).
    app.ingest_service.flush("events")
    # A newer producer: two new columns and a wider advertiser_id, on the same days.
    for start, seed in ((dt.datetime(2024, 9, 26, 5), 4), (dt.datetime(2024, 11, 20, 5), 5), (dt.datetime(2024, 12, 30, 5), 6)):
        batch = _new_rows(40, start, seed=seed)
        assert _ingest(uri, batch) == 40
        oracle.add(batch)
    # ... and an old producer again, after the change: NULL in the new columns.
    batch = _rows(30, dt.datetime(2024, 12, 30, 9), seed=7)
    assert _ingest(uri, batch) == 30
    oracle.add(batch)

    registry = json.loads((data_dir / "events" / "schema.json").read_text())
    assert registry["version"] == 1
    assert [c["name"] for c in registry["added"]] == ["campaign", "score"]
    assert registry["widened"] == [["advertiser_id", "BIGINT"]]
    assert [f.name for f in store.schema][-2:] == ["campaign", "score"]
    _check(running, oracle, "hot")
    described = {r[0]: r[1] for r in _query(uri, "DESCRIBE events").to_pylist() for r in [tuple(r.values())]}
    assert described["campaign"] == "VARCHAR" and described["score"] == "DOUBLE" and described["advertiser_id"] == "BIGINT"

    app.ingest_service.flush("events")
    assert not store.hot.rows
    cold_schema = store.cold.table().schema()
    assert {"campaign", "score"} <= {f.name for f in cold_schema.fields}
    _check(running, oracle, "flushed")

    # Time travel: a snapshot from before the Iceberg schema evolved has its own columns.
    snaps = _query(uri, "SELECT snapshot_id, is_current FROM system.snapshots WHERE table_name = 'events' ORDER BY committed_at")
    ids = snaps.column("snapshot_id").to_pylist()
    old_cols = _query(uri, f"SELECT * FROM events AT (VERSION => {ids[0]}) LIMIT 0").column_names
    assert "campaign" not in old_cols and "ts" in old_cols and "day" in old_cols
    old_types = _query(uri, f"DESCRIBE SELECT * FROM events AT (VERSION => {ids[0]})").to_pylist()
    assert {r["column_name"]: r["column_type"] for r in old_types}["advertiser_id"] == "INTEGER"
    with pytest.raises(Exception, match="campaign"):
        _query(uri, f"SELECT count(campaign) FROM events AT (VERSION => {ids[0]})")
    at_now = _query(uri, f"SELECT count(*), count(campaign), max(advertiser_id) FROM events AT (VERSION => {ids[-1]})")
    in_cold = oracle.query(
        "SELECT count(*), count(campaign), max(advertiser_id) FROM events WHERE ts < TIMESTAMP '2024-10-03'"
    )
    assert at_now.to_pylist() == in_cold.to_pylist()

    # A demotion run offline at a later clock (as `tierflight tiers demote` next to the server).
    later = make_config(data_dir, **{**EVOLVE, "tiers.now": dt.datetime(2025, 3, 1)})
    demote(TableStore(later, later.table("events")), settle=0)
    store.refresh_if_changed()
    assert any(p.tier == "cold" and p.partition == "day=2024-11-20" for p in store.partitions())
    _check(running, oracle, "demoted")

    stats = compact_warm(store, settle=0)
    assert stats.partitions >= 1
    _check(running, oracle, "compacted")


@pytest.mark.needs_server  # builds its own data set and serves it
def test_restart_replays_evolved_wal(tmp_path: Path) -> None:
    """After a crash the registry is read before the WAL is replayed: the batch's rows keep
    their new columns, and older WAL batches get NULLs."""
    load_demo(make_config(tmp_path), 500, dt.date(2024, 12, 20), 5, 3)
    running = start_in_process(make_config(tmp_path, **EVOLVE))
    oracle = Oracle(_query(running.uri, "SELECT * EXCLUDE (day, week, hour, minute) FROM events"))
    for batch in (_rows(20, dt.datetime(2024, 12, 30, 1), seed=1), _new_rows(20, dt.datetime(2024, 12, 30, 2), seed=2)):
        _ingest(running.uri, batch)
        oracle.add(batch)
    # No flush, no shutdown: what a kill -9 leaves (the WAL and the registry).
    running.server.shutdown()
    restarted = start_in_process(make_config(tmp_path, **EVOLVE))
    try:
        assert restarted.app.stores["events"].hot.rows == 40
        _check(restarted, oracle, "replayed")
    finally:
        restarted.server.shutdown()
        restarted.app.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("evolve-refused")
    load_demo(make_config(root), 500, dt.date(2024, 12, 20), 5, 3)
    running = start_in_process(make_config(root, **EVOLVE))
    yield running, root
    running.server.shutdown()
    running.app.close()


def _refused(running: RunningServer, root: Path, batch: pa.Table, *words: str) -> None:
    count = _query(running.uri, "SELECT count(*) FROM events").column(0)[0].as_py()
    wal = sorted((root / "events" / "wal").glob("*.arrow"))
    with pytest.raises(Exception) as info:
        _ingest(running.uri, batch)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "nothing was written" in message
    assert _query(running.uri, "SELECT count(*) FROM events").column(0)[0].as_py() == count
    assert sorted((root / "events" / "wal").glob("*.arrow")) == wal
    assert not (root / "events" / "schema.json").exists()
    assert [f.name for f in running.app.stores["events"].schema][-1] == "country"


@pytest.mark.parametrize(
    ("case", "words"),
    [
        # A narrower batch type is accepted (cast up losslessly): the table never narrows.
        # What a batch may not do is change a type in a way that loses data.
        ("double_as_bigint", ("bid_price", "int64")),
        ("integer_as_string", ("publisher_id", "string")),
        ("bigint_as_double", ("user_id", "double")),
        ("not_null_missing", ("missing column", "ts")),
        ("untyped_new", ("new column", "extra")),
        ("bad_new_type", ("new column", "extra")),
        ("bad_row_with_new_column", ("ts",)),
        ("case_clash", ("Country", "case")),
        ("internal_name", ("__tf_x",)),
        ("too_many_columns", ("more than 1000 columns",)),
    ],
)
def test_refused_changes_write_nothing(strict: tuple[RunningServer, Path], case: str, words: tuple[str, ...]) -> None:
    running, root = strict
    base = _rows(5, dt.datetime(2024, 12, 30, 3), seed=11)

    def put(column: str, values: pa.Array) -> pa.Table:
        return base.set_column(base.schema.get_field_index(column), column, values)

    if case == "double_as_bigint":
        batch = put("bid_price", pa.array([2**60] * 5, pa.int64()))
    elif case == "integer_as_string":
        batch = put("publisher_id", pa.array(["7"] * 5))
    elif case == "bigint_as_double":
        batch = put("user_id", pa.array([1.5] * 5, pa.float64()))
    elif case == "not_null_missing":
        batch = base.drop_columns(["ts"]).append_column("extra", pa.array(["x"] * 5))
    elif case == "untyped_new":
        batch = base.append_column("extra", pa.nulls(5))
    elif case == "bad_new_type":
        batch = base.append_column("extra", pa.array([[1]] * 5, pa.list_(pa.int64())))
    elif case == "case_clash":
        batch = base.append_column("Country", pa.array(["x"] * 5))
    elif case == "internal_name":
        batch = base.append_column("__tf_x", pa.array(["x"] * 5))
    elif case == "too_many_columns":
        batch = base
        for i in range(1000):
            batch = batch.append_column(f"c{i}", pa.array([1] * 5, pa.int32()))
    else:
        late = pa.array([dt.datetime(2035, 1, 1)] * 5, pa.timestamp("us"))
        batch = put("ts", late).append_column("extra", pa.array(["x"] * 5))
    _refused(running, root, batch, *words)


@pytest.mark.needs_server  # builds its own data set and serves it
def test_failure_between_schema_and_wal_leaves_the_column_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry is written before the WAL: a batch that fails (or a crash) between the two
    leaves its new column added and empty, here and after a restart; its rows are not acked."""
    from tierflight.ingest.wal import WriteAheadLog

    load_demo(make_config(tmp_path), 300, dt.date(2024, 12, 20), 5, 3)
    running = start_in_process(make_config(tmp_path, **EVOLVE))
    count = _query(running.uri, "SELECT count(*) FROM events").column(0)[0].as_py()

    def crash(self: WriteAheadLog, data: pa.Table) -> int:
        raise OSError("disk gone")

    monkeypatch.setattr(WriteAheadLog, "append", crash)
    with pytest.raises(Exception):  # noqa: B017 - whatever status the failed write maps to
        _ingest(running.uri, _new_rows(5, dt.datetime(2024, 12, 30, 1), seed=1))
    monkeypatch.undo()
    seen = _query(running.uri, "SELECT count(*), count(campaign) FROM events").to_pylist()
    assert list(seen[0].values()) == [count, 0]
    running.server.shutdown()
    restarted = start_in_process(make_config(tmp_path, **EVOLVE))
    try:
        seen = _query(restarted.uri, "SELECT count(*), count(campaign) FROM events").to_pylist()
        assert list(seen[0].values()) == [count, 0]
    finally:
        restarted.server.shutdown()
        restarted.app.close()


@pytest.mark.needs_server  # builds its own data set and serves it
def test_evolve_none_refuses_new_column_with_a_hint(tmp_path: Path) -> None:
    load_demo(make_config(tmp_path), 200, dt.date(2024, 12, 20), 5, 3)
    running = start_in_process(make_config(tmp_path))
    try:
        batch = _rows(3, dt.datetime(2024, 12, 30, 3), seed=1).append_column("extra", pa.array(["x"] * 3))
        with pytest.raises(Exception, match=r'unknown column.*extra.*evolve = "none".*add_columns'):
            _ingest(running.uri, batch)
        assert not (tmp_path / "events" / "schema.json").exists()
    finally:
        running.server.shutdown()
        running.app.close()


def test_registry_effective_schema() -> None:
    from tierflight.core.config import ColumnConfig, Evolve, TableConfig
    from tierflight.tiers.evolution import SchemaRegistry, plan_changes

    base = TableConfig("t", (ColumnConfig("ts", "TIMESTAMP", False), ColumnConfig("n", "INTEGER")), "ts", evolve=Evolve.WIDEN)
    wide = pa.schema([("ts", pa.timestamp("us")), ("n", pa.int64()), ("x", pa.string())])
    changes = plan_changes(wide, base)
    assert [c.describe() for c in changes] == ["widen n to BIGINT"]  # widen only: x is refused by validation
    added = plan_changes(wide, dataclasses.replace(base, evolve=Evolve.ADD_COLUMNS))
    eff = SchemaRegistry().with_changes(added).effective(base)
    assert [(c.name, c.type, c.nullable) for c in eff.columns] == [
        ("ts", "TIMESTAMP", False),
        ("n", "BIGINT", True),
        ("x", "VARCHAR", True),
    ]
    assert plan_changes(wide, dataclasses.replace(base, evolve=Evolve.NONE)) == []


def _cli(data_dir: Path, *args: str) -> Any:
    from typer.testing import CliRunner

    from conftest import CONFIG, TEST_NOW
    from tierflight.cli import app
    from tierflight.core.datadir import unlock_data_dir

    env = {"TIERFLIGHT_TIERS__NOW": TEST_NOW.isoformat(), "TIERFLIGHT_TABLES__EVENTS__EVOLVE": "add_columns"}
    try:
        return CliRunner().invoke(app, ["--config", str(CONFIG), "--data-dir", str(data_dir), *args], env=env)
    finally:
        unlock_data_dir(data_dir)


@pytest.mark.needs_server  # builds its own data set and serves it
def test_rename_column_keeps_old_files_readable(tmp_path: Path) -> None:
    """`tables alter ... rename column` offline: files, Iceberg and WAL segments written under
    the old name read under the new one, through a restart, a demotion and a compaction."""
    from tierflight.tiers.maintenance import compact_warm, demote
    from tierflight.tiers.store import TableStore

    load_demo(make_config(tmp_path), 1_000, dt.date(2024, 9, 20), 30, 5)
    running = start_in_process(make_config(tmp_path, **EVOLVE))
    oracle = Oracle(_query(running.uri, "SELECT * EXCLUDE (day, week, hour, minute) FROM events"))
    for start, seed in ((dt.datetime(2024, 9, 26, 5), 1), (dt.datetime(2024, 11, 20, 5), 2), (dt.datetime(2024, 12, 30, 5), 3)):
        batch = _new_rows(30, start, seed=seed)
        _ingest(running.uri, batch)
        oracle.add(batch)
    running.app.ingest_service.flush("events")
    late = _new_rows(10, dt.datetime(2024, 12, 30, 9), seed=4)  # stays in the WAL
    _ingest(running.uri, late)
    oracle.add(late)
    running.server.shutdown()
    running.app.ingest_service.stop()  # no flush: the WAL keeps the last batch

    refused = _cli(tmp_path, "tables", "alter", "events", "rename", "column", "advertiser_id", "to", "adv")
    assert refused.exit_code == 2 and "rollup" in refused.output
    assert _cli(tmp_path, "tables", "alter", "events", "rename", "column", "ts", "to", "t").exit_code == 2
    assert _cli(tmp_path, "tables", "alter", "events", "rename", "column", "score", "to", "Country").exit_code == 2
    assert _cli(tmp_path, "tables", "alter", "events", "drop", "column", "score").exit_code == 2
    done = _cli(tmp_path, "tables", "alter", "events", "rename", "column", "campaign", "to", "campaign_name")
    assert done.exit_code == 0, done.output
    again = _cli(tmp_path, "tables", "alter", "events", "rename", "column", "score", "to", "campaign")
    assert again.exit_code == 2 and "before" in again.output

    oracle.parts = [p.rename_columns(["campaign_name" if n == "campaign" else n for n in p.column_names]) for p in oracle.parts]
    renamed = [q.replace("campaign", "campaign_name") for q in QUERIES]
    restarted = start_in_process(make_config(tmp_path, **EVOLVE))
    try:
        uri = restarted.uri
        fields = {f.name for f in restarted.app.stores["events"].cold.table().schema().fields}
        assert "campaign_name" in fields and "campaign" not in fields
        with pytest.raises(Exception, match="campaign"):
            _ingest(uri, _new_rows(5, dt.datetime(2024, 12, 30, 11), seed=9))  # the former name
        batch = _new_rows(10, dt.datetime(2024, 12, 30, 12), seed=5)
        batch = batch.rename_columns(["campaign_name" if n == "campaign" else n for n in batch.column_names])
        _ingest(uri, batch)
        oracle.add(batch)

        def check(stage: str) -> None:
            for sql in renamed:
                assert_same(_query(uri, sql), oracle.query(sql), f"[{stage}] {sql}")

        check("renamed")
        # Time travel to a snapshot from before the rename: the column under its name then.
        first = _query(uri, "SELECT min_by(snapshot_id, committed_at) FROM system.snapshots WHERE table_name = 'events'")
        flushed = _query(uri, "SELECT max_by(snapshot_id, committed_at) FROM system.snapshots WHERE table_name = 'events'")
        names_then = _query(uri, f"SELECT * FROM events AT (VERSION => {flushed.column(0)[0]}) LIMIT 0").column_names
        assert "campaign" in names_then and "campaign_name" not in names_then
        assert "campaign" not in _query(uri, f"SELECT * FROM events AT (VERSION => {first.column(0)[0]}) LIMIT 0").column_names
        then = _query(uri, f"SELECT count(campaign) FROM events AT (VERSION => {flushed.column(0)[0]})").column(0)[0].as_py()
        assert then == oracle.query("SELECT count(campaign_name) FROM events WHERE day = DATE '2024-09-26'").column(0)[0].as_py()
        restarted.app.ingest_service.flush("events")
        later = make_config(tmp_path, **{**EVOLVE, "tiers.now": dt.datetime(2025, 3, 1)})
        demote(TableStore(later, later.table("events")), settle=0)
        restarted.app.stores["events"].refresh_if_changed()
        check("demoted")
        assert compact_warm(restarted.app.stores["events"], settle=0).partitions >= 1
        check("compacted")
    finally:
        restarted.server.shutdown()
        restarted.app.close()


@pytest.mark.needs_server  # builds its own data set and serves it
def test_follower_learns_the_evolved_schema(tmp_path: Path) -> None:
    """`serve --workers`: a follower reads the registry the primary wrote when its data state
    is polled, and then answers over the new columns as the primary does."""
    import threading

    from tierflight.app import App
    from tierflight.protocol.server import build_server

    load_demo(make_config(tmp_path), 300, dt.date(2024, 12, 20), 5, 3)
    primary = start_in_process(make_config(tmp_path, **EVOLVE))
    follower_app = App(make_config(tmp_path, **EVOLVE), follower=True)
    server = build_server(follower_app.flight_services(), "127.0.0.1", 0)
    threading.Thread(target=server.serve, daemon=True).start()
    follower = RunningServer(follower_app, server)
    try:
        _ingest(primary.uri, _new_rows(20, dt.datetime(2024, 12, 30, 1), seed=1))
        primary.app.ingest_service.flush("events")
        state = follower.app.data_state()
        assert state == primary.app.data_state()
        assert state["schemas"] == {"events": 1}
        sql = "SELECT count(campaign), max(advertiser_id) FROM events"
        assert _query(follower.uri, sql).to_pylist() == _query(primary.uri, sql).to_pylist()
    finally:
        for running in (follower, primary):
            running.server.shutdown()
            running.app.close()


@pytest.mark.needs_server  # builds its own data set and serves it
def app_statement(sql: str) -> Any:
    from tierflight.engine.sandbox import check_statement

    return check_statement(sql)


def test_evolution_reaches_column_names_catalog_and_parameter_types(tmp_path: Path) -> None:
    """The schema-changed notification reaches what knew the columns before the batch: the
    column-name binder (SELECT * names), the shadow catalog (metadata calls) and the Flight
    server's parameter typer (a prepared statement over a new column)."""
    load_demo(make_config(tmp_path), 200, dt.date(2024, 12, 20), 5, 3)
    running = start_in_process(make_config(tmp_path, **EVOLVE))
    try:
        app = running.app
        assert "campaign" not in app.column_names("SELECT * FROM events")
        assert "campaign" not in [c for c, _, _ in app.table_columns("main", "events")]
        typed = "SELECT count(*) FROM events WHERE score > ?"
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            # The typer learns the columns on its first use.
            known = cur.adbc_prepare("SELECT count(*) FROM events WHERE user_id = ?")
            assert known is not None and known.field(0).type == pa.int64()
            with pytest.raises(Exception, match="score"):
                cur.adbc_prepare(typed)
            # The result schema of a prepared statement is kept per statement and route.
            every = "SELECT * FROM events WHERE user_id = ?"
            assert "campaign" not in app.executor.schema(app_statement(every), 1).names
        _ingest(running.uri, _new_rows(10, dt.datetime(2024, 12, 30, 1), seed=1))
        assert {"campaign", "score"} <= set(app.column_names("SELECT * FROM events"))
        assert ("score", "DOUBLE", True) in app.table_columns("main", "events")
        with fsql.connect(running.uri, autocommit=True) as conn, conn.cursor() as cur:
            schema = cur.adbc_prepare(typed)
        assert schema is not None and schema.field(0).type == pa.float64()
        assert {"campaign", "score"} <= set(app.executor.schema(app_statement(every), 1).names)
    finally:
        running.server.shutdown()
        running.app.close()


def test_files_group_by_column_names_and_types_only() -> None:
    """Files are grouped by their columns' names and types (one read_parquet each), first
    seen first, unknown schemas last; nullability or metadata alone never splits a group,
    and a file matching the table's schema has no problem whatever its nullability."""
    from tierflight.tiers.evolution import group_by_schema
    from tierflight.tiers.warm import schema_problem

    base = pa.schema([pa.field("ts", pa.timestamp("us"), nullable=False), pa.field("x", pa.int64())])
    relaxed = pa.schema([pa.field("ts", pa.timestamp("us")), pa.field("x", pa.int64())], metadata={b"k": b"v"})
    wider = pa.schema([pa.field("ts", pa.timestamp("us")), pa.field("x", pa.int64()), pa.field("y", pa.string())])
    groups = group_by_schema([("a", base), ("u", None), ("b", wider), ("c", relaxed), ("d", base)])
    assert [(paths, schema is not None) for paths, schema in groups] == [(["a", "c", "d"], True), (["b"], True), (["u"], False)]
    assert groups[0][1] is base
    assert schema_problem(relaxed, base) is None and schema_problem(base, base) is None
    assert schema_problem(base, wider) == "missing column(s) y"
