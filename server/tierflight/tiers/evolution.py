"""Schema evolution: a table's columns follow its producers' batches (``[tables.<t>] evolve``).

The configured columns are the table's base; what batches added or widened is recorded in a
schema registry in the data dir, ``<data dir>/<table>/schema.json`` (versioned, replaced
atomically and fsynced before the batch that caused the change is written to the WAL), and
the effective schema is the base plus the registry. The config file is never rewritten.

Files written before a change keep their old columns: every reader of stored files (warm
and cold relations, compaction, WAL replay, the hot tail) goes through :func:`conform` or
:func:`select_list`, which give a missing column as NULL and a narrower stored type cast to
the table's (lossless by construction: only widenings are recorded).

What a batch may change (anything else is refused naming the column, nothing written):

* ``widen``: a column's integer type to a wider integer (SMALLINT -> INTEGER -> BIGINT), or
  FLOAT to DOUBLE, when the batch sends the wider type;
* ``add_columns``: also new columns (always nullable; a type the table supports), and
  batches that lack a nullable column (older producers) get NULL there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tierflight.core.config import ColumnConfig, Evolve, TableConfig
from tierflight.core.durable import write_json_atomic
from tierflight.core.errors import InvalidArgument
from tierflight.core.sql import quote_ident, quote_literal
from tierflight.tiers.base import Relation

SCHEMA_FILE = "schema.json"
# A producer (or an attacker) sending ever new columns must not grow a table without bound.
MAX_COLUMNS = 1000
MAX_NAME_LENGTH = 128


def check_name(table: str, name: str) -> None:
    """A new column name: 1 to MAX_NAME_LENGTH printable characters, not an internal name."""
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable() or name.lower().startswith("__tf"):
        raise InvalidArgument(
            f"ingest into {table}: new column {name[:MAX_NAME_LENGTH]!r} needs a name of 1 to {MAX_NAME_LENGTH} "
            "printable characters (not starting with __tf); nothing was written"
        )

# The DuckDB types a table's column may have and their Arrow types.
DUCK_TO_ARROW: dict[str, pa.DataType] = {
    "TIMESTAMP": pa.timestamp("us"),
    "VARCHAR": pa.string(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "SMALLINT": pa.int16(),
}
ARROW_TO_DUCK: dict[pa.DataType, str] = {v: k for k, v in DUCK_TO_ARROW.items()}

# The type a new column gets from the Arrow type a batch sends it as (None: refused).
_NEW_COLUMN_TYPES: dict[pa.DataType, str] = {
    pa.int8(): "SMALLINT",
    pa.int16(): "SMALLINT",
    pa.uint8(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.uint16(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint32(): "BIGINT",
    pa.float16(): "FLOAT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.string_view(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    pa.date64(): "DATE",
}

# The widenings a batch may cause: the table's type -> the types it may become.
WIDENINGS: dict[str, tuple[str, ...]] = {
    "SMALLINT": ("INTEGER", "BIGINT"),
    "INTEGER": ("BIGINT",),
    "FLOAT": ("DOUBLE",),
}


def new_column_type(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    return _NEW_COLUMN_TYPES.get(arrow_type)


@dataclass(frozen=True)
class Change:
    """One column a batch adds (``added``) or widens to ``type``."""

    column: str
    type: str
    added: bool

    def describe(self) -> str:
        return f"add column {self.column} {self.type}" if self.added else f"widen {self.column} to {self.type}"


@dataclass(frozen=True)
class SchemaRegistry:
    """The evolved part of one table's schema, as stored in ``<table>/schema.json``."""

    version: int = 0
    # Added and widened columns under the name they had first (a configured name, or the
    # name a batch added them under); renames apply after, in order.
    added: tuple[ColumnConfig, ...] = ()
    widened: tuple[tuple[str, str], ...] = ()  # (column, type), the newest type last
    renamed: tuple[tuple[str, str], ...] = ()  # (old, new), oldest first
    history: tuple[dict[str, Any], ...] = ()  # {"version": n, "change": "..."}

    @property
    def columns(self) -> frozenset[str]:
        """The columns ingest added or widened, by their current names: older files may lack
        them or store them narrower."""
        return frozenset(self.current(n) for n in [*(c.name for c in self.added), *(name for name, _ in self.widened)])

    def current(self, name: str) -> str:
        """A column's current name, from the name it had first."""
        for old, new in self.renamed:
            if old == name:
                name = new
        return name

    def original(self, name: str) -> str:
        """A column's first name, from its current one."""
        for old, new in reversed(self.renamed):
            if new == name:
                name = old
        return name

    @property
    def former_names(self) -> frozenset[str]:
        return frozenset(old for old, _ in self.renamed)

    def aliases(self) -> dict[str, tuple[str, ...]]:
        """Current column name -> the names files written earlier store it under, newest first."""
        out: dict[str, tuple[str, ...]] = {}
        for old, new in self.renamed:
            out[new] = (old, *out.pop(old, ()))
        return out

    def with_rename(self, old: str, new: str) -> SchemaRegistry:
        version = self.version + 1
        entry = {"version": version, "change": f"rename column {old} to {new}"}
        return dataclasses.replace(
            self, version=version, renamed=(*self.renamed, (old, new)), history=(*self.history, entry)
        )

    @classmethod
    def load(cls, root: Path) -> SchemaRegistry:
        try:
            raw = json.loads((root / SCHEMA_FILE).read_text())
        except FileNotFoundError:
            return cls()
        return cls(
            int(raw["version"]),
            tuple(ColumnConfig(str(c["name"]), str(c["type"]), True) for c in raw.get("added", ())),
            tuple((str(k), str(v)) for k, v in raw.get("widened", ())),
            tuple((str(k), str(v)) for k, v in raw.get("renamed", ())),
            tuple(raw.get("history", ())),
        )

    def save(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            root / SCHEMA_FILE,
            {
                "version": self.version,
                "added": [{"name": c.name, "type": c.type} for c in self.added],
                "widened": [list(w) for w in self.widened],
                "renamed": [list(r) for r in self.renamed],
                "history": list(self.history),
            },
        )

    def with_changes(self, changes: Sequence[Change]) -> SchemaRegistry:
        version = self.version + 1
        added = list(self.added)
        widened = list(self.widened)
        for c in changes:
            first = self.original(c.column)
            if c.added:
                added.append(ColumnConfig(c.column, c.type, True))
            elif any(a.name == first for a in added):
                added = [ColumnConfig(a.name, c.type, True) if a.name == first else a for a in added]
            else:
                widened.append((first, c.type))
        entry = {"version": version, "change": "; ".join(c.describe() for c in changes)}
        return SchemaRegistry(version, tuple(added), tuple(widened), self.renamed, (*self.history, entry))

    def effective(self, base: TableConfig) -> TableConfig:
        """The configured table with the recorded columns added and types widened."""
        if not self.version:
            return base
        types = dict(self.widened)
        columns = [dataclasses.replace(c, type=types.get(c.name, c.type)) for c in base.columns]
        known = {c.name for c in columns}
        columns += [c for c in self.added if c.name not in known]
        columns = [dataclasses.replace(c, name=self.current(c.name)) for c in columns]
        return dataclasses.replace(base, columns=tuple(columns))


def arrow_schema(table: TableConfig) -> pa.Schema:
    fields = []
    for c in table.columns:
        try:
            fields.append(pa.field(c.name, DUCK_TO_ARROW[c.type], nullable=c.nullable))
        except KeyError:
            raise ValueError(
                f"tables.{table.name}.columns.{c.name}: type {c.type} is not supported; "
                f"use one of {', '.join(sorted(DUCK_TO_ARROW))}"
            ) from None
    return pa.schema(fields)


def plan_changes(data_schema: pa.Schema, table: TableConfig, former: Collection[str] = ()) -> list[Change]:
    """The changes a batch of ``data_schema`` makes to ``table``, or raise naming the column.

    Only what evolution decides is checked here (new columns, wider types); everything else
    (values, nulls, lossless conversions) is ingest validation's, on the evolved schema.
    ``former``: names columns had before a rename, which no new column may take.
    """
    if table.evolve is Evolve.NONE:
        return []
    current = {c.name: c for c in table.columns}
    changes: list[Change] = []
    for f in data_schema:
        col = current.get(f.name)
        if col is None:
            if table.evolve is not Evolve.ADD_COLUMNS:
                continue  # refused by validation as an unknown column
            if f.name.lower() in {n.lower() for n in current} or f.name.lower() in {d.lower() for d in table.derived}:
                raise InvalidArgument(
                    f"ingest into {table.name}: new column {f.name} differs only in case from an existing column "
                    "or names a derived column; nothing was written"
                )
            check_name(table.name, f.name)
            if f.name in former:
                raise InvalidArgument(
                    f"ingest into {table.name}: new column {f.name} was renamed before (older files store it under "
                    "that name); use another name; nothing was written"
                )
            kind = new_column_type(f.type)
            if kind is None:
                raise InvalidArgument(
                    f"ingest into {table.name}: new column {f.name} is {f.type}, which a table column cannot be "
                    f"(a new column must be one of {', '.join(sorted(DUCK_TO_ARROW))}, and typed: "
                    "not all nulls); nothing was written"
                )
            changes.append(Change(f.name, kind, True))
            if len(current) + sum(c.added for c in changes) > MAX_COLUMNS:
                raise InvalidArgument(
                    f"ingest into {table.name}: the batch's new columns would give the table more than "
                    f"{MAX_COLUMNS} columns; nothing was written"
                )
            continue
        source = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        wider = new_column_type(source)
        if wider is not None and wider in WIDENINGS.get(col.type, ()) and not pa.types.is_unsigned_integer(source):
            changes.append(Change(f.name, wider, False))
    return changes


def conform(data: pa.Table, schema: pa.Schema, aliases: Mapping[str, Sequence[str]] | None = None) -> pa.Table:
    """``data`` (rows stored under an older schema) in ``schema``: missing columns NULL,
    narrower types cast (widenings only, so the cast is lossless), columns stored under a
    name they had before a rename taken from there."""
    if data.schema.equals(schema, check_metadata=False):
        return data
    names = set(data.column_names)
    columns = []
    for f in schema:
        stored = stored_name(f.name, names, aliases or {})
        columns.append(data[stored].cast(f.type) if stored is not None else pa.nulls(data.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def stored_name(name: str, file_names: Collection[str], aliases: Mapping[str, Sequence[str]]) -> str | None:
    """The name a file stores a table column under: its own, or one it had before a rename."""
    for candidate in (name, *aliases.get(name, ())):
        if candidate in file_names:
            return candidate
    return None


def select_list(
    file_schema: pa.Schema | None, table_schema: pa.Schema, aliases: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The SELECT list reading a file of ``file_schema`` as the table's columns: a column the
    file lacks is a typed NULL, a narrower stored type is cast, a column stored under a name
    it had before a rename is read by that name. None: the file's schema is unknown (a file
    that cannot be served), read by name as it is."""
    out = []
    for f in table_schema:
        name = quote_ident(f.name)
        stored = None if file_schema is None else stored_name(f.name, file_schema.names, aliases or {})
        if file_schema is None or (stored == f.name and file_schema.field(f.name).type == f.type):
            out.append(name)
        elif stored is not None:
            cast = file_schema.field(stored).type != f.type
            value = f"CAST({quote_ident(stored)} AS {ARROW_TO_DUCK.get(f.type, 'VARCHAR')})" if cast else quote_ident(stored)
            out.append(f"{value} AS {name}")
        else:
            out.append(f"CAST(NULL AS {ARROW_TO_DUCK.get(f.type, 'VARCHAR')}) AS {name}")
    return ", ".join(out)


_UNKEYED = object()


def group_by_schema(files: Iterable[tuple[str, pa.Schema | None]]) -> list[tuple[list[str], pa.Schema | None]]:
    """Files grouped by their column names and types, in first-seen order: DuckDB reads one
    ``read_parquet`` per group, since it binds a scan's columns from its first file."""
    groups: dict[object, tuple[list[str], pa.Schema | None]] = {}
    # Files whose schema equals one already keyed share its key (equal schemas have equal
    # names and types): a C comparison instead of spelling every file's types per plan.
    seen: list[tuple[pa.Schema, object]] = []
    for path, schema in files:
        key: object = None
        if schema is not None:
            key = next((k for s, k in seen if schema.equals(s)), _UNKEYED)
            if key is _UNKEYED:
                key = tuple((f.name, str(f.type)) for f in schema)
                seen.append((schema, key))
        groups.setdefault(key, ([], schema))[0].append(path)
    # The unknown (problem) files last, where a scan reaching them fails naming them.
    return sorted(groups.values(), key=lambda g: g[1] is None)


def stored_widens(stored: pa.DataType, table: pa.DataType) -> bool:
    """Whether a file storing ``stored`` is read as the table's ``table`` type by a widening
    the table recorded (see WIDENINGS)."""
    old, new = ARROW_TO_DUCK.get(stored), ARROW_TO_DUCK.get(table)
    return old is not None and new is not None and new in WIDENINGS.get(old, ())


def parquet_relation(
    files: Sequence[tuple[str, pa.Schema | None]],
    schema: pa.Schema,
    day_key: str,
    day_as: str | None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> Relation:
    """SQL over local Parquet files in the table's columns and order, one ``read_parquet``
    per stored schema (one, unless the table evolved). With ``day_as``: each row's date as
    that column, read from the ``<day_key>=YYYY-MM-DD`` directory its file sits in (DuckDB
    prunes a filter on it by file)."""
    with_day = day_as is not None and day_key not in schema.names
    parts = []
    for paths, stored in group_by_schema(files):
        listing = ", ".join(quote_literal(p) for p in paths)
        cols = select_list(stored, schema, aliases)
        if with_day:
            parts.append(
                f"SELECT {cols}, {quote_ident(day_key)} AS {quote_ident(str(day_as))} FROM read_parquet([{listing}], "
                f"hive_partitioning = true, hive_types = {{{quote_literal(day_key)}: DATE}})"
            )
        else:
            parts.append(f"SELECT {cols} FROM read_parquet([{listing}], hive_partitioning = false)")
    sql = parts[0] if len(parts) == 1 else " UNION ALL ".join(f"({p})" for p in parts)
    return Relation(sql, carries=(str(day_as),) if with_day else ())
