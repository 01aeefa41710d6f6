"""Bind one row of parameter values into a statement, so it routes like a literal one.

A prepared dashboard query (``WHERE day >= ?``) can only be matched to a rollup once its
values are known; binding them as typed literals keeps the result types DuckDB would give
the parameters (Python int → BIGINT, float → DOUBLE), and the plan cache then keys on the
bound text, so each distinct value set is routed once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlglot import exp

from tierflight.engine.sandbox import DIALECT, Statement
from tierflight.errors import InvalidArgument


def literal(value: Any) -> exp.Expr:
    if isinstance(value, bool) or value is None:
        return exp.convert(value)
    if isinstance(value, int):
        return exp.cast(exp.Literal.number(value), exp.DataType.build("BIGINT"))
    if isinstance(value, float):
        return exp.cast(exp.Literal.string(repr(value)), exp.DataType.build("DOUBLE"))
    if isinstance(value, str | dt.date | dt.datetime | bytes):
        return exp.convert(value)
    raise InvalidArgument(f"parameter value of type {type(value).__name__} is not supported")


def bind(statement: Statement, row: Sequence[Any]) -> Statement:
    if len(row) != statement.parameter_count:
        raise InvalidArgument(f"the statement has {statement.parameter_count} parameter(s) but {len(row)} values were bound")
    positional = iter(row)
    tree = statement.tree.copy()

    def swap(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder):
            name = node.name
            if name and str(name).isdigit():
                return literal(row[int(name) - 1])
            return literal(next(positional))
        if isinstance(node, exp.Parameter) and str(node.this.name).isdigit():
            return literal(row[int(node.this.name) - 1])
        return node

    bound = tree.transform(swap)
    sql = bound.sql(dialect=DIALECT)
    if statement.kind == "explain":
        sql = "EXPLAIN " + sql
    return dataclasses.replace(statement, sql=sql, tree=bound, parameter_count=0)
