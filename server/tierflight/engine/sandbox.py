"""The statement check: one read-only statement, no file access, no settings.

This is the first of two fences. The second is DuckDB's own configuration (external access
off, allowed directories limited to the data dir, configuration locked; see
``engine.database``), so a statement that slips past this check still cannot read
``/etc/passwd`` or change a setting.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from tierflight.core.errors import (
    InvalidArgument,
    Overloaded,
    SqlSyntaxError,
    StatementRefused,
    TierflightError,
)
from tierflight.core.lru import LRU, Sightings
from tierflight.core.statement import DIALECT, Statement, StatementKind
from tierflight.engine.duck_errors import parsed_statement_types
from tierflight.engine.functions import Outcome, check_functions, trusted
from tierflight.engine.guards import check_builtin_bypass
from tierflight.engine.literal_shapes import literal_shape
from tierflight.engine.templates import MAX_TEMPLATE_BYTES, TEMPLATES, instantiate, plain_values, template_of
from tierflight.router.trees import faithful_copy

_EXPLAIN_ROUTE = re.compile(r"^\s*EXPLAIN\s+ROUTE\s+(?P<body>.*)$", re.IGNORECASE | re.DOTALL)
_EXPLAIN = re.compile(r"^\s*EXPLAIN(?:\s+ANALYZE)?\s+(?P<body>.*)$", re.IGNORECASE | re.DOTALL)

# A replacement scan reads a file named as a table (FROM 'x.parquet', FROM "s3://b/k").
_PATH_LIKE = re.compile(
    r"[/\\]|://|\.(csv|tsv|parquet|json|jsonl|ndjson|txt|db|duckdb|sqlite|gz|zst|arrow|ipc)$", re.I
)

# How deeply brackets may nest. sqlglot's parser, the router's rules and the generator recurse
# per level (about 25 Python frames each), and Python stops at 1000 frames: 42 levels failed.
# Dashboards nest a handful of levels; 32 leaves room for the frames around the parse.
MAX_NESTING = 32
_NESTING_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|[()\[\]{}]", re.DOTALL)
_OPENING = frozenset("([{")

# Statements longer than this are not cached (the cache would hold their trees) and are
# parsed and planned one at a time (large_statement_turn), so that a few huge statements
# cannot keep the short ones from the interpreter.
_LARGE_STATEMENT = 16 << 10
_LARGE_PARSES = threading.BoundedSemaphore(1)
_LARGE_PARSE_WAIT_SECONDS = 30.0
DEFAULT_MAX_STATEMENT_BYTES = 256 << 10

_ALLOWED_ROOTS: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.SetOperation,
    exp.Values,
    exp.Describe,
    exp.Show,
    exp.Summarize,
)


def parse_one(sql: str) -> exp.Expr:
    """Parse exactly one statement, mapping sqlglot's errors to a SqlSyntaxError with a position."""
    try:
        trees = [t for t in sqlglot.parse(sql, read=DIALECT) if t is not None]
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        raise _unparsable(
            sql,
            SqlSyntaxError(
                f"invalid SQL: {first.get('description') or err}", first.get("line"), first.get("col")
            ),
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
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
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


def check_calls(tree: exp.Expr) -> None:
    """The function check for a statement DuckDB cannot show its parse of (a PIVOT): every
    outermost call of the tree, as DuckDB parses it in a SELECT list. A table function is
    checked as a scalar one there, so only those allowed in both places pass."""
    calls = [
        node.sql(dialect=DIALECT)
        for node in tree.walk()
        if isinstance(node, exp.Func) and node.find_ancestor(exp.Func) is None
    ]
    if calls and check_functions("SELECT " + ", ".join(f"({c})" for c in calls)) is not Outcome.CHECKED:
        raise StatementRefused(
            "this statement cannot be checked: send it without PIVOT, or with simpler calls inside"
        )


def too_deep() -> InvalidArgument:
    return InvalidArgument(
        f"statement nests too deeply (limit {MAX_NESTING} levels of brackets, subqueries, calls or operators)"
    )


def nesting_depth(sql: str) -> int:
    """The deepest bracket nesting of ``sql`` (string literals, quoted names and comments skipped)."""
    depth = deepest = 0
    for m in _NESTING_TOKENS.finditer(sql):
        token = m.group()
        if len(token) != 1:
            continue
        if token in _OPENING:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_checked: LRU[str, Statement] = LRU(4096)
_repeated = Sightings()  # texts are kept from their second sighting on (core.lru.Sightings)


def check_statement(sql: str, max_bytes: int = DEFAULT_MAX_STATEMENT_BYTES) -> Statement:
    """Parse and check one client statement.

    Cached by text: dashboards repeat statements, and parsing costs more than the rest of a
    small query's planning. Callers must treat ``Statement.tree`` as immutable.
    """
    statement = _checked.get(sql)
    if statement is not None:
        return statement
    size = check_size(sql, max_bytes)
    statement = _check(sql)
    if size <= _LARGE_STATEMENT and _repeated.again(sql):
        _checked.put(sql, statement)
    return statement


def check_size(sql: str, max_bytes: int = DEFAULT_MAX_STATEMENT_BYTES) -> int:
    """The statement's size in bytes; InvalidArgument naming the limit when over it (0: none)."""
    size = len(sql.encode("utf-8", "surrogatepass"))
    if max_bytes and size > max_bytes:
        raise InvalidArgument(
            f"statement is {size} bytes, over the limit of {max_bytes} bytes "
            "(raise max_statement_bytes in the [server] section of the configuration)"
        )
    return size


@contextmanager
def large_statement_turn(sql: str, max_bytes: int = DEFAULT_MAX_STATEMENT_BYTES) -> Iterator[None]:
    """Hold the turn of a large statement while it is parsed, planned and started.

    All of that is Python work on the statement's tree (parse, copies, SQL generation: seconds
    for a 256 KB IN list) and holds the GIL, so four at once kept a `SELECT 1` waiting for
    tenths of seconds. Large statements take turns; short ones never wait here.
    """
    if len(sql) <= _LARGE_STATEMENT:
        yield
        return
    check_size(sql, max_bytes)  # refused at once, not after waiting for its turn
    if not _LARGE_PARSES.acquire(timeout=_LARGE_PARSE_WAIT_SECONDS):
        raise Overloaded("too many large statements are being parsed at once; retry later")
    try:
        yield
    finally:
        _LARGE_PARSES.release()


def _check(sql: str) -> Statement:
    if not sql or not sql.strip():
        raise SqlSyntaxError("empty statement: send one SELECT, WITH, EXPLAIN, DESCRIBE or SHOW statement")
    kind = StatementKind.QUERY
    body = sql
    m = _EXPLAIN_ROUTE.match(sql)
    if m:
        kind, body = StatementKind.EXPLAIN_ROUTE, m.group("body")
    else:
        m = _EXPLAIN.match(sql)
        if m:
            kind, body = StatementKind.EXPLAIN, m.group("body")
    text = sql if kind is StatementKind.EXPLAIN else body
    body_shape = literal_shape(body)
    shape = body_shape if body.isascii() and len(body) <= MAX_TEMPLATE_BYTES else None
    template = TEMPLATES.get((kind, shape.key)) if shape is not None else None
    if template is not None and shape is not None and plain_values(shape):
        # Checked before with other values: same tree, same calls, same brackets outside its
        # literals, so the same nesting (engine.templates).
        tree = instantiate(template, shape)
        return Statement(
            sql=text, tree=tree, kind=kind, parameter_count=template.parameter_count, shaped=((kind, shape.key), tree)
        )
    if nesting_depth(sql) > MAX_NESTING:
        raise too_deep()
    try:
        tree = parse_one(body)
        check_tree(tree)
        # Once per text: a template's copies (other values) and bound parameters are values
        # only, and cannot add a qualified call.
        check_builtin_bypass(tree)
        # DuckDB runs the client's text when it names no configured table, else the text
        # generated from the tree: both must call only allowed functions.
        generated = tree.sql(dialect=DIALECT)
        generated_shape = literal_shape(generated) if generated != body else body_shape
        outcomes = {
            check_functions(body, body_shape),
            check_functions(generated, generated_shape) if generated != body else Outcome.CHECKED,
        }
        if Outcome.UNSERIALIZABLE in outcomes:
            check_calls(tree)
    except RecursionError:
        raise too_deep() from None
    statement = Statement(sql=text, tree=tree, kind=kind, parameter_count=count_parameters(tree))
    if (
        shape is not None
        and template is None
        and outcomes == {Outcome.CHECKED}
        and trusted(body_shape)
        and trusted(generated_shape)
    ):
        kept = template_of(faithful_copy(tree), shape, statement.parameter_count)
        if kept is not None:
            TEMPLATES.put((kind, shape.key), kept)
            statement = dataclasses.replace(statement, shaped=((kind, shape.key), tree))
    return statement
