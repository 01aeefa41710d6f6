"""The router: answer from the cheapest rollup that is exact, else from the raw tiers.

The planner only orders and remembers: it tries each rollup of the table cheapest first,
asks the rules (rules.py) whether it may answer, has the statement rewritten onto it
(rewrite.py) or split between it and the raw edges (split.py), and falls back to the raw
planner (raw.py). Statements are parsed once (the sandbox caches them by text); plans are
cached by statement text and the data generation, so a dashboard's repeated queries skip
matching entirely.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlglot import exp

from tierflight.core.grains import truncate
from tierflight.core.lru import LRU, Sightings
from tierflight.core.names import Names
from tierflight.core.sql import table_view_sql
from tierflight.core.statement import DIALECT, ShapeFacts, Statement
from tierflight.rollups.definition import StorageGroup, retention_start
from tierflight.rollups.registry import RollupRegistry, RollupState
from tierflight.router.aggregates import unknown_aggregate
from tierflight.router.catalog import CatalogRelations
from tierflight.router.covering import Extent, extent_of, plan_covering
from tierflight.router.facts import TableInfo, Target
from tierflight.router.joins import Dimension, plan_join
from tierflight.router.outputs import ColumnNames, keep_names, output_names
from tierflight.router.raw import DimensionLookup, RawPlanner
from tierflight.router.reusable import not_reusable
from tierflight.router.rewrite import rewrite_parts, rewrite_select
from tierflight.router.route import PartTier, Rejection, Route, RoutePart, Rule
from tierflight.router.rules import (
    FILTER_RULES,
    SHAPE_RULES,
    STATE_RULES,
    STATEMENT_RULES,
    Candidate,
    Reject,
    RuleFn,
    first_rejection,
    kept_verdict,
    locate_table,
)
from tierflight.router.split import split_source, whole_buckets
from tierflight.router.subqueries import NESTED_REASON, correlated, marker, nested_selects
from tierflight.router.templates import (
    RewriteTemplate,
    ShapeKey,
    TargetShape,
    Untemplated,
    Variant,
    build,
    reading_conjuncts,
    variant,
)
from tierflight.router.timerange import derived_grains
from tierflight.router.trees import faithful_copy
from tierflight.tiers.base import TimeRange
from tierflight.tiers.store import TableStore

StoreLookup = Callable[[], Mapping[str, TableStore]]

# A candidate rejected by one of these may still answer the whole buckets inside the range.
_SPLITTABLE = (Rule.ALIGNMENT, Rule.RETENTION)


class Router:
    def __init__(
        self,
        stores: StoreLookup,
        registry: RollupRegistry | None,
        now: Callable[[], dt.datetime],
        enabled: bool = True,
        column_names: ColumnNames | None = None,
        names: Names | None = None,
        catalog: CatalogRelations | None = None,
        dimensions: DimensionLookup | None = None,
    ) -> None:
        # Output names of a statement as DuckDB would name them; a rewrite keeps them.
        self._column_names = column_names
        self._stores = stores
        self.registry = registry
        self._names = names
        self.raw = RawPlanner(stores, names, catalog) if dimensions is None else RawPlanner(stores, names, catalog, dimensions)
        self._dimensions = dimensions
        self._now = now
        self.enabled = enabled
        self._infos: dict[str, TableInfo] = {}
        self._cache: LRU[tuple[str, str, int, tuple[int, ...]], Route] = LRU(4096)
        self._rewrites: LRU[tuple[str, tuple[str, ...] | None, StorageGroup], str | Reject] = LRU(8192)
        # Rewrites by statement shape (templates.py): a new text of a known shape skips them.
        self._templates: LRU[tuple[ShapeKey, tuple[str, ...], StorageGroup, Variant], RewriteTemplate | Reject | Untemplated] = LRU(4096)
        self._by_shape: LRU[tuple[ShapeKey, StorageGroup], tuple[frozenset[int], Reject | None]] = LRU(2048)
        # Plans and rewrites are kept from a key's second sighting on (core.lru.Sightings).
        self._planned, self._rewritten = Sightings(), Sightings()
        # Per literal shape of a statement (core.statement.ShapeFacts).
        self._unknown_aggregates: ShapeFacts[str | None] = ShapeFacts()
        self._reusable: ShapeFacts[bool] = ShapeFacts()
        self._extents: dict[str, tuple[tuple[int, tuple[int, ...]], Extent | None]] = {}
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
            self._templates.clear()
            self._by_shape.clear()

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
                    time_type=next((c.type for c in cfg.columns if c.name == cfg.time_column), "TIMESTAMP"),
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
        if route.rollup is None:
            route = self._covering(statement, key[2:]) or route
        # Registered objects (the hot tail's batches, S3 datasets) are not named by the
        # version; files and rollups are (every change to them moves it).
        # EXPLAIN ROUTE's route carries it too: it says whether a joined rollup of this very
        # version is held (engine/joined.py).
        if (
            statement.kind in ("query", "explain_route")
            and not route.registrations
            and self._is_reusable(statement)
        ):
            route = dataclasses.replace(route, version=key[2:])
        if self._planned.again(key[:2]):  # a text seen before, in any data version
            self._cache.put(key, route)
        self._count_hit(route)
        return route

    def _is_reusable(self, statement: Statement) -> bool:
        """Whether the answer depends only on the rows of the tables the version names: fact
        tables (their files and rollups) and dimension tables (each served version is a table
        of its own, and serving one moves the generation)."""
        dimensions = self._dimensions() if self._dimensions else {}
        tables = frozenset(name.lower() for name in (*self._table_infos(), *dimensions))
        return self._reusable.get(statement, lambda: not_reusable(statement.tree, tables) is None, tables)

    def _covering(self, statement: Statement, version: tuple[int, tuple[int, ...]]) -> Route | None:
        """Rule ``covering`` (router/covering.py): a time filter that every row passes does
        not keep a rollup without a time dimension from answering."""
        tree = statement.tree
        if not self.enabled or self.registry is None or statement.kind == "explain" or not isinstance(tree, exp.Select):
            return None
        try:
            _, info = locate_table(tree, self._table_infos(), self._names or Names(self._stores()))
        except Reject:
            return None
        store = self._stores()[info.name]
        time_not_null = any(c.name == info.time_column and not c.nullable for c in store.table.columns)
        return plan_covering(statement, info, lambda: self._extent(info.name, store, version), time_not_null, self._plan)

    def _extent(self, table: str, store: TableStore, version: tuple[int, tuple[int, ...]]) -> Extent | None:
        """The table's extent (covering.extent_of), listed once per data version: the same
        key as the plan cache's, which every ingest batch, flush and maintenance run moves."""
        known = self._extents.get(table)
        if known is not None and known[0] == version:
            return known[1]
        extent = extent_of(store.partitions())
        self._extents[table] = (version, extent)
        return extent

    def _count_hit(self, route: Route) -> None:
        if self.registry is not None:
            for part in route.parts:
                if part.rollup is not None:
                    self.registry.hit(part.rollup)

    def _raw(self, statement: Statement, rejected: tuple[Rejection, ...]) -> Route:
        return dataclasses.replace(self.raw.plan(statement), rejected=rejected)

    def _plan(self, statement: Statement) -> Route:
        tree = statement.tree
        registry = self.registry
        if not self.enabled or registry is None or statement.kind == "explain" or not isinstance(tree, exp.Select | exp.SetOperation):
            return self.raw.plan(statement)
        if statement.parameter_count:
            return self._raw(statement, (Rejection("*", Rule.PARAMETERS, "statements with parameters read raw tiers"),))
        unknown = self._unknown_aggregates.get(statement, lambda: unknown_aggregate(tree))
        if unknown is not None:
            why = f"{unknown}() is an aggregate no rollup stores: over a rollup it would weigh each stored group once"
            return self._raw(statement, (Rejection("*", Rule.MEASURE, why),))
        names = self._names or Names(self._stores())
        if not isinstance(tree, exp.Select):
            outer = Rejection("*", Rule.SHAPE, "a set operation: its branches are routed on their own")
            return self._plan_nested(statement, names, outer) or self.raw.plan(statement)
        try:
            table, info = locate_table(tree, self._table_infos(), names)
        except Reject as r:
            joined = self._join(statement, names) if r.rule is Rule.SHAPE and tree.args.get("joins") else None
            if isinstance(joined, Route):
                return joined
            outer = Rejection("*", r.rule, r.reason)
            nested = self._plan_nested(statement, names, outer) if r.rule is Rule.SHAPE else None
            return nested or self._raw(statement, joined or (outer,))
        target = Target(statement.sql, tree, table, info)
        store = self._stores()[info.name]
        best, rejected, splittable, estimates = self._choose(target)
        if best is None:
            for c in splittable:
                try:
                    return self._split(c, store, tuple(rejected))
                except Reject as r:
                    rejected.append(Rejection(c.group.name, r.rule, r.reason, in_split=True))
            return self._raw(statement, tuple(rejected))
        c, sql = best
        name = c.group.name
        part = RoutePart(PartTier.HOT, f"rollup:{name}", estimates[name], "exact rewrite onto mergeable states", rollup=name)
        return Route(sql=sql, parts=(part,), rejected=tuple(rejected))

    def _join(self, statement: Statement, names: Names) -> Route | tuple[Rejection, ...]:
        """Rule ``join`` (router/joins.py): the fact side planned as a statement of its own."""
        dimensions = {n: Dimension.of(d.table) for n, d in (self._dimensions() if self._dimensions else {}).items()}

        def fact(side: Statement) -> Route:
            route = self._plan(side)
            if route.rollup is not None:
                return route
            return self._covering(side, (self.generation, self._data_generation())) or route

        return plan_join(statement, self._table_infos(), dimensions, names, self._column_names, fact, self.raw.plan)

    def _choose(
        self, target: Target
    ) -> tuple[tuple[Candidate, str] | None, list[Rejection], list[Candidate], dict[str, int]]:
        """The cheapest rollup that answers ``target`` and its SQL (or None), the rejections,
        the candidates a split may still use, and each candidate's row estimate."""
        registry = self.registry
        assert registry is not None
        info = target.info
        store = self._stores()[info.name]
        now = self._now()
        fresh = registry.fresh_for(info.name, store.hot.rows)
        states = registry.all_states(info.name)
        # One estimate per candidate (each is a search of its bucket starts), reused below.
        estimates = {st.group.name: self._estimate(st, target.time_range) for st in states}
        candidates = [
            Candidate(target, st, now, allow_stale=registry.allow_stale, fresh=fresh)
            for st in sorted(states, key=lambda st: (estimates[st.group.name], st.group.name))
        ]
        rejected: list[Rejection] = []
        splittable: list[Candidate] = []
        best: tuple[Candidate, str] | None = None
        shape = TargetShape(target)
        # Cheapest first: the first candidate that rewrites is the answer, the rest are
        # only reported (their rewrite is never attempted).
        for c in candidates:
            name = c.group.name
            if best is not None:
                cheaper = estimates[best[0].group.name]
                rejected.append(Rejection(name, Rule.COST, f"{estimates[name]} rows to scan vs {cheaper} (not tried)"))
                continue
            try:
                sql = self._rewritten_sql(c, shape)
            except Reject as r:
                rejected.append(Rejection(name, r.rule, r.reason))
                if r.rule in _SPLITTABLE:
                    splittable.append(c)
                continue
            best = (c, sql)
        return best, rejected, splittable, estimates

    def _plan_nested(self, statement: Statement, names: Names, outer: Rejection) -> Route | None:
        """The statement with each aggregate subquery a rollup answers routed on its own
        (subqueries.py) and the rest planned raw around it; None when no subquery routes."""
        infos = self._table_infos()
        routed: list[tuple[int, str, RoutePart]] = []
        rejected: list[Rejection] = [outer]
        for nested in nested_selects(statement.tree):
            try:
                table, info = locate_table(nested.select, infos, names)
            except Reject:
                continue
            if correlated(nested.select, table, info):
                continue
            fixed = output_names(nested.select, info, statement.sql)
            if fixed is None:
                if nested.names_matter:
                    continue
                # Only its values are read (a scalar, IN or EXISTS subquery).
                fixed = [f"_{i}" for i in range(len(nested.select.expressions))]
            sql = nested.select.sql(dialect=DIALECT)
            target = Target(sql, nested.select, table, info, names=tuple(fixed))
            best, tried, _, estimates = self._choose(target)
            rejected += tried
            if best is not None:
                name = best[0].group.name
                part = RoutePart(PartTier.HOT, f"rollup:{name}", estimates[name], NESTED_REASON, rollup=name)
                routed.append((nested.index, best[1], part))
        if not routed:
            return None
        tree = faithful_copy(statement.tree)  # shared with the statement cache: never edit it
        selects = list(tree.find_all(exp.Select))
        markers = {}
        for index, sql, _ in routed:
            name = marker(statement.sql, index)
            selects[index].replace(exp.var(name))
            markers[name] = sql
        around = self.raw.plan(Statement(tree.sql(dialect=DIALECT), tree, statement.kind, 0))
        text = around.sql
        for name, sql in markers.items():
            text = text.replace(name, sql, 1)
        parts = (*(p for _, _, p in routed), *around.parts)
        return Route(sql=text, parts=parts, rejected=tuple(rejected), registrations=around.registrations)

    def _rewritten_sql(self, c: Candidate, shape: TargetShape) -> str:
        """The statement rewritten onto a rollup, or the Reject that rules it out. Past the
        state rules it depends only on the statement's text and the rollup's definition, so
        it is remembered across the plan-cache invalidations every ingest causes: dashboards
        re-plan the same statements."""
        verdict = first_rejection(STATE_RULES, c)
        if verdict is not None:
            raise verdict
        key = (c.target.sql, c.target.names, c.group)
        known = self._rewrites.get(key)
        if known is None:
            known = self._shaped(c, shape)
            if self._rewritten.again(key):
                self._rewrites.put(key, known)
        if isinstance(known, Reject):
            raise Reject(known.rule, known.reason)
        return known

    def _shaped(self, c: Candidate, target: TargetShape) -> str | Reject:
        """A new text: its rewrite from the template of its shape and variant (templates.py),
        building the template from this statement on the second statement of them."""
        if c.target.names is not None:
            return self._full(c)  # a subquery routed alone: its names are fixed by the caller
        shape, names = target.shape, target.names
        if shape is None or names is None:
            return self._full(c)
        # What the shape alone decides, asked once per shape and rollup: most rollups are
        # rejected by a statement rule before anything else is asked of the statement.
        decided = self._by_shape.get((shape.key, c.group))
        if decided is None:
            decided = (reading_conjuncts(c, shape), first_rejection(SHAPE_RULES, c))
            self._by_shape.put((shape.key, c.group), decided)
        reading, early = decided
        if early is not None:
            return Reject(early.rule, early.reason)
        key = (shape.key, names, c.group, variant(c, shape, reading))
        known = self._templates.get(key)
        if isinstance(known, RewriteTemplate):
            return known.fill(c, shape)
        if isinstance(known, Reject):
            return Reject(known.rule, known.reason)
        if known is None or known is Untemplated.REFUSED:
            # A shape's first statement: rewritten in full (most shapes a dashboard sends
            # come again, but one that does not must not pay for a template). The shape
            # rules passed (above): their facts are not computed again.
            full = self._full(c, FILTER_RULES)
            if known is None:
                self._templates.put(key, full if isinstance(full, Reject) else Untemplated.SEEN)
            return full
        try:
            verdict = first_rejection(FILTER_RULES, c)
            if verdict is not None:
                raise verdict
            select, kept = rewrite_parts(c)
            keep_names(c.target, select, self._column_names)
        except Reject as r:
            verdict = kept_verdict(r)
            self._templates.put(key, verdict)
            return verdict
        full = self._full(c, FILTER_RULES)
        built = build(select, kept, c.group, shape, key[3])
        if isinstance(built, RewriteTemplate) and built.fill(c, shape) != full:
            built = Untemplated.REFUSED  # not exact for this very statement: never used
        self._templates.put(key, built)
        return full

    def _full(self, c: Candidate, rules: tuple[RuleFn, ...] = STATEMENT_RULES) -> str | Reject:
        """The rewrite in full; ``rules``: the statement rules not known to pass already."""
        try:
            return first_rejection(rules, c) or self._generate(c, rewrite_select(c))
        except Reject as r:
            return kept_verdict(r)

    def _generate(self, c: Candidate, rewritten: exp.Select) -> str:
        keep_names(c.target, rewritten, self._column_names)
        return rewritten.sql(dialect=DIALECT, copy=False)  # our own tree: no copy first

    def _split(self, c: Candidate, store: TableStore, rejected: tuple[Rejection, ...]) -> Route:
        """A range the rollup covers only partly: whole buckets from the rollup, the edges
        (unaligned ends, or what lies before its retention) as the same states computed from
        the raw tiers, re-aggregated together by the rewritten statement."""
        group, target, rng = c.group, c.target, c.target.time_range
        if group.grain is None or rng.start is None or rng.end is None:
            raise Reject(Rule.ALIGNMENT, "needs a bounded time range")
        if any(m.sketch for m in group.measures) and target.facts.sketches:
            raise Reject(Rule.MEASURE, "sketches cannot be computed for the raw edges")
        a, b = whole_buckets(group.grain, rng, retention_start(group, c.now))
        verdict = first_rejection(STATEMENT_RULES, c)
        if verdict is not None:
            raise verdict
        rewritten = rewrite_select(c, drop_exact=True)
        keep_names(target, rewritten, self._column_names)
        raw_sources = store.sources(rng)
        raw_sql = table_view_sql(store.table, [s.sql for s in raw_sources])
        source = split_source(group, target.info.time_column, (a, b), target.exact_time_conjuncts(), raw_sql, target.alias)
        rewritten.set("from_", exp.From(this=source))
        edge_rows = sum(p.rows for s in raw_sources for p in s.partitions if p.start < a or p.end > b)
        rollup = RoutePart(
            PartTier.HOT, f"rollup:{group.name}", self._estimate(c.state, TimeRange(a, b)), f"whole {group.grain}s in [{a}, {b})", rollup=group.name
        )
        edges = tuple(
            RoutePart(PartTier(s.tier), f"{target.info.name}: edges of [{rng.start}, {rng.end})", edge_rows, "raw edges re-aggregated with the rollup")
            for s in raw_sources
        )
        registrations = tuple(r for s in raw_sources for r in s.registrations)
        sql = rewritten.sql(dialect=DIALECT, copy=False)
        return Route(sql=sql, parts=(rollup, *edges), rejected=rejected, registrations=registrations)

    def _estimate(self, state: RollupState, rng: TimeRange) -> int:
        times: Any = getattr(state, "times", None)
        if times is None or state.group.grain is None or (rng.start is None and rng.end is None):
            return state.rows
        lo = 0 if rng.start is None else bisect.bisect_left(times, _bucket_start(rng.start, state.group.grain))
        hi = len(times) if rng.end is None else bisect.bisect_left(times, _instant(rng.end))
        return max(0, hi - lo)


# Each plan estimates every rollup of the table over the same range: the bounds are
# converted once per grain, not once per rollup. Microseconds since the epoch, as the rollups'
# bucket starts are kept (registry.RollupState.times).
@functools.lru_cache(maxsize=256)
def _bucket_start(start: dt.datetime, grain: str) -> int:
    return _instant(truncate(start, grain))


@functools.lru_cache(maxsize=256)
def _instant(value: dt.datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return (value - _EPOCH) // _MICROSECOND


_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
