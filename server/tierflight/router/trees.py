"""Small helpers over sqlglot trees that the router's facts, rules and rewrite share."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from functools import lru_cache

import sqlglot
from sqlglot import exp

from tierflight.core.statement import DIALECT

# Aggregates and what wraps them are rewritten as a whole (measures.py), never descended into
# by the rewrite of dimensions and time expressions around them.
AGGREGATE_NODES = (exp.AggFunc, exp.Filter, exp.Window)


def bare_copy(tree: exp.Expr) -> exp.Expr:
    """A copy of ``tree`` for rewriting and generating SQL, without the token positions and
    comments each parsed node carries: ``Expr.copy()`` deep-copies those dictionaries
    through ``copy.deepcopy``, a fifth of the planning time of a statement never seen."""
    return _copy(tree, notes=False)


def faithful_copy(tree: exp.Expr) -> exp.Expr:
    """``Expr.copy()`` without ``copy.deepcopy``: comments, token positions and the parser's
    notes (``meta``, which generation reads: ``TOP``, a function's spelling) are copied as
    the flat lists and dictionaries they are. For a tree whose SQL must stay as written."""
    return _copy(tree, notes=True)


def _copy(tree: exp.Expr, *, notes: bool) -> exp.Expr:
    """Every node of ``tree`` anew (iteratively: deep trees must not recurse here); with
    ``notes``, each node's comments, type and meta too. Children are linked to their parent
    here as ``Expr.set`` would (its walk up the new tree to reset hashes has nothing to do:
    every node is new), the copy of each new statement of a known shape."""
    root = tree.__class__()
    stack = [(tree, root)]
    pop, push, node_type = stack.pop, stack.append, exp.Expr
    while stack:
        source, target = pop()
        if notes:
            if source.comments is not None:
                target.comments = list(source.comments)
            if source._type is not None:
                target._type = source._type.copy()
            if source._meta is not None:
                target._meta = dict(source._meta)
        args = target.args
        for key, value in source.args.items():
            if isinstance(value, node_type):
                child = value.__class__()
                child.parent, child.arg_key = target, key
                push((value, child))
                args[key] = child
            elif type(value) is list:
                items = []
                for i, v in enumerate(value):
                    if isinstance(v, node_type):
                        child = v.__class__()
                        child.parent, child.arg_key, child.index = target, key, i
                        push((v, child))
                        items.append(child)
                    else:
                        items.append(v)
                args[key] = items
            else:
                args[key] = value
    return root


def walk(tree: exp.Expr) -> Iterator[exp.Expr]:
    """Every node of ``tree`` in the order of ``tree.walk()`` (breadth first, children in
    argument order), without its nested generators: a plan walks each new statement a few
    times, and sqlglot's walk costs about twice this."""
    queue = deque([tree])
    pop, push, extend = queue.popleft, queue.append, queue.extend
    while queue:
        node = pop()
        yield node
        for value in node.args.values():
            if isinstance(value, exp.Expr):
                push(value)
            elif isinstance(value, list):
                extend(v for v in value if isinstance(v, exp.Expr))


@lru_cache(maxsize=32)
def _dtype(name: str) -> exp.DataType:
    return exp.DataType.build(name)


def dtype(name: str) -> exp.DataType:
    """A SQL type node; building one parses the name, so parsed ones are kept and copied."""
    copied = faithful_copy(_dtype(name))
    assert isinstance(copied, exp.DataType)
    return copied


@lru_cache(maxsize=1024)
def parsed(sql: str) -> exp.Expr:
    """A configured piece of SQL (derived column, rollup filter, state expression), parsed
    once: callers copy before changing it."""
    return sqlglot.parse_one(sql, read=DIALECT)


def canonical(node: exp.Expr) -> str:
    # The comparison key: names and keywords folded to lower case, as DuckDB folds them
    # (normalize=True would copy the tree first); comments left out.
    return fold_case(node.sql(dialect=DIALECT, identify=False, comments=False))


_STRING_LITERALS = re.compile(r"('(?:[^']|'')*')")


def fold_case(sql: str) -> str:
    """``sql`` (as sqlglot generates it: strings in single quotes, a quote inside doubled) in
    lower case except inside its string literals: 'IMPRESSION' and 'impression' are other
    values, so a rollup filtered on one never answers for the other."""
    if "'" not in sql:
        return sql.lower()
    parts = _STRING_LITERALS.split(sql)
    return "".join(part if i % 2 else part.lower() for i, part in enumerate(parts))


@lru_cache(maxsize=1024)
def canonical_sql(sql: str) -> str:
    return canonical(parsed(sql))


@lru_cache(maxsize=256)
def filter_key(sql: str) -> str:
    """A rollup filter's canonical text, spelled as normalise_predicate spells a conjunct."""
    return canonical(normalise_predicate(parsed(sql)))


def conjuncts(where: exp.Expr | None) -> list[exp.Expr]:
    """The top-level AND chain of a WHERE (or of a predicate), left to right."""
    if where is None:
        return []
    out: list[exp.Expr] = []
    stack = [where.this if isinstance(where, exp.Where) else where]
    while stack:
        cur = stack.pop()
        if isinstance(cur, exp.And):
            stack.extend([cur.right, cur.left])
        elif isinstance(cur, exp.Paren) and isinstance(cur.this, exp.And):
            stack.append(cur.this)
        else:
            out.append(cur)
    return out


_FLIPS: dict[type[exp.Expr], type[exp.Expr]] = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}


def normalise_predicate(pred: exp.Expr) -> exp.Expr:
    """Put the column on the left of a comparison with a constant (``X < ts`` → ``ts > X``);
    one spelling for what means the same: ``(p)`` is ``p``, ``x IN (v)`` is ``x = v``."""
    while isinstance(pred, exp.Paren):
        pred = pred.this
    if isinstance(pred, exp.In) and len(pred.expressions) == 1 and not pred.args.get("query") and not pred.args.get("unnest"):
        pred = exp.EQ(this=pred.this.copy(), expression=pred.expressions[0].copy())
    flip = _FLIPS.get(type(pred))
    if flip is not None and not isinstance(pred.this, exp.Column) and isinstance(pred.expression, exp.Column):
        return flip(this=pred.expression.copy(), expression=pred.this.copy())
    return pred


def transform_outside_aggs(expr: exp.Expr, fn: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
    """Apply ``fn`` top-down, in place, not descending into aggregates (they are rewritten
    separately); a node ``fn`` replaces is not descended into either."""

    def walk(n: exp.Expr) -> exp.Expr:
        out = fn(n)
        if out is not n:
            return out
        if isinstance(n, AGGREGATE_NODES):
            return n
        for key, value in list(n.args.items()):
            if isinstance(value, exp.Expr):
                n.set(key, walk(value))
            elif isinstance(value, list):
                n.set(key, [walk(v) if isinstance(v, exp.Expr) else v for v in value])
        return n

    return walk(expr)
