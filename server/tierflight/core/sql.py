"""SQL text helpers every layer uses: identifier and literal quoting, a table's view body.

They only build text: the DuckDB connection that runs it is engine.database.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from tierflight.core.config import TableConfig

# DuckDB's session-user functions: engine.session answers them with the Flight user, and a
# statement naming one is never reused across users (router.reusable).
SESSION_USER_FUNCTIONS = ("current_user", "session_user", "current_role", "user")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def empty_relation_sql(table: TableConfig) -> str:
    """A typed relation with no rows, for a table that has no data yet."""
    cols = ", ".join(f"CAST(NULL AS {c.type}) AS {quote_ident(c.name)}" for c in table.columns)
    return f"SELECT {cols} WHERE false"


def table_view_sql(table: TableConfig, sources: Iterable[str], derived: Collection[str] | None = None) -> str:
    """The view body of a table: the union of its tiers' relations plus derived columns (all
    of them, or only those named in ``derived``: DuckDB binds every one it is given, even
    those the statement never reads)."""
    parts = [s for s in sources if s]
    body = " UNION ALL ".join(f"({p})" for p in parts) if parts else empty_relation_sql(table)
    return f"SELECT *{derived_columns_sql(table, derived)} FROM ({body})"


def derived_columns_sql(table: TableConfig, derived: Collection[str] | None = None, without: Collection[str] = ()) -> str:
    """``, <expr> AS <name>`` for the table's derived columns (all, or those named in
    ``derived``), but for those in ``without`` (both as lower-case names)."""
    return "".join(
        f", {expr} AS {quote_ident(name)}"
        for name, expr in table.derived.items()
        if (derived is None or name.lower() in derived) and name.lower() not in without
    )
