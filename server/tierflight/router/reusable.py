"""Whether a statement's answer can be reused while the data it reads is unchanged.

Dashboards send the same statements again and again; the executor keeps their answers keyed
by the SQL it ran and the data version of the route. That is exact only when the answer
depends on nothing but the configured tables' rows: no clock, no randomness (a sample is
random too), not who asks (current_user), no system table or engine state, which change without the data version moving.
A pure rule over the statement's tree: it returns why an answer cannot be reused, or None.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlglot import exp

from tierflight.core.sql import SESSION_USER_FUNCTIONS
from tierflight.core.statement import DIALECT
from tierflight.router.trees import walk

# Functions whose value changes from one call to the next (DuckDB's names; sqlglot parses
# some into the classes below and leaves the others as anonymous functions).
VOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "today",
        "get_current_time",
        "get_current_timestamp",
        "transaction_timestamp",
        "current_localtime",
        "current_localtimestamp",
        "localtime",
        "localtimestamp",
        "random",
        "rand",
        "setseed",
        "uuid",
        "uuidv4",
        "uuidv7",
        "gen_random_uuid",
        "current_query",
        "current_setting",
        "nextval",
        "currval",
    }
)
_VOLATILE_NODES: tuple[type[exp.Expr], ...] = tuple(
    cls
    for cls in (
        getattr(exp, name, None)
        for name in ("CurrentDate", "CurrentTime", "CurrentTimestamp", "CurrentDatetime", "Localtime",
                     "Localtimestamp", "Rand", "Uuid")
    )
    if isinstance(cls, type)
)  # fmt: skip
# current_user and its synonyms (engine.session): sqlglot parses some into these classes, the
# others into functions, and the bare keywords user and current_role into columns.
_SESSION_NODES: tuple[type[exp.Expr], ...] = tuple(
    cls for cls in (getattr(exp, name, None) for name in ("CurrentUser", "SessionUser")) if isinstance(cls, type)
)
SYSTEM_SCHEMAS = frozenset({"system", "information_schema", "pg_catalog"})


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def not_reusable(tree: exp.Expr, tables: Collection[str]) -> str | None:
    """Why the answer of ``tree`` depends on more than the rows of ``tables`` (lower-case
    names of the configured tables), or None when it does not."""
    ctes: set[str] | None = None  # read only for a table that is not a configured one
    for node in walk(tree):
        if isinstance(node, _VOLATILE_NODES):
            return f"{node.sql(dialect=DIALECT)} changes between calls"
        function = _function_name(node) if isinstance(node, exp.Func) else None
        if function in VOLATILE_FUNCTIONS:
            return f"{function}() changes between calls"
        if (
            isinstance(node, _SESSION_NODES)
            or function in SESSION_USER_FUNCTIONS
            or (isinstance(node, exp.Column) and not node.table and node.name.lower() in SESSION_USER_FUNCTIONS)
        ):
            return f"{node.sql(dialect=DIALECT)} depends on who asks"
        if isinstance(node, exp.TableSample):
            return "a sample is drawn anew on each call"
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                return f"{node.this.sql(dialect=DIALECT)} is a table function, not a configured table"
            schema = node.db.lower()
            name = node.name.lower()
            if schema in SYSTEM_SCHEMAS or (not schema and name.startswith(("duckdb_", "pragma_"))):
                return f"{node.sql(dialect=DIALECT)} is engine or server state"
            if name not in tables and ctes is None:
                ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
            if name not in tables and name not in (ctes or ()):
                return f"{node.sql(dialect=DIALECT)} is not a configured table"
    return None
