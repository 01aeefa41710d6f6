"""Dimension tables without a server: their configuration, their store's versions and crash
safety, and the demo's dimension rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tierflight.core.config import TableKind, load_config
from tierflight.core.errors import ConfigError, InvalidArgument
from tierflight.demo.dimensions import demo_dimensions
from tierflight.demo.generate import catalogue_ids, generate_days
from tierflight.tiers.dimension import POINTER, DimensionStore

EVENTS: dict[str, Any] = {
    "time_column": "ts",
    "columns": {"ts": "TIMESTAMP", "advertiser_id": "INTEGER", "n": "BIGINT"},
}
ADVERTISERS: dict[str, Any] = {
    "kind": "dimension",
    "key": "advertiser_id",
    "columns": {"advertiser_id": "INTEGER", "name": "VARCHAR"},
}


def _load(tables: dict[str, Any]) -> Any:
    return load_config(None, environ={}, overrides={"tables": tables})


def test_the_shipped_config_declares_the_demo_dimensions() -> None:
    cfg = load_config(Path(__file__).parent.parent / "conf" / "tierflight.toml", environ={})
    assert sorted(cfg.dimensions) == ["advertisers", "publishers"]
    assert "advertisers" not in cfg.tables  # fact tables only: nothing that builds tiers sees them
    adv = cfg.dimensions["advertisers"]
    assert (adv.kind, adv.key) == (TableKind.DIMENSION, "advertiser_id")
    assert [(c.name, c.type, c.nullable) for c in adv.columns] == [
        ("advertiser_id", "INTEGER", False),
        ("name", "VARCHAR", True),
        ("vertical", "VARCHAR", True),
    ]
    assert [c.name for c in cfg.dimensions["publishers"].columns] == ["publisher_id", "name", "category"]
    assert cfg.tables["events"].kind is TableKind.FACT
    assert cfg.tables["events"].references == {"advertiser_id": "advertisers", "publisher_id": "publishers"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_column": "advertiser_id"}, r"tables\.advertisers\.time_column: advertisers is a dimension table"),
        ({"rollups": []}, r"tables\.advertisers\.rollups: advertisers is a dimension table"),
        ({"derived": {}}, r"tables\.advertisers\.derived: advertisers is a dimension table"),
        ({"sort_by": ["name"]}, r"tables\.advertisers\.sort_by: advertisers is a dimension table"),
        ({"references": {}}, r"tables\.advertisers\.references: advertisers is a dimension table"),
        ({"key": "nope"}, r"tables\.advertisers\.key = 'nope' must name one of its columns"),
        ({"key": None}, r"tables\.advertisers\.key = None must name one of its columns"),
        ({"kind": "dimensions"}, r"tables\.advertisers\.kind.*'fact' or 'dimension'"),
        ({"keyy": "x"}, r"unknown key 'keyy'.*did you mean 'key'"),
    ],
)
def test_a_bad_dimension_table_is_refused_by_name(change: dict[str, Any], message: str) -> None:
    dim = {k: v for k, v in {**ADVERTISERS, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        _load({"advertisers": dim})


@pytest.mark.parametrize(
    ("references", "advertisers", "message"),
    [
        ({"advertiser_id": "nope"}, ADVERTISERS, r"references\.advertiser_id = 'nope': not a dimension table"),
        ({"advertiser_id": "events"}, ADVERTISERS, r"references\.advertiser_id = 'events': not a dimension table"),
        ({"missing": "advertisers"}, ADVERTISERS, r"references names unknown column\(s\) missing"),
        (
            {"n": "advertisers"},
            ADVERTISERS,
            r"n is BIGINT but advertisers's key advertiser_id is INTEGER; declare them with the same type",
        ),
        ({"advertiser_id": 3}, ADVERTISERS, r"references must map columns to dimension tables"),
    ],
)
def test_bad_references_are_refused(references: dict[str, Any], advertisers: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load({"events": {**EVENTS, "references": references}, "advertisers": advertisers})


def test_a_fact_table_declares_no_key() -> None:
    with pytest.raises(ConfigError, match=r'tables\.events\.key: only a dimension table \(kind = "dimension"\)'):
        _load({"events": {**EVENTS, "key": "n"}})


def test_not_null_columns_of_a_dimension_and_its_key() -> None:
    cfg = _load({"advertisers": {**ADVERTISERS, "not_null": ["name"]}})
    assert [c.nullable for c in cfg.dimensions["advertisers"].columns] == [False, False]


# -- the store ---------------------------------------------------------------------------------


def _store(root: Path, writer: bool = True) -> DimensionStore:
    return DimensionStore(root, _load({"advertisers": ADVERTISERS}).dimensions["advertisers"], writer=writer)


def _rows(ids: list[int | None], names: list[str] | None = None) -> pa.Table:
    names = names or [f"a{i}" for i in ids]
    return pa.table({"advertiser_id": pa.array(ids, pa.int32()), "name": names})


def _commit(store: DimensionStore, rows: pa.Table, append: bool) -> None:
    with store.write_lock:
        store.serve(store.write(store.combined(rows, append=append)))
        store.remove_old()


def test_replace_and_append_make_durable_versions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert (store.current.version, store.current.rows) == (0, 0)
    _commit(store, _rows([1, 2]), append=False)
    _commit(store, _rows([3]), append=True)
    assert store.current.version == 2
    again = _store(tmp_path)
    assert again.current.data.to_pydict() == {"advertiser_id": [1, 2, 3], "name": ["a1", "a2", "a3"]}
    # One version file is kept: the one current.json names.
    assert sorted(p.name for p in store.directory.iterdir()) == [POINTER, "v00000002.arrow"]
    _commit(store, _rows([7]), append=False)
    assert _store(tmp_path).current.data.to_pydict() == {"advertiser_id": [7], "name": ["a7"]}


def test_duplicate_and_null_keys_are_refused_naming_the_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _commit(store, _rows([1, 2]), append=False)
    with pytest.raises(InvalidArgument, match=r"key advertiser_id = 2 \(row 1\) is already in the table"):
        store.combined(_rows([5, 2]), append=True)
    with pytest.raises(InvalidArgument, match="key advertiser_id = 9 appears more than once"):
        store.combined(_rows([9, 9]), append=False)
    with pytest.raises(InvalidArgument, match="key advertiser_id is NULL at row 1"):
        store.combined(_rows([4, None], ["x", "y"]), append=False)
    assert store.current.version == 1 and _store(tmp_path).current.rows == 2


def test_a_crash_mid_write_leaves_the_old_version_served(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _commit(store, _rows([1]), append=False)
    # What a crash leaves behind: a half-written temporary file, and a complete next version
    # whose pointer was never written (the commit point is current.json's rename).
    (store.directory / "v00000002.arrow.tmp").write_bytes(b"ARROW1 half")
    (store.directory / "v00000003.arrow").write_bytes(b"not even arrow")
    (store.directory / (POINTER + ".tmp")).write_text('{"version": 3')
    reader = _store(tmp_path, writer=False)
    assert reader.current.data.to_pydict() == {"advertiser_id": [1], "name": ["a1"]}
    assert len(list(store.directory.iterdir())) == 5  # a follower deletes nothing
    restarted = _store(tmp_path)
    assert restarted.current.version == 1
    assert sorted(p.name for p in store.directory.iterdir()) == [POINTER, "v00000001.arrow"]
    _commit(restarted, _rows([2]), append=True)
    assert json.loads((store.directory / POINTER).read_text())["version"] == 2


def test_a_follower_sees_the_writers_new_version(tmp_path: Path) -> None:
    writer, follower = _store(tmp_path), _store(tmp_path, writer=False)
    assert follower.changed_on_disk() is None
    _commit(writer, _rows([1, 2, 3]), append=False)
    newer = follower.changed_on_disk()
    assert newer is not None and newer.rows == 3
    follower.serve(newer)
    assert follower.changed_on_disk() is None
    with pytest.raises(InvalidArgument, match="read-only"):
        follower.write(_rows([4]))


class _Tables:
    """A DimensionTables that records what it holds (the server's is engine.database's)."""

    def __init__(self) -> None:
        self.held: dict[str, pa.Table] = {}
        self.n = 0

    def install_dimension(self, table: str, version: int, data: pa.Table) -> str:
        self.n += 1
        name = f"{table}_v{version}_{self.n}"
        self.held[name] = data
        return name

    def drop_dimension(self, qualified: str) -> None:
        del self.held[qualified]


def test_each_served_version_has_a_table_of_its_own_and_the_old_one_goes(tmp_path: Path) -> None:
    tables = _Tables()
    cfg = _load({"advertisers": ADVERTISERS}).dimensions["advertisers"]
    store = DimensionStore(tmp_path, cfg, tables=tables)
    assert store.current.relation == "advertisers_v0_1" and list(tables.held) == ["advertisers_v0_1"]
    _commit(store, _rows([1, 2]), append=False)
    assert store.current.relation == "advertisers_v1_2" and list(tables.held) == ["advertisers_v1_2"]
    assert tables.held["advertisers_v1_2"].equals(store.current.data)
    # A write that fails leaves no table behind and the served version's untouched.
    import tierflight.tiers.dimension as dimension

    original = dimension.write_json_atomic

    def broken(*_: Any, **__: Any) -> None:
        raise OSError("disk full")

    dimension.write_json_atomic = broken
    try:
        with store.write_lock, pytest.raises(OSError, match="disk full"):
            store.write(store.combined(_rows([3]), append=True))
    finally:
        dimension.write_json_atomic = original
    assert list(tables.held) == ["advertisers_v1_2"] and store.current.version == 1
    # A follower installs the writer's newer version when it sees it; serving it drops its old one.
    follower_tables = _Tables()
    follower = DimensionStore(tmp_path, cfg, writer=False, tables=follower_tables)
    _commit(store, _rows([5]), append=True)
    newer = follower.changed_on_disk()
    assert newer is not None and newer.relation in follower_tables.held and len(follower_tables.held) == 2
    follower.serve(newer)
    assert list(follower_tables.held) == [newer.relation]
    assert follower_tables.held[newer.relation]["advertiser_id"].to_pylist() == [1, 2, 5]


# -- the demo ----------------------------------------------------------------------------------


def test_demo_dimensions_cover_every_id_the_events_hold_and_are_deterministic() -> None:
    dims = demo_dimensions(7)
    assert dims["advertiser_id"].equals(demo_dimensions(7)["advertiser_id"])
    assert not dims["publisher_id"].equals(demo_dimensions(8)["publisher_id"])
    adv_ids, pub_ids = catalogue_ids(7)
    assert sorted(dims["advertiser_id"]["advertiser_id"].to_pylist()) == sorted(adv_ids.tolist())
    assert sorted(dims["publisher_id"]["publisher_id"].to_pylist()) == sorted(pub_ids.tolist())
    assert dims["advertiser_id"]["name"].null_count == 0 and dims["publisher_id"]["category"].null_count == 0
    assert len(set(dims["advertiser_id"]["name"].to_pylist())) == dims["advertiser_id"].num_rows  # names distinct
    import datetime as dt

    for _, day in generate_days(3000, dt.date(2024, 1, 1), 2, seed=7):
        assert set(day["advertiser_id"].to_pylist()) <= set(adv_ids.tolist())
        assert set(day["publisher_id"].to_pylist()) <= set(pub_ids.tolist())



@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        ("OutOfMemoryException", "IngestTooLarge", "does not fit in DuckDB's memory"),
        ("CatalogException", "StorageUnavailable", "could not be loaded; see the server log"),
    ],
)
def test_a_version_duckdb_cannot_hold_is_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: str, expected: str, message: str
) -> None:
    """engine.database's install fails: a domain error that names no internal table, and the
    store writes nothing (the table is created before the version is durable)."""
    import duckdb

    import tierflight.core.errors as errors
    from tierflight.engine.database import Database

    cfg = load_config(None, data_dir=tmp_path, environ={}, overrides={"tables": {"advertisers": ADVERTISERS}})
    database = Database(cfg)
    try:
        store = DimensionStore(tmp_path, cfg.dimensions["advertisers"], tables=database)
        served = store.current.relation

        def failing(sql: str, cursor: Any = None) -> None:
            raise getattr(duckdb, error)(f"failed on tf_dimension.main.{sql[:20]}")

        monkeypatch.setattr(database, "execute_internal", failing)
        with store.write_lock, pytest.raises(getattr(errors, expected), match=message) as caught:
            store.write(_rows([1, 2]))
        assert "tf_dimension" not in str(caught.value)
        assert store.current.version == 0 and store.current.relation == served
        assert not (store.directory / POINTER).exists()
    finally:
        database.close()
