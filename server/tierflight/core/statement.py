"""A statement that passed the sandbox check (engine.sandbox), as the router and engine see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlglot import exp

DIALECT = "duckdb"


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
