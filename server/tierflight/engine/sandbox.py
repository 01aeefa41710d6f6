"""The statement check: one read-only statement, no file access, no settings.

This is the first of two fences. The second is DuckDB's own configuration (external access
off, allowed directories limited to the data dir, configuration locked; see
``engine.database``), so a statement that slips past this check still cannot read
``/etc/passwd`` or change a setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from tierflight.engine.duck_errors import parsed_statement_types
from tierflight.errors import SqlSyntaxError, StatementRefused, TierflightError

DIALECT = "duckdb"

_EXPLAIN_ROUTE = re.compile(r"^\s*EXPLAIN\s+ROUTE\s+(?P<body>.*)$", re.IGNORECASE | re.DOTALL)
_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALYZE)?\s+(?P<body>.*)$", re.IGNORECASE | re.DOTALL)

# Table functions and scalar functions that reach outside the server's own tables.
_DENIED_PREFIXES = ("read_", "parquet_", "sniff_", "iceberg_", "delta_", "sqlite_", "postgres_", "mysql_")
_DENIED_FUNCTIONS = frozenset(
    {
        "glob",
        "getenv",
        "query",
        "query_table",
        "parquet_scan",
        "csv_scan",
        "json_scan",
        "load_extension",
        "install_extension",
        "duckdb_secrets",
        "which_secret",
        "pragma_",
    }
)
_PATH_LIKE = re.compile(r"[/\\]|://|\.(csv|tsv|parquet|json|jsonl|ndjson|txt|db|duckdb|sqlite|gz|zst|arrow|ipc)$", re.I)

_ALLOWED_ROOTS: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.SetOperation,
    exp.Values,
    exp.Describe,
    exp.Show,
    exp.Summarize,
)


@dataclass(frozen=True)
class Statement:
    """A statement that passed the check."""

    sql: str  # what DuckDB runs (for EXPLAIN ROUTE: the inner query)
    tree: exp.Expr  # the parsed (inner) query
    kind: str  # "query", "explain", "explain_route"
    parameter_count: int


def parse_one(sql: str) -> exp.Expr:
    """Parse exactly one statement, mapping sqlglot's errors to a SqlSyntaxError with a position."""
    try:
        trees = [t for t in sqlglot.parse(sql, read=DIALECT) if t is not None]
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        raise _unparsable(
            sql, SqlSyntaxError(f"invalid SQL: {first.get('description') or err}", first.get("line"), first.get("col"))
        ) from None
    except TokenError as err:
        raise _unparsable(sql, SqlSyntaxError(f"invalid SQL: {err}")) from None
    if not trees:
        raise SqlSyntaxError("empty statement: send one SELECT, WITH, EXPLAIN, DESCRIBE or SHOW statement")
    if len(trees) > 1:
        raise StatementRefused("only one statement per request is allowed; send them one at a time")
    if isinstance(trees[0], exp.Condition | exp.Alias):
        # A bare expression ("SELEC", "events", "1 + 1") parses, but is not a statement.
        start = len(sql) - len(sql.lstrip())
        line = sql.count("\n", 0, start) + 1
        column = start - (sql.rfind("\n", 0, start) + 1) + 1
        raise SqlSyntaxError(
            f"invalid SQL: expected a statement (SELECT, WITH, EXPLAIN, DESCRIBE or SHOW), not {trees[0].sql()[:60]!r}",
            line,
            column,
        )
    return trees[0]


def _unparsable(sql: str, error: SqlSyntaxError) -> TierflightError:
    """sqlglot cannot parse ``sql``; DuckDB's own parser decides what to tell the client.

    Statements sqlglot does not know (EXPORT DATABASE, ...) are refused for what they are, and
    DuckDB supplies the position when sqlglot has none (its tokenizer errors carry no line).
    """
    try:
        kinds = parsed_statement_types(sql)
    except SqlSyntaxError as duck_error:
        return error if error.line is not None else duck_error
    refused = [k for k in kinds if k not in ("SELECT", "EXPLAIN")]
    if refused:
        return StatementRefused(
            f"{refused[0]} statements are not allowed: tierflight is read-only (SELECT, WITH, EXPLAIN, DESCRIBE, SHOW)"
        )
    return error


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def check_tree(tree: exp.Expr) -> None:
    """Refuse anything but a read-only query over the server's own tables."""
    if isinstance(tree, exp.Command):
        raise StatementRefused(
            f"{tree.name.upper()} statements are not allowed: tierflight is read-only "
            "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW)"
        )
    if not isinstance(tree, _ALLOWED_ROOTS):
        kind = tree.key.upper()
        raise StatementRefused(
            f"{kind} statements are not allowed: tierflight is read-only "
            "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW)"
        )
    for node in tree.walk():
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
                raise StatementRefused(
                    f"function {name}() is not allowed: it reads files or settings outside the server's tables"
                )
        elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            if _PATH_LIKE.search(node.name):
                raise StatementRefused(
                    f"reading files directly ({node.name!r}) is not allowed; query the configured tables"
                )
        elif isinstance(node, exp.DDL | exp.DML):
            raise StatementRefused(f"{node.key.upper()} is not allowed: tierflight is read-only")


def count_parameters(tree: exp.Expr) -> int:
    """Number of parameters: ``?`` placeholders count one each, ``$n`` the highest n."""
    positional = 0
    numbered = 0
    for node in tree.find_all(exp.Placeholder, exp.Parameter):
        name = node.name if isinstance(node, exp.Placeholder) else node.this.name
        if name and str(name).isdigit():
            numbered = max(numbered, int(name))
        else:
            positional += 1
    return max(positional, numbered)


@lru_cache(maxsize=4096)
def check_statement(sql: str) -> Statement:
    """Parse and check one client statement.

    Cached by text: dashboards repeat statements, and parsing costs more than the rest of a
    small query's planning. Callers must treat ``Statement.tree`` as immutable.
    """
    if not sql or not sql.strip():
        raise SqlSyntaxError("empty statement: send one SELECT, WITH, EXPLAIN, DESCRIBE or SHOW statement")
    kind = "query"
    body = sql
    m = _EXPLAIN_ROUTE.match(sql)
    if m:
        kind, body = "explain_route", m.group("body")
    else:
        m = _EXPLAIN.match(sql)
        if m:
            kind, body = "explain", m.group("body")
    tree = parse_one(body)
    check_tree(tree)
    return Statement(sql=sql if kind == "explain" else body, tree=tree, kind=kind, parameter_count=count_parameters(tree))
