"""``tierflight tables alter <table> rename column <a> to <b>``: rename a column offline.

Runs on a data dir no server holds (the CLI takes the data dir lock first: a running server
holds it, and the command says so). The rename is recorded in the table's schema registry
(tiers.evolution), and the Iceberg table's column is renamed (the same field id, so Iceberg
readers keep reading older files). Files written before keep the old name: tierflight reads
them by their footers' names, mapping the old name to the new one (warm and cold files, WAL
segments not flushed yet, compaction). The config file still names the column as it was
configured; the registry maps it.

Refused, with nothing changed: the time column; a name that exists (in any case), names a
derived column or was a column's name before; a column the table's configuration refers to
(rollups, derived columns, decimals, sort order, Parquet options), since the configuration
would no longer name a column; tables with files on S3 (a dataset reads by the table's
names and cannot map them).
"""

from __future__ import annotations

import re

from tierflight.core.config import Config
from tierflight.core.errors import InvalidArgument, NotFound
from tierflight.tiers.store import TableStore


def _references(store: TableStore, name: str) -> list[str]:
    """Where the table's configuration names column ``name``."""
    table = store.base
    word = re.compile(rf"(?<![\w\"]){re.escape(name)}(?![\w\"])|\"{re.escape(name)}\"", re.IGNORECASE)
    out = [f"derived column {k}" for k, expr in table.derived.items() if word.search(expr)]
    for r in table.rollups:
        texts = [*r.dimensions, *r.measures, r.filter or "", *r.order]
        if any(word.search(t) for t in texts):
            out.append(f"rollup {r.name}")
    for key, values in (
        ("decimals", tuple(table.decimals)),
        ("sort_by", table.sort_by),
        ("parquet_dictionary", table.parquet_dictionary or ()),
        ("parquet_bloom_filter", table.parquet_bloom_filter),
    ):
        if name in values:
            out.append(key)
    return out


def rename_column(config: Config, table_name: str, old: str, new: str) -> TableStore:
    """Rename ``old`` to ``new`` in ``table_name`` (see the module doc); returns the store."""
    store = TableStore(config, config.table(table_name))
    columns = store.table.column_names
    if old not in columns:
        raise NotFound(f"table {table_name} has no column {old!r}; its columns: {', '.join(columns)}")
    if old == store.table.time_column:
        raise InvalidArgument(f"{table_name}.{old} is the table's time column, which cannot be renamed")
    if not new or not new.isprintable() or len(new) > 128:
        raise InvalidArgument(f"new column name {new!r} must be 1 to 128 printable characters")
    taken = {c.lower() for c in (*columns, *store.table.derived)}
    if new.lower() in taken:
        raise InvalidArgument(f"table {table_name} already has a column named {new!r} (names are case-insensitive)")
    if new in store.registry.former_names or new == store.registry.original(old):
        raise InvalidArgument(f"{new!r} was a column name of {table_name} before; older files store it, pick another name")
    refs = _references(store, store.registry.original(old))
    if refs:
        raise InvalidArgument(
            f"{table_name}.{old} is named by the configuration ({', '.join(refs)}); rename it there instead"
        )
    if store.warm_on_s3 or store.cold_on_s3:
        raise InvalidArgument(f"{table_name} keeps files on S3, where renamed columns cannot be mapped; not renamed")
    registry = store.registry.with_rename(old, new)
    registry.save(store.root)
    store.registry = registry
    store.apply_schema(registry.effective(store.base))
    if store.cold.exists():
        store.cold.sync_schema(store.cold.table())
    store.bump_generation()
    return store
