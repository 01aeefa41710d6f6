"""The router: answer from the cheapest rollup that is exact, else from the raw tiers.

Statements are parsed once (the sandbox caches them by text); plans are cached by statement
text and the data generation, so a dashboard's repeated queries skip matching entirely.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlglot import exp

from tierflight.core.grains import literal_datetime, next_boundary, truncate
from tierflight.core.lru import LRU
from tierflight.core.names import ROLLUP_DATABASE, Names
from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.core.statement import DIALECT, Statement
from tierflight.rollups.build import state_expr
from tierflight.rollups.definition import DERIVABLE, dimension_expr, retention_start
from tierflight.rollups.registry import RollupRegistry, RollupState
from tierflight.router.catalog import CatalogRelations
from tierflight.router.raw import RawPlanner
from tierflight.router.reusable import not_reusable
from tierflight.router.route import Rejection, Route, RoutePart
from tierflight.router.rules import (
    Reject,
    TableInfo,
    _transform_outside_aggs,
    bare_copy,
    bucket_literal,
    canonical,
    canonical_sql,
    coarse_time_predicate,
    conjuncts,
    normalise_predicate,
    retention_ok,
    rewrite_aggregate,
    rewrite_dimension_node,
    single_table,
    time_predicate,
)
from tierflight.router.timerange import column_grain, derived_grains, table_time_range
from tierflight.tiers.base import TimeRange
from tierflight.tiers.store import TableStore

StoreLookup = Callable[[], Mapping[str, TableStore]]


def rewrite_clause(expr: exp.Expr, info: TableInfo, state: RollupState) -> exp.Expr:
    group = state.group

    def visit(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Window):
            raise Reject("shape", "window functions are answered from raw tiers")
        if isinstance(n, exp.AggFunc) or (isinstance(n, exp.Filter) and isinstance(n.this, exp.AggFunc)):
            return rewrite_aggregate(n, info, group)
        if isinstance(n, exp.Subquery | exp.Select):
            raise Reject("shape", "subqueries are answered from raw tiers")
        return rewrite_dimension_node(n, info, group)

    return _transform_outside_aggs(expr, visit)


_AGG_KIND = {exp.Sum: "sum", exp.Min: "min", exp.Max: "max", exp.Avg: "sum", exp.ApproxDistinct: "hll"}


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
    start, end = e.meta.get("start"), e.meta.get("end")
    if start is not None and end is not None:
        if sql[start : end + 1].lower() != function:
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


@dataclass(frozen=True)
class StatementFacts:
    """What the prechecks ask of a statement, collected once per plan (not per candidate)."""

    grains: tuple[str, ...]  # time grains the statement groups or filters by, outside aggregates
    # Time grains only compared with constants in top-level WHERE conjuncts (``day BETWEEN
    # ...``): a coarser rollup answers those when the range is aligned to its buckets.
    range_grains: tuple[str, ...]
    where: tuple[exp.Expr, ...]  # the WHERE conjuncts
    aggregates: tuple[tuple[str, str, str], ...]  # (measure kind, column, function) per aggregate
    columns: tuple[tuple[str, str], ...]  # (lower-case name, name) of columns outside aggregates

    @functools.cached_property
    def where_keys(self) -> frozenset[str]:
        """Canonical form of each WHERE conjunct (SQL generation: only when a filtered rollup
        gets that far)."""
        return frozenset(canonical(normalise_predicate(p)) for p in self.where)

    @classmethod
    def of(cls, tree: exp.Select, info: TableInfo) -> StatementFacts:
        grains: list[str] = []
        range_grains: list[str] = []
        aggregates: list[tuple[str, str, str]] = []
        columns: list[tuple[str, str]] = []
        where = tuple(conjuncts(tree.args.get("where")))
        ranged: dict[int, str] = {}  # id of a range's subject -> its grain
        for subject in map(_range_subject, where):
            grain = None if subject is None else column_grain(subject, info.time_column, info.grains)
            if subject is not None and grain not in (None, "exact"):
                ranged[id(subject)] = str(grain)
        # One breadth-first walk (the order sqlglot's walk gives, so rejections name the same
        # column) that knows whether it is inside an aggregate: asking each node for its
        # ancestors cost a walk up the tree per node.
        queue: deque[tuple[exp.Expr, bool]] = deque([(tree, False)])
        while queue:
            node, in_agg = queue.popleft()
            if id(node) in ranged:
                range_grains.append(ranged[id(node)])
                continue
            if isinstance(node, exp.AggFunc):
                kind = _AGG_KIND.get(type(node))
                if kind and isinstance(node.this, exp.Column):
                    aggregates.append((kind, node.this.name.lower(), f"{node.key}({node.this.name})"))
                in_agg = True
            elif not in_agg and isinstance(node, exp.Column | exp.Cast | exp.TimestampTrunc | exp.DateTrunc | exp.TimeTrunc):
                grain = column_grain(node, info.time_column, info.grains)
                if grain not in (None, "exact"):
                    grains.append(str(grain))
            if not in_agg and isinstance(node, exp.Column):
                columns.append((node.name.lower(), node.name))
            queue.extend((child, in_agg) for child in node.iter_expressions())
        return cls(
            tuple(dict.fromkeys(grains)), tuple(dict.fromkeys(range_grains)), where, tuple(aggregates), tuple(columns)
        )


_RANGES = (exp.GTE, exp.GT, exp.LT, exp.LTE, exp.EQ)


def _range_subject(pred: exp.Expr) -> exp.Expr | None:
    """The side of a comparison that a constant date or timestamp bounds, if that is all
    the conjunct is (its grain is checked by coarse_time_predicate in the rewrite)."""
    left: exp.Expr = pred.this
    if isinstance(pred, exp.Between):
        bounds = (pred.args.get("low"), pred.args.get("high"))
        return left if all(b is not None and literal_datetime(b) is not None for b in bounds) else None
    if isinstance(pred, _RANGES):
        right: exp.Expr = pred.expression
        if literal_datetime(right) is not None:
            return left
        if literal_datetime(left) is not None:
            return right
    return None


def precheck(facts: StatementFacts, info: TableInfo, state: RollupState) -> None:
    """Cheap necessary conditions, checked before the (costlier) rewrite."""
    group = state.group
    for grain in facts.grains:
        if group.grain is None or grain not in DERIVABLE[group.grain]:
            raise Reject("grain", f"needs {grain} buckets, rollup has {group.grain or 'no time dimension'}")
    for grain in facts.range_grains:
        if group.grain is None:
            raise Reject("grain", f"needs {grain} buckets, rollup has no time dimension")
    dims = {d.lower() for d in group.dimensions}
    stored = {(m.kind, (m.column or "").lower()) for m in group.measures}
    for kind, name, shown in facts.aggregates:
        if name not in dims and (kind, name) not in stored:
            raise Reject("measure", f"{shown} is not stored")
    time_column = info.time_column.lower()
    filter_text = (group.filter or "").lower()
    for name, shown in facts.columns:
        in_filter = bool(filter_text and name in filter_text)
        if name in info.columns and name != time_column and name not in dims and not in_filter:
            raise Reject("dimension", f"column {shown} is not a dimension of the rollup")
    # Last: the only check that generates SQL (the statement's conjuncts, once per plan).
    if group.filter and canonical_sql(group.filter) not in facts.where_keys:
        raise Reject("filter", f"the statement does not imply the rollup's filter ({group.filter})")


class Router:
    def __init__(
        self,
        stores: StoreLookup,
        registry: RollupRegistry | None,
        now: Callable[[], dt.datetime],
        enabled: bool = True,
        column_names: Callable[[str], list[str]] | None = None,
        names: Names | None = None,
        catalog: CatalogRelations | None = None,
    ) -> None:
        # Output names of a statement as DuckDB would name them; a rewrite keeps them.
        self._column_names = column_names
        self._stores = stores
        self.registry = registry
        self._names = names
        self.raw = RawPlanner(stores, names, catalog)
        self._now = now
        self.enabled = enabled
        self._infos: dict[str, TableInfo] = {}
        self._cache: LRU[tuple[str, str, int, tuple[int, ...]], Route] = LRU(4096)
        self._rewrites: LRU[tuple[str, str, Any], str | Reject] = LRU(8192)
        self._lock = threading.Lock()
        self.generation = 0  # bumped whenever data or rollups change: invalidates plans

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._cache.clear()

    def schema_changed(self) -> None:
        """A table's columns changed (ingest evolved it): its facts are read again."""
        with self._lock:
            self._infos = {}
            self.generation += 1
            self._cache.clear()

    def _table_infos(self) -> dict[str, TableInfo]:
        stores = self._stores()
        if set(self._infos) != set(stores):
            infos = {}
            for name, store in stores.items():
                cfg = store.table
                infos[name] = TableInfo(
                    name=name,
                    time_column=cfg.time_column,
                    derived={k.lower(): v for k, v in cfg.derived.items()},
                    grains=derived_grains(dict(cfg.derived), cfg.time_column),
                    columns=frozenset(c.lower() for c in cfg.column_names),
                    spelled={**{c.lower(): c for c in cfg.column_names}, **{k.lower(): k for k in cfg.derived}},
                )
            self._infos = infos
        return self._infos

    def _data_generation(self) -> tuple[int, ...]:
        """Changes when any table's files change (here or in another process): cached routes
        name files, so they must not outlive them."""
        stores = self._stores()
        for store in stores.values():
            store.refresh_if_changed()
        return tuple(store.generation for store in stores.values())

    def plan(self, statement: Statement) -> Route:
        key = (statement.kind, statement.sql, self.generation, self._data_generation())
        cached = self._cache.get(key)
        if cached is not None:
            self._count_hit(cached)
            return cached
        route = self._plan(statement)
        # Registered objects (the hot tail's batches, S3 datasets) are not named by the
        # version; files and rollups are (every change to them moves it).
        if (
            statement.kind == "query"
            and not route.registrations
            and not_reusable(statement.tree, {name.lower() for name in self._table_infos()}) is None
        ):
            route = dataclasses.replace(route, version=key[2:])
        self._cache.put(key, route)
        self._count_hit(route)
        return route

    def _count_hit(self, route: Route) -> None:
        if self.registry is not None and route.rollup:
            for name in route.rollup.split(","):
                self.registry.hit(name)

    def _plan(self, statement: Statement) -> Route:
        tree = statement.tree
        if not self.enabled or self.registry is None or statement.kind == "explain" or not isinstance(tree, exp.Select):
            return self.raw.plan(statement)
        rejected: list[Rejection] = []
        if statement.parameter_count:
            route = self.raw.plan(statement)
            return dataclasses.replace(route, rejected=(Rejection("*", "parameters", "statements with parameters read raw tiers"),))
        try:
            table, info = single_table(tree, self._table_infos(), self._names or Names(self._stores()))
        except Reject as r:
            route = self.raw.plan(statement)
            return dataclasses.replace(route, rejected=(Rejection("*", r.rule, r.reason),))
        store = self._stores()[info.name]
        rng = table_time_range(table, info.time_column, info.grains)
        best: tuple[int, RollupState, str] | None = None
        splittable: list[RollupState] = []
        # Cheapest first: the first candidate that rewrites is the answer, the rest are
        # only reported (their rewrite is never attempted).
        # One estimate per candidate (each is a search of its bucket starts), reused below.
        estimates = {st.group.name: self._estimate(st, rng) for st in self.registry.all_states(info.name)}
        candidates = sorted(self.registry.all_states(info.name), key=lambda st: (estimates[st.group.name], st.group.name))
        facts: list[StatementFacts] = []

        def facts_of() -> StatementFacts:
            if not facts:
                facts.append(StatementFacts.of(tree, info))
            return facts[0]

        for state in candidates:
            name = state.group.name
            if best is not None:
                rejected.append(Rejection(name, "cost", f"{estimates[name]} rows to scan vs {best[0]} (not tried)"))
                continue
            try:
                if not (state.usable or (self.registry.allow_stale and state.status == "stale")):
                    raise Reject("status", f"rollup is {state.status}")
                if not self.registry.fresh_for(info.name, store.hot.rows):
                    raise Reject("freshness", "the hot tail has rows the rollup does not hold yet")
                retention_ok(state.group, rng.start, self._now())
                sql = self._rewritten_sql(statement, tree, table, info, state, rng, facts_of)
            except Reject as r:
                rejected.append(Rejection(name, r.rule, r.reason))
                if r.rule in ("alignment", "retention"):
                    splittable.append(state)
                continue
            best = (estimates[name], state, sql)
        if best is None:
            for state in splittable:
                try:
                    return self._split(statement, tree, table, info, state, rng, store, rejected)
                except Reject as r:
                    rejected.append(Rejection(state.group.name, f"split:{r.rule}", r.reason))
            route = self.raw.plan(statement)
            return dataclasses.replace(route, rejected=tuple(rejected))
        rows, state, sql = best
        part = RoutePart("hot", f"rollup:{state.group.name}", rows, "exact rewrite onto mergeable states")
        return Route(sql=sql, parts=(part,), rejected=tuple(rejected))

    def _rewritten_sql(
        self,
        statement: Statement,
        tree: exp.Select,
        table: exp.Table,
        info: TableInfo,
        state: RollupState,
        rng: TimeRange,
        facts: Callable[[], StatementFacts],
    ) -> str:
        """The statement rewritten onto a rollup, or the Reject that rules it out. Depends only
        on the statement's text and the rollup's definition, so it is remembered across the
        plan-cache invalidations every ingest causes: dashboards re-plan the same statements."""
        key = (statement.kind, statement.sql, state.group)
        known = self._rewrites.get(key)
        if isinstance(known, Reject):
            raise Reject(known.rule, known.reason)
        if known is not None:
            return known
        outcome: str | Reject
        try:
            precheck(facts(), info, state)
            rewritten = self._rewrite(tree, table, info, state, rng)
            self._keep_names(statement, rewritten, info)
            outcome = rewritten.sql(dialect=DIALECT, copy=False)  # our own tree: no copy first
        except Reject as r:
            outcome = r
        self._rewrites.put(key, outcome)
        if isinstance(outcome, Reject):
            raise Reject(outcome.rule, outcome.reason)
        return outcome

    def _split(
        self,
        statement: Statement,
        tree: exp.Select,
        table: exp.Table,
        info: TableInfo,
        state: RollupState,
        rng: TimeRange,
        store: TableStore,
        rejected: list[Rejection],
    ) -> Route:
        """A range the rollup covers only partly: whole buckets from the rollup, the edges
        (unaligned ends, or what lies before its retention) as the same states computed from
        the raw tiers, re-aggregated together by the rewritten statement."""
        group = state.group
        if group.grain is None or rng.start is None or rng.end is None:
            raise Reject("alignment", "needs a bounded time range")
        if any(m.kind == "hll" for m in group.measures) and any(isinstance(a, exp.ApproxDistinct) for a in tree.find_all(exp.AggFunc)):
            raise Reject("measure", "sketches cannot be computed for the raw edges")
        # Buckets strictly inside the range; the raw edges apply the statement's exact bounds.
        a = next_boundary(rng.start, group.grain)
        b = truncate(rng.end, group.grain)  # the statement's end bound is exact (timerange)
        keep_from = retention_start(group, self._now())
        if keep_from is not None:
            a = max(a, keep_from)
        if a >= b:
            raise Reject("alignment", "no whole bucket of the rollup lies inside the range")
        exact, _ = self._exact_time_conjuncts(tree, info)
        precheck(StatementFacts.of(tree, info), info, state)
        rewritten = self._rewrite(tree, table, info, state, rng, drop_exact=True)
        self._keep_names(statement, rewritten, info)
        dated = group.grain in ("day", "week", "month")
        ts = quote_ident(info.time_column)
        lo, hi = bucket_literal(a, dated).sql(dialect=DIALECT), bucket_literal(b, dated).sql(dialect=DIALECT)
        columns = [*group.dimensions, *(m.state for m in group.measures if m.kind != "hll"), *(m.state for m in group.measures if m.kind == "hll")]
        rollup_part = f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {state.qualified} WHERE {quote_ident(group.grain)} >= {lo} AND {quote_ident(group.grain)} < {hi}"
        raw_sources = store.sources(rng)
        body = table_view_sql(store.table, [s.sql for s in raw_sources])
        dims = [f"{dimension_expr(d, info.time_column)} AS {quote_ident(d)}" for d in group.dimensions]
        states = [f"{state_expr(m, group.sum_digits(m.column))} AS {quote_ident(m.state)}" for m in group.measures if m.kind != "hll"]
        states += [f"CAST(NULL AS BLOB) AS {quote_ident(m.state)}" for m in group.measures if m.kind == "hll"]
        edge = f"({ts} < {bucket_literal(a, False).sql(dialect=DIALECT)} OR {ts} >= {bucket_literal(b, False).sql(dialect=DIALECT)})"
        where = [edge, *(c.sql(dialect=DIALECT) for c in exact)]
        if group.filter:
            where.append(f"({group.filter})")
        group_by = f" GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
        raw_part = f"SELECT {', '.join(dims + states)} FROM ({body}) WHERE {' AND '.join(where)}{group_by}"
        marker = f"__tf_split_{uuid.uuid4().hex[:12]}"
        from_ = rewritten.args["from_"].this
        from_.set("this", exp.to_identifier(marker))
        from_.set("db", None)
        from_.set("catalog", None)
        sql = rewritten.sql(dialect=DIALECT, copy=False).replace(marker, f"({rollup_part} UNION ALL {raw_part})", 1)
        edge_rows = sum(p.rows for s in raw_sources for p in s.partitions if p.start < a or p.end > b)
        parts = (
            RoutePart("hot", f"rollup:{group.name}", self._estimate(state, TimeRange(a, b)), f"whole {group.grain}s in [{a}, {b})"),
            *(RoutePart(s.tier, f"{info.name}: edges of [{rng.start}, {rng.end})", edge_rows, "raw edges re-aggregated with the rollup") for s in raw_sources),
        )
        registrations = tuple(r for s in raw_sources for r in s.registrations)
        return Route(sql=sql, parts=parts, rejected=tuple(rejected), registrations=registrations)

    @staticmethod
    def _exact_time_conjuncts(tree: exp.Select, info: TableInfo) -> tuple[list[exp.Expr], list[exp.Expr]]:
        exact, other = [], []
        for pred in conjuncts(tree.args.get("where")):
            pred = normalise_predicate(pred)
            subject = pred.this if isinstance(pred, exp.Binary | exp.Between) else None
            if subject is not None and column_grain(subject, info.time_column, info.grains) == "exact":
                exact.append(pred)
            else:
                other.append(pred)
        return exact, other

    def _rewrite(
        self, tree: exp.Select, table: exp.Table, info: TableInfo, state: RollupState, rng: TimeRange, drop_exact: bool = False
    ) -> exp.Select:
        group = state.group
        select = bare_copy(tree)
        assert isinstance(select, exp.Select)
        if select.args.get("qualify") is not None:
            raise Reject("shape", "QUALIFY is answered from raw tiers")
        filter_key = canonical_sql(group.filter) if group.filter else None
        implied = False
        kept: list[exp.Expr] = []
        for pred in conjuncts(select.args.get("where")):
            pred = normalise_predicate(pred)
            if filter_key is not None and canonical(pred) == filter_key:
                implied = True
                continue
            if drop_exact and isinstance(pred, exp.Binary | exp.Between) and column_grain(pred.this, info.time_column, info.grains) == "exact":
                continue  # enforced inside the split's union
            timed = time_predicate(pred, info, group)
            if timed is None:
                timed = coarse_time_predicate(pred, info, group)
            kept.append(timed if timed is not None else rewrite_clause(pred, info, state))
        if filter_key is not None and not implied:
            raise Reject("filter", f"the statement does not imply the rollup's filter ({group.filter})")
        kept.extend(self._slice(group.grain, rng))
        select.set("where", exp.Where(this=exp.and_(*kept, copy=False)) if kept else None)
        select.set("expressions", [rewrite_clause(e, info, state) for e in select.expressions])
        for key in ("group", "having", "order"):
            clause = select.args.get(key)
            if clause is not None:
                select.set(key, rewrite_clause(clause, info, state))
        alias = table.alias or table.name
        select.set(
            "from_",
            exp.From(
                this=exp.Table(
                    this=exp.to_identifier(group.name),
                    db=exp.to_identifier("main"),
                    catalog=exp.to_identifier(ROLLUP_DATABASE),
                    alias=exp.TableAlias(this=exp.to_identifier(alias)),
                )
            ),
        )
        return select

    def _keep_names(self, statement: Statement, rewritten: exp.Select, info: TableInfo) -> None:
        """Alias every output column with the name the original statement gives it."""
        names = output_names(statement.tree, info, statement.sql)
        if names is None:
            if self._column_names is None:
                return
            try:
                names = self._column_names(statement.sql)
            except Exception as exc:  # noqa: BLE001 - the raw path will report the real error
                raise Reject("shape", f"the statement does not bind: {exc}") from None
        exprs = rewritten.expressions
        if len(names) != len(exprs) or any(isinstance(e, exp.Star) for e in exprs):
            raise Reject("shape", "output columns could not be matched")
        rewritten.set(
            "expressions",
            [exp.alias_(e.unalias() if isinstance(e, exp.Alias) else e, n, quoted=True, copy=False) for e, n in zip(exprs, names, strict=True)],
        )

    @staticmethod
    def _slice(grain: str | None, rng: TimeRange) -> list[exp.Expr]:
        """Extra bucket bounds implied by the statement's time range, so DuckDB's zone maps
        skip the rest of the rollup (a bucket holds rows from its start to the next one)."""
        if grain is None:
            return []
        out: list[exp.Expr] = []
        dated = grain in ("day", "week", "month")
        if rng.start is not None:
            out.append(exp.GTE(this=exp.column(grain), expression=bucket_literal(truncate(rng.start, grain), dated)))
        if rng.end is not None:
            end = rng.end
            if dated and end != truncate(end, "day"):
                end = truncate(end, "day") + dt.timedelta(days=1)
            out.append(exp.LT(this=exp.column(grain), expression=bucket_literal(end, dated)))
        return out

    def _estimate(self, state: RollupState, rng: TimeRange) -> int:
        times: Any = getattr(state, "times", None)
        if times is None or state.group.grain is None or (rng.start is None and rng.end is None):
            return state.rows
        lo = 0 if rng.start is None else int(np.searchsorted(times, np.datetime64(truncate(rng.start, state.group.grain), "us")))
        hi = len(times) if rng.end is None else int(np.searchsorted(times, np.datetime64(rng.end, "us")))
        return max(0, hi - lo)
