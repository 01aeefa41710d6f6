"""A statement that passed the sandbox check (engine.sandbox), as the router and engine see it."""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from tierflight.core.lru import LRU

# One DuckDB dialect object for every parse and generation: sqlglot builds a new one from a
# name on each call that is given the name.
DIALECT = Dialect.get_or_raise("duckdb")

T = TypeVar("T")


class StatementKind(enum.StrEnum):
    QUERY = "query"
    EXPLAIN = "explain"  # DuckDB's plan (EXPLAIN, EXPLAIN ANALYZE): runs the client's text
    EXPLAIN_ROUTE = "explain_route"  # tierflight's route of the inner query


@dataclass(frozen=True)
class Statement:
    """A statement that passed the check."""

    sql: str  # what DuckDB runs (for EXPLAIN ROUTE: the inner query)
    tree: exp.Expr  # the parsed (inner) query
    kind: StatementKind
    parameter_count: int
    # The sandbox's literal shape of a tree that came from its template (engine.templates),
    # held with that tree: statements of one shape differ only in plain string and number
    # values. A copy with another tree (dataclasses.replace: bound parameters, a dropped
    # filter) is not of that shape, and has none.
    shaped: tuple[Hashable, exp.Expr] | None = field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> Hashable | None:
        """The key of the statement's literal shape, or None if it has none."""
        shaped = self.shaped
        return shaped[0] if shaped is not None and shaped[1] is self.tree else None


class ShapeFacts(Generic[T]):
    """A fact about a statement's structure (its functions, tables, NULL comparisons), found
    once per literal shape: a new text of a known shape is most of what dashboards send, and
    each fact was a walk of its tree. Only for facts no plain string or number value changes,
    given ``context`` (what else the fact depends on)."""

    def __init__(self, limit: int = 4096) -> None:
        self._known: LRU[tuple[Hashable, ...], tuple[T]] = LRU(limit)

    def get(self, statement: Statement, find: Callable[[], T], *context: Hashable) -> T:
        shape = statement.shape
        if shape is None:
            return find()
        key = (shape, *context)
        known = self._known.get(key)
        if known is None:
            known = (find(),)
            self._known.put(key, known)
        return known[0]
