"""Bind one row of parameter values into a statement, so it routes like a literal one.

A prepared dashboard query (``WHERE day >= ?``) can only be matched to a rollup once its
values are known; binding them as typed literals keeps the result types DuckDB would give
the parameters (Python int → BIGINT, float → DOUBLE), and the plan cache then keys on the
bound text, so each distinct value set is routed once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import secrets
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from tierflight.core.errors import InvalidArgument
from tierflight.core.lru import LRU
from tierflight.core.statement import DIALECT, Statement
from tierflight.router.trees import faithful_copy

_BIGINT = (-(1 << 63), (1 << 63) - 1)
_MAX_DECIMAL_DIGITS = 38  # DuckDB's widest DECIMAL


_TYPES: dict[str, exp.DataType] = {}


def _cast(value: exp.Expr, kind: str) -> exp.Expr:
    """``CAST(value AS kind)``, the type parsed once per spelling (a value set is bound per
    execution of a prepared statement)."""
    to = _TYPES.get(kind)
    if to is None:
        to = _TYPES[kind] = exp.DataType.build(kind, dialect=DIALECT)
    if any(isinstance(v, exp.Expr | list) for v in to.args.values()):
        return exp.Cast(this=value, to=to.copy())  # DECIMAL(p, s): its parameters are nodes
    # A type of scalar arguments only: a new node of the same arguments is a copy, without
    # deepcopy's walk (a value set is bound per execution).
    return exp.Cast(this=value, to=exp.DataType(**to.args))


def _integer(value: int) -> exp.Expr:
    # BIGINT as DuckDB gives a Python int; wider values (uint64, decimal256 integers) keep
    # every digit in the next type that holds them.
    if _BIGINT[0] <= value <= _BIGINT[1]:
        kind = "BIGINT"
    elif 0 <= value < 1 << 64:
        kind = "UBIGINT"
    elif -(1 << 127) <= value < 1 << 127:
        kind = "HUGEINT"
    else:
        raise InvalidArgument(f"integer parameter {value} does not fit DuckDB's HUGEINT")
    return _cast(exp.Literal.number(value), kind)


def _decimal(value: decimal.Decimal) -> exp.Expr:
    """A DECIMAL literal of exactly the value's digits: never rounded through a double."""
    if not value.is_finite():
        raise InvalidArgument(f"decimal parameter {value} is not a finite number")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    precision = max(len(digits) + max(0, exponent), scale, 1)
    if precision > _MAX_DECIMAL_DIGITS:
        raise InvalidArgument(
            f"decimal parameter {value} has {precision} digits; DuckDB's DECIMAL holds at most {_MAX_DECIMAL_DIGITS}"
        )
    text = format(value, "f")
    return _cast(exp.Literal.string(text), f"DECIMAL({precision}, {scale})")


# sqlglot converts a date or time to a function of a string (DateStrToDate ...) that DuckDB's
# SQL writes as a cast; the parser reads that cast back as a Cast. A bound value is made the
# Cast itself, so a bound statement's tree is the tree of the same statement written with
# literals: the router's templates see a constant where it stands (a hole), not a function.
_TEMPORAL: dict[type[exp.Expr], str] = {
    exp.DateStrToDate: "DATE",
    exp.TimeStrToTime: "TIMESTAMP",
    exp.TsOrDsToTime: "TIME",
}


def _temporal(value: dt.date | dt.time) -> exp.Expr:
    converted = exp.convert(value)
    kind = _TEMPORAL.get(type(converted))
    if kind is None or not isinstance(converted.this, exp.Literal):
        return converted
    if kind == "TIMESTAMP" and converted.args.get("zone") is not None:
        kind = "TIMESTAMPTZ"
    return _cast(converted.this, kind)


def literal(value: Any) -> exp.Expr:
    if isinstance(value, bool) or value is None:
        return exp.convert(value)
    if isinstance(value, int):
        return _integer(value)
    if isinstance(value, float):
        return _cast(exp.Literal.string(repr(value)), "DOUBLE")
    if isinstance(value, decimal.Decimal):
        return _decimal(value)
    if isinstance(value, dt.date | dt.time):
        return _temporal(value)
    if isinstance(value, str | bytes):
        return exp.convert(value)
    raise InvalidArgument(f"parameter value of type {type(value).__name__} is not supported")


def _is_placeholder(node: exp.Expr) -> bool:
    """``?``, ``$n`` (either spelling sqlglot parses it as) or any other placeholder."""
    return isinstance(node, exp.Placeholder) or (isinstance(node, exp.Parameter) and str(node.this.name).isdigit())


def _number(node: exp.Expr) -> int | None:
    """A placeholder's 1-based number (``$n``), or None for a positional ``?``."""
    name = node.name if isinstance(node, exp.Placeholder) else node.this.name
    return int(name) if name and str(name).isdigit() else None


def placeholders(tree: exp.Expr) -> list[tuple[int, exp.Expr]]:
    """Each placeholder of ``tree`` with its 0-based parameter index: ``$n`` is n - 1; ``?``
    counts in the order the statement's SQL text has them, which is how DuckDB numbers them
    (the tree's own order is not: a LIMIT comes before the WHERE in it)."""
    numbered: list[tuple[int, exp.Expr]] = []
    positional: list[exp.Expr] = []
    for node in tree.dfs():
        if not _is_placeholder(node):
            continue
        number = _number(node)
        if number is None:
            positional.append(node)
        else:
            numbered.append((number - 1, node))
    if len(positional) > 1:
        # Render a copy with a marker per placeholder and read the markers' order back.
        tag = secrets.token_hex(6)
        copy = tree.copy()
        copies = [n for n in copy.dfs() if _is_placeholder(n) and _number(n) is None]
        for i, node in enumerate(copies):
            node.replace(exp.column(f"tf{tag}p{i}"))
        text = copy.sql(dialect=DIALECT)
        order = sorted(range(len(positional)), key=lambda i: text.find(f"tf{tag}p{i}"))
        positional = [positional[i] for i in order]
    return numbered + list(enumerate(positional))


# Per statement text: the parameter index of each placeholder, in the tree's walk order. A
# prepared statement binds a value set per execution; its placeholders' order (a render of
# the tree when several are positional) is found once.
_ORDERS: LRU[str, tuple[int, ...]] = LRU(1024)


def _order(statement: Statement) -> tuple[int, ...]:
    order = _ORDERS.get(statement.sql)
    if order is None:
        index_of = {id(node): index for index, node in placeholders(statement.tree)}
        order = tuple(index_of[id(node)] for node in statement.tree.dfs() if _is_placeholder(node))
        _ORDERS.put(statement.sql, order)
    return order


# Per statement text and the Python types of a value set: its SQL cut around the bound
# values and which value goes in each cut (by text position), or ((), ()) when a value's SQL
# would not be its own text there (then the whole tree is generated per value set). Writing
# the SQL of a dashboard statement costs several times what cutting the values in does.
_Cut = tuple[tuple[str, ...], tuple[int, ...]]
_RENDERS: LRU[tuple[str, tuple[type, ...]], _Cut] = LRU(1024)

# Where a value's SQL is its own text whatever the value: a comparison's or arithmetic's
# operand, a list's item, a LIMIT. Elsewhere (an INTERVAL's count, a function's argument) the
# generator may write a value's neighbours after reading it, so one value set's check would
# not hold for the next.
_CUTTABLE = (
    exp.Predicate,
    exp.Between,
    exp.In,
    exp.Tuple,
    exp.Paren,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Neg,
    exp.Limit,
    exp.Offset,
    exp.Alias,
)


def _render(statement: Statement, tree: exp.Expr, values: list[exp.Expr], kinds: tuple[type, ...]) -> str:
    """``tree.sql()`` of the bound tree (``values``: its bound nodes, in walk order)."""
    key = (statement.sql, kinds)
    cut = _RENDERS.get(key)
    if cut is None:
        cut = _cut(tree, values)
        _RENDERS.put(key, cut)
    pieces, order = cut
    return _join(pieces, order, values) if pieces else tree.sql(dialect=DIALECT)


def _join(pieces: tuple[str, ...], order: tuple[int, ...], values: list[exp.Expr]) -> str:
    out = [pieces[0]]
    for index, piece in zip(order, pieces[1:], strict=True):
        out += [values[index].sql(dialect=DIALECT), piece]
    return "".join(out)


def _cut(tree: exp.Expr, values: list[exp.Expr]) -> _Cut:
    """The bound tree's SQL cut around its values: kept only if putting each value's own SQL
    back gives exactly the tree's SQL (the first value set of these types checks it)."""
    refused: _Cut = ((), ())
    if not all(isinstance(v.parent, _CUTTABLE) for v in values):
        return refused
    whole = tree.sql(dialect=DIALECT)
    tag = secrets.token_hex(6)
    markers = [f"tf{tag}v{i}" for i in range(len(values))]
    columns = [exp.column(m) for m in markers]
    for value, column in zip(values, columns, strict=True):
        value.replace(column)
    try:
        text = tree.sql(dialect=DIALECT)
    finally:
        for value, column in zip(values, columns, strict=True):
            column.replace(value)
    if any(text.count(m) != 1 for m in markers):
        return refused
    found = sorted((text.find(m), i) for i, m in enumerate(markers))
    pieces: list[str] = []
    at = 0
    for position, i in found:
        pieces.append(text[at:position])
        at = position + len(markers[i])
    pieces.append(text[at:])
    cut = (tuple(pieces), tuple(i for _, i in found))
    return cut if _join(*cut, values) == whole else refused


def bind(statement: Statement, row: Sequence[Any]) -> Statement:
    if len(row) != statement.parameter_count:
        raise InvalidArgument(f"the statement has {statement.parameter_count} parameter(s) but {len(row)} values were bound")
    order = _order(statement)
    tree = faithful_copy(statement.tree)
    nodes = [node for node in tree.dfs() if _is_placeholder(node)]
    values: list[exp.Expr] = []
    for index, node in zip(order, nodes, strict=True):
        values.append(node.replace(literal(row[index])))
    sql = _render(statement, tree, values, tuple(type(row[index]) for index in order))
    if statement.kind == "explain":
        sql = "EXPLAIN " + sql
    return dataclasses.replace(statement, sql=sql, tree=tree, parameter_count=0)
