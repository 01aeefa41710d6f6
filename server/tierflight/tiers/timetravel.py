"""Time travel on the cold tier: ``FROM events AT (VERSION => <snapshot id>)`` or
``AT (TIMESTAMP => TIMESTAMP '...')``, the syntax DuckDB uses for Iceberg and DuckLake.

Such a reference reads the Iceberg table as it was at that snapshot (every day it held
then), not the warm tier or the hot tail; rollups never answer it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pyarrow as pa
from sqlglot import exp

from tierflight.core.config import TableConfig
from tierflight.core.errors import InvalidArgument, NotFound
from tierflight.core.grains import literal_datetime
from tierflight.core.lru import LRU
from tierflight.tiers.base import TimeRange
from tierflight.tiers.evolution import arrow_schema

SNAPSHOTS_SCHEMA = pa.schema(
    [
        ("table_name", pa.string()),
        ("snapshot_id", pa.int64()),
        ("parent_id", pa.int64()),
        ("committed_at", pa.timestamp("ms")),
        ("operation", pa.string()),
        ("summary", pa.string()),
        ("is_current", pa.bool_()),
    ]
)

_plans: LRU[tuple[str, int, TimeRange], list[str]] = LRU(256)


def snapshot_for(table: Any, when: exp.Expr) -> int:
    """The snapshot id an ``AT (...)`` clause names."""
    kind = str(when.args.get("kind") or "").upper()
    value = when.args.get("expression")
    if kind == "VERSION":
        if not isinstance(value, exp.Literal) or value.is_string:
            raise InvalidArgument("AT (VERSION => ...) needs a snapshot id number; see system.snapshots")
        snapshot_id = int(value.this)
        if table.snapshot_by_id(snapshot_id) is None:
            raise NotFound(f"Iceberg snapshot {snapshot_id} does not exist; system.snapshots lists them")
        return snapshot_id
    if kind == "TIMESTAMP":
        at = literal_datetime(value) if value is not None else None
        if at is None:
            raise InvalidArgument("AT (TIMESTAMP => ...) needs a constant timestamp")
        ms = int(at.replace(tzinfo=dt.UTC).timestamp() * 1000)
        snap = table.snapshot_as_of_timestamp(ms)
        if snap is None:
            raise NotFound(f"no Iceberg snapshot existed at {at.isoformat(sep=' ')}; system.snapshots lists them")
        return int(snap.snapshot_id)
    raise InvalidArgument("time travel supports AT (VERSION => id) and AT (TIMESTAMP => ts)")


def table_at(store: Any, table: Any, snapshot_id: int) -> TableConfig:
    """The table's columns as the snapshot's own Iceberg schema has them: a column added
    since is not there, a column widened since has its type then, a column renamed since its
    name then (matched by Iceberg field id; tiers.evolution)."""
    current: TableConfig = store.table
    if not store.cold.evolved:
        return current
    snap = table.snapshot_by_id(snapshot_id)
    schemas = table.schemas()
    schema = schemas.get(snap.schema_id) if snap is not None and snap.schema_id is not None else None
    if schema is None:
        return current
    ids = {f.name: f.field_id for f in table.schema().fields}
    fields = {f.field_id: f for f in schema.fields}
    narrower = {"int": ("BIGINT", "INTEGER"), "float": ("DOUBLE", "FLOAT")}
    columns = []
    for c in current.columns:
        f = fields.get(ids.get(c.name, -1)) or next((x for x in schema.fields if x.name == c.name), None)
        if f is None:
            continue
        was = narrower.get(str(f.field_type))
        columns.append(dataclasses.replace(c, name=f.name, type=was[1] if was and was[0] == c.type else c.type))
    return dataclasses.replace(current, columns=tuple(columns))


def columns_at(store: Any, when: exp.Expr) -> TableConfig:
    """The table's columns in the snapshot an ``AT (...)`` clause names (no file is planned)."""
    if not store.cold.evolved:
        return store.table  # type: ignore[no-any-return]
    table = store.cold.table()
    return table_at(store, table, snapshot_for(table, when))


def relation_at(
    store: Any, when: exp.Expr, rng: TimeRange
) -> tuple[str | None, int, int, tuple[tuple[str, Any], ...], TableConfig]:
    """(relation SQL or None if empty, snapshot id, files, registrations, the table's columns
    in that snapshot) for the cold tier at a snapshot."""
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThan

    table = store.cold.table()
    snapshot_id = snapshot_for(table, when)
    key = (store.table.name, snapshot_id, rng)
    files = _plans.get(key)
    if files is None:
        expr: Any = AlwaysTrue()
        col = store.table.time_column
        if rng.start is not None:
            expr = And(expr, GreaterThanOrEqual(col, rng.start.isoformat()))  # type: ignore[call-arg,arg-type]
        if rng.end is not None:
            expr = And(expr, LessThan(col, rng.end.isoformat()))  # type: ignore[call-arg,arg-type]
        tasks = table.scan(row_filter=expr, snapshot_id=snapshot_id).plan_files()
        files = sorted(store.cold.physical(t.file.file_path) for t in tasks)
        _plans.put(key, files)
    columns = table_at(store, table, snapshot_id)
    rel = store.cold.relation_of(files, arrow_schema(columns) if columns is not store.table else None)
    if rel is None:
        return None, snapshot_id, 0, (), columns
    return rel.sql, snapshot_id, len(files), rel.registrations, columns


def snapshots_table(stores: dict[str, Any]) -> pa.Table:
    rows = []
    for name, store in stores.items():
        if not store.cold.exists():
            continue
        table = store.cold.table()
        current = table.current_snapshot()
        for snap in table.snapshots():
            summary = snap.summary
            props = dict(summary.additional_properties) if summary is not None else {}
            rows.append(
                {
                    "table_name": name,
                    "snapshot_id": snap.snapshot_id,
                    "parent_id": snap.parent_snapshot_id,
                    "committed_at": dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.UTC).replace(tzinfo=None),
                    "operation": str(summary.operation.value) if summary is not None else None,
                    "summary": json.dumps(props, sort_keys=True),
                    "is_current": current is not None and snap.snapshot_id == current.snapshot_id,
                }
            )
    return pa.Table.from_pylist(rows, schema=SNAPSHOTS_SCHEMA)
