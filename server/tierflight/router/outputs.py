"""The output column names of a statement, kept by its rewrite: a client sees the columns
DuckDB would have named had it read the table, whatever the rollup's columns are called."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from sqlglot import exp

from tierflight.router.facts import TableInfo, Target
from tierflight.router.route import Rule
from tierflight.router.rules import Reject

# Aggregates whose output name DuckDB spells as ``<name as written, lower case>(<column>)``.
_NAMED_AGGREGATES: Mapping[type[exp.Expr], str] = {
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Count: "count",
    exp.ApproxDistinct: "approx_count_distinct",
}
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A note (``Expr.meta``) on an aggregate of a tree copied for another text (engine.templates):
# its name as written, which that text spells the same way but at other positions.
SPELLING = "tf_spelling"


def named_aggregate(node: exp.Expr) -> bool:
    """Whether DuckDB names ``node``'s column after its spelling (see ``output_names``)."""
    return type(node) in _NAMED_AGGREGATES

# Binds a statement's text and returns DuckDB's names for its output columns.
ColumnNames = Callable[[str], list[str]]


def output_names(tree: exp.Expr, info: TableInfo, sql: str | None = None) -> list[str] | None:
    """The output column names DuckDB gives a SELECT whose every expression is aliased, a
    plain column of the table, or a plain aggregate of one (``sum(bid_price)``,
    ``count(*)``); None when another expression needs DuckDB's own naming."""
    if not isinstance(tree, exp.Select):
        return None
    names = []
    for e in tree.expressions:
        if isinstance(e, exp.Alias):
            names.append(e.alias)
        elif isinstance(e, exp.Column) and not isinstance(e.this, exp.Star) and e.name.lower() in info.spelled:
            names.append(info.spelled[e.name.lower()])
        else:
            name = _aggregate_name(e, sql)
            if name is None:
                return None
            names.append(name)
    return names


def _aggregate_name(e: exp.Expr, sql: str | None) -> str | None:
    function = _NAMED_AGGREGATES.get(type(e))
    if function is None or sql is None:
        return None
    # sqlglot folds spellings together (it reads MEAN as AVG in some versions, DuckDB keeps
    # what was written): the name in the source text must be the one DuckDB would print.
    spelling = e.meta.get(SPELLING)
    start, end = e.meta.get("start"), e.meta.get("end")
    if spelling is None and start is not None and end is not None:
        spelling = sql[start : end + 1]
    if spelling is not None:
        if spelling.lower() != function:
            return None
    elif function not in ("min", "max"):
        return None
    arg = e.this
    if isinstance(e, exp.Count) and (arg is None or isinstance(arg, exp.Star)):
        return "count_star()"
    if len([v for v in e.args.values() if v is not None]) != 1:
        return None
    if not isinstance(arg, exp.Column) or arg.table or not _PLAIN_IDENTIFIER.match(arg.name):
        return None
    return f"{function}({arg.name})"


def keep_names(target: Target, rewritten: exp.Select, column_names: ColumnNames | None) -> None:
    """Alias every output column of ``rewritten`` with the name the statement gives it
    (read off the tree when it can be, else bound by ``column_names``)."""
    names = list(target.names) if target.names is not None else output_names(target.tree, target.info, target.sql)
    if names is None:
        if column_names is None:
            return
        try:
            names = column_names(target.sql)
        except Exception as exc:  # noqa: BLE001 - the raw path will report the real error
            raise Reject(Rule.SHAPE, f"the statement does not bind: {exc}") from None
    exprs = rewritten.expressions
    if len(names) != len(exprs) or any(isinstance(e, exp.Star) for e in exprs):
        raise Reject(Rule.SHAPE, "output columns could not be matched")
    rewritten.set(
        "expressions",
        [exp.alias_(e.unalias() if isinstance(e, exp.Alias) else e, n, quoted=True, copy=False) for e, n in zip(exprs, names, strict=True)],
    )
