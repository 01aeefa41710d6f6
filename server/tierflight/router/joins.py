"""Rule ``join``: a fact table joined to dimension tables on their keys, answered from a rollup.

``SELECT a.vertical, sum(e.bid_price) FROM events e JOIN advertisers a ON e.advertiser_id =
a.advertiser_id GROUP BY 1`` is split in two (a pure tree-to-tree rewrite):

* the *fact side*, one aggregate over the fact table alone, grouped by the join keys and by
  every fact expression the statement groups by, with one partial measure per aggregate
  (``count(*)``, ``sum(x)``, ``min(x)``, ``max(x)``, ``count(x)``; ``avg`` as a sum and a
  count; ``approx_count_distinct(x)`` kept as the list of HLL states the rewrite would have
  estimated, merged after the join): an ordinary statement, planned by the planner like any other (rules, rewrite onto a
  rollup's states, splits with raw edges, the hot tail), so nothing here re-derives measures;
* the *outer statement*, the user's own over that small result in place of the fact table,
  joined to the dimension tables as written and re-aggregated (sum of partial counts and
  sums, min of mins, ...), its fact expressions replaced by the fact side's columns.

This is exact only because each fact row meets at most one row of each dimension (its key is
unique and NOT NULL, checked on every load), the fact table is the preserved side (FROM
<fact> [LEFT] JOIN <dimension>) and every expression reading fact rows outside an aggregate is
one the fact side groups by. Anything else stays raw and EXPLAIN ROUTE says why: a join
column that is not the dimension's key, a table that is not a declared dimension, RIGHT, FULL,
CROSS, SEMI, ANTI or NATURAL joins, a join condition beyond the key equality (a filter inside
a LEFT JOIN's ON keeps unmatched rows: not the same as in WHERE), a conjunct mixing fact and
dimension columns, DISTINCT aggregates over fact columns other than COUNT(DISTINCT column),
aggregates of dimension columns weighted by fact rows (sum, avg), windows, subqueries, CTEs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from tierflight.core.config import TableConfig
from tierflight.core.names import Kind, Names
from tierflight.core.statement import DIALECT, Statement, StatementKind
from tierflight.router.facts import TableInfo
from tierflight.router.flatten import flatten
from tierflight.router.outputs import ColumnNames, output_names
from tierflight.router.route import Rejection, Route, Rule
from tierflight.router.rules import Reject
from tierflight.router.trees import conjuncts, dtype, fold_case

_FACT = "fact"  # the owner of a fact column (dimension columns are owned by their alias)
_ALIAS = ""  # an unqualified name that is no column: a select-list alias
JOIN_REASON = "joined to dimension tables on their keys: the fact side aggregated first"


@dataclass(frozen=True)
class Dimension:
    name: str
    key: str  # lower case
    columns: frozenset[str]  # lower case

    @classmethod
    def of(cls, table: TableConfig) -> Dimension:
        assert table.key is not None
        return cls(table.name, table.key.lower(), frozenset(c.lower() for c in table.column_names))


@dataclass(frozen=True)
class JoinSplit:
    inner: exp.Select  # the fact side: one aggregate over the fact table
    outer: exp.Select  # the statement over ``(<marker>) AS <fact alias>`` and the dimensions
    marker: str  # stands for the fact side's SQL in the outer statement's text
    sketches: frozenset[str] = frozenset()  # fact-side columns to keep as lists of HLL states
    fact_alias: str = ""
    dimensions: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)  # alias -> columns
    using_keys: frozenset[str] = frozenset()  # join keys named in USING (lower case)


@dataclass
class _Join:
    alias: str
    dimension: Dimension
    side: str  # "" or "LEFT"
    using: bool
    condition: exp.Expr | None  # the key equality (ON, or a WHERE conjunct of a comma join)


class _Splitter:
    def __init__(self, tree: exp.Select, fact: exp.Table, info: TableInfo, joins: dict[str, _Join]) -> None:
        self.tree = tree
        self.info = info
        self.fact_alias = fact.alias or fact.name
        self.fact_columns = info.columns | frozenset(info.derived)
        self.joins = joins
        self.aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
        self.keys: dict[str, str] = {}  # fact join column (lower) -> as configured
        self.groups: dict[str, tuple[str, exp.Expr]] = {}  # fact expression key -> (column, expression)
        self.measures: dict[str, tuple[str, exp.Expr]] = {}  # measure key -> (column, expression)
        self.sketches: set[str] = set()  # fact-side columns that must keep merged HLL states

    # -- names -----------------------------------------------------------------------------

    def owner(self, col: exp.Column) -> str:
        """The fact table (_FACT), a dimension's alias, or _ALIAS for a select-list alias."""
        if col.args.get("db") is not None or col.args.get("catalog") is not None:
            raise Reject(Rule.SHAPE, "join: schema-qualified column references are answered from raw tiers")
        name, table = col.name.lower(), col.table.lower()
        if isinstance(col.this, exp.Star):
            raise Reject(Rule.SHAPE, "join: * is answered from raw tiers")
        if table:
            if table == self.fact_alias.lower() and name in self.fact_columns:
                return _FACT
            join = self.joins.get(table)
            if join is not None and name in join.dimension.columns:
                return table
            raise Reject(Rule.SHAPE, f"join: unknown column {col.sql(dialect=DIALECT)}")
        in_fact = name in self.fact_columns
        dims = [a for a, j in self.joins.items() if name in j.dimension.columns]
        if in_fact and all(self.joins[a].using and self.joins[a].dimension.key == name for a in dims):
            return _FACT  # a USING key: the fact side keeps it
        if not in_fact and len(dims) == 1:
            return dims[0]
        if not in_fact and not dims and name in self.aliases:
            return _ALIAS
        raise Reject(Rule.SHAPE, f"join: column {col.name} is ambiguous or unknown")

    def owners(self, node: exp.Expr) -> set[str]:
        return {self.owner(c) for c in node.find_all(exp.Column)}

    def key_of(self, node: exp.Expr) -> str:
        """Compared text of a fact expression, however its columns are qualified."""
        copy = node.copy()
        for col in copy.find_all(exp.Column):
            col.set("table", None)
        return fold_case(copy.sql(dialect=DIALECT, comments=False))

    def fact_column(self, name: str) -> exp.Column:
        return exp.column(name, table=self.fact_alias, quoted=True)

    # -- the fact side ---------------------------------------------------------------------

    def group(self, node: exp.Expr) -> exp.Column:
        """The fact side's column grouping by ``node`` (a fact expression)."""
        if isinstance(node, exp.Column) and node.name.lower() in self.keys:
            return self.fact_column(self.keys[node.name.lower()])
        key = self.key_of(node)
        if key not in self.groups:
            self.groups[key] = (f"_g{len(self.groups)}", node.copy())
        return self.fact_column(self.groups[key][0])

    def measure(self, node: exp.Expr) -> exp.Column:
        key = self.key_of(node)
        if key not in self.measures:
            self.measures[key] = (f"_m{len(self.measures)}", node)
        return self.fact_column(self.measures[key][0])

    # -- the outer statement ---------------------------------------------------------------

    def rewrite(self, node: exp.Expr) -> exp.Expr:
        """``node`` over the fact side's columns (a copy is changed, never the statement)."""
        replaced = self._visit(node)
        if replaced is not None:
            return replaced
        for child in list(node.iter_expressions()):
            new = self.rewrite(child)
            if new is not child:
                child.replace(new)
        return node

    def _visit(self, node: exp.Expr) -> exp.Expr | None:
        if isinstance(node, exp.Filter):
            raise Reject(Rule.MEASURE, "join: aggregates with FILTER are answered from raw tiers")
        if isinstance(node, exp.AggFunc):
            return self.aggregate(node)
        if isinstance(node, exp.Column):
            owner = self.owner(node)
            if owner == _FACT:
                if node.name.lower() in self.keys:
                    return None
                return self.group(node) if self.key_of(node) in self.groups else self._ungrouped(node)
            return None
        if self.groups and not isinstance(node, exp.Literal) and self.key_of(node) in self.groups and self.owners(node) == {_FACT}:
            return self.group(node)
        return None

    def _ungrouped(self, col: exp.Column) -> exp.Expr:
        raise Reject(Rule.DIMENSION, f"join: fact column {col.name} is read outside GROUP BY")

    def aggregate(self, agg: exp.AggFunc) -> exp.Expr:
        owners = self.owners(agg)
        shown = agg.sql(dialect=DIALECT)
        if _FACT in owners and len(owners) > 1:
            raise Reject(Rule.MEASURE, f"join: {shown} mixes fact and dimension columns")
        if any(v not in (None, [], True, False) for k, v in agg.args.items() if k not in ("this", "big_int")):
            raise Reject(Rule.MEASURE, f"join: {shown} is answered from raw tiers")
        arg = agg.this
        if isinstance(agg, exp.Count) and (arg is None or isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string)):
            return _count(self.measure(exp.Count(this=exp.Star())))
        if _FACT not in owners:
            if not owners:
                raise Reject(Rule.MEASURE, f"join: {shown} over constants is answered from raw tiers")
            if isinstance(agg, exp.Min | exp.Max) or (isinstance(agg, exp.Count) and isinstance(arg, exp.Distinct)):
                return agg.copy()  # each joined value is seen, however many fact rows meet it
            if isinstance(agg, exp.Count) and isinstance(arg, exp.Column):
                rows = self.measure(exp.Count(this=exp.Star()))
                counted = exp.If(this=exp.Not(this=exp.Is(this=arg.copy(), expression=exp.Null())), true=rows)
                return _count(counted)
            raise Reject(Rule.MEASURE, f"join: {shown} weights a dimension column by fact rows")
        if isinstance(agg, exp.Count) and isinstance(arg, exp.Distinct):
            cols = arg.expressions
            if not cols or not all(isinstance(c, exp.Column) for c in cols):
                raise Reject(Rule.MEASURE, f"join: {shown} is exact only over columns")
            return exp.Count(this=exp.Distinct(expressions=[self.group(c) for c in cols]))
        if not isinstance(arg, exp.Column):
            raise Reject(Rule.MEASURE, f"join: {shown} is not an aggregate of one fact column")
        if isinstance(agg, exp.Count):
            return _count(self.measure(exp.Count(this=arg.copy())))
        if isinstance(agg, exp.Sum | exp.Min | exp.Max):
            return type(agg)(this=self.measure(type(agg)(this=arg.copy())))
        if isinstance(agg, exp.ApproxDistinct):
            # The fact side keeps each group's list of sketches (sketches, not estimates: those
            # do not add up); the statement merges the lists of the groups it joins together.
            states = self.measure(exp.ApproxDistinct(this=arg.copy()))
            self.sketches.add(states.name)
            merged = exp.func("flatten", exp.func("list", states, copy=False), copy=False)
            estimate = exp.func("round", exp.func("tf_hll_estimate", merged, copy=False), copy=False)
            return exp.cast(estimate, dtype("BIGINT"), copy=False)
        if isinstance(agg, exp.Avg):
            total = exp.Sum(this=self.measure(exp.Sum(this=arg.copy())))
            count = exp.Sum(this=self.measure(exp.Count(this=arg.copy())))
            return exp.Div(this=total, expression=exp.cast(count, dtype("DOUBLE"), copy=False))
        raise Reject(Rule.MEASURE, f"join: {shown} cannot be re-aggregated after a join")


def _count(partial: exp.Expr) -> exp.Expr:
    # COUNT is BIGINT and 0 over no rows; a sum of partial counts is HUGEINT and NULL then.
    total = exp.cast(exp.Sum(this=partial), dtype("BIGINT"), copy=False)
    return exp.func("COALESCE", total, exp.Literal.number(0), copy=False)


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _relations(tree: exp.Select, tables: Mapping[str, TableInfo], dimensions: Mapping[str, Dimension], names: Names) -> tuple[exp.Table, TableInfo, dict[str, _Join]]:
    from_ = tree.args.get("from_")
    fact = from_.this if from_ is not None else None
    resolved = names.resolve(fact) if isinstance(fact, exp.Table) else None
    if not isinstance(fact, exp.Table) or resolved is None or resolved.kind is not Kind.TABLE or resolved.name not in tables:
        raise Reject(Rule.SHAPE, "join: the fact table must come first (FROM <fact> [LEFT] JOIN <dimension>)")
    if fact.args.get("when") is not None or fact.args.get("version") is not None:
        raise Reject(Rule.TIME_TRAVEL, "reads an earlier Iceberg snapshot; rollups hold the current data")
    joins: dict[str, _Join] = {}
    taken = {(fact.alias or fact.name).lower()}
    for join in tree.args.get("joins") or []:
        side, kind = (join.side or "").upper(), (join.kind or "").upper()
        if join.args.get("method"):
            raise Reject(Rule.SHAPE, f"join: {str(join.args['method']).upper()} joins are answered from raw tiers")
        if side in ("RIGHT", "FULL") or kind not in ("", "INNER", "OUTER") or (kind == "OUTER" and side != "LEFT"):
            raise Reject(Rule.SHAPE, f"join: {(side + ' ' + kind).strip()} joins could add or drop fact rows")
        table = join.this
        found = names.resolve(table) if isinstance(table, exp.Table) else None
        if found is None or found.kind is not Kind.DIMENSION or found.name not in dimensions:
            what = "another fact table" if found is not None and found.kind is Kind.TABLE else "not a declared dimension table"
            raise Reject(Rule.SHAPE, f"join: {join.this.sql(dialect=DIALECT)} is {what}")
        assert isinstance(table, exp.Table)
        alias = (table.alias or table.name).lower()
        if alias in taken:
            raise Reject(Rule.SHAPE, f"join: {alias} is named twice")
        taken.add(alias)
        using = join.args.get("using") or []
        on = join.args.get("on")
        if side and on is None and not using:
            raise Reject(Rule.SHAPE, "join: an outer join without a condition")
        joins[alias] = _Join(alias, dimensions[found.name], side, bool(using), on)
        if using:
            names_used = [u.name.lower() if isinstance(u, exp.Identifier | exp.Column) else "" for u in using]
            if names_used != [dimensions[found.name].key]:
                raise Reject(Rule.SHAPE, f"join: USING must name {found.name}'s key {dimensions[found.name].key} alone")
    return fact, tables[resolved.name], joins


def _key_equality(s: _Splitter, pred: exp.Expr, alias: str) -> str | None:
    """The fact column ``pred`` equates with ``alias``'s key, if that is all it is."""
    pred = _unparen(pred)
    if not isinstance(pred, exp.EQ) or not isinstance(pred.this, exp.Column) or not isinstance(pred.expression, exp.Column):
        return None
    for dim_side, fact_side in ((pred.this, pred.expression), (pred.expression, pred.this)):
        assert isinstance(dim_side, exp.Column) and isinstance(fact_side, exp.Column)
        if (
            dim_side.table.lower() == alias
            and dim_side.name.lower() == s.joins[alias].dimension.key
            and s.owner(fact_side) == _FACT
        ):
            return fact_side.name.lower()
    return None


def split_join(tree: exp.Expr, sql: str, tables: Mapping[str, TableInfo], dimensions: Mapping[str, Dimension], names: Names, column_names: ColumnNames | None) -> JoinSplit:
    """The statement as a fact-side aggregate and an outer statement over it; Reject when the
    split could change the answer."""
    if not isinstance(tree, exp.Select):
        raise Reject(Rule.SHAPE, "join: not a SELECT")
    for key in ("with_", "with", "laterals", "windows", "qualify", "pivots", "prewhere"):
        if tree.args.get(key):
            raise Reject(Rule.SHAPE, f"join: {key.strip('_').upper()} is answered from raw tiers")
    if any(n is not tree for n in tree.find_all(exp.Select)) or tree.find(exp.Window):
        raise Reject(Rule.SHAPE, "join: subqueries and window functions are answered from raw tiers")
    if any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star)) for e in tree.expressions):
        raise Reject(Rule.SHAPE, "join: * is answered from raw tiers")
    distinct = tree.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise Reject(Rule.SHAPE, "join: DISTINCT ON is answered from raw tiers")
    fact, info, joins = _relations(tree, tables, dimensions, names)
    s = _Splitter(tree, fact, info, joins)
    where = conjuncts(tree.args.get("where"))
    join_conjuncts: set[int] = set()
    for alias, join in joins.items():
        if join.using:
            key = join.dimension.key
            if key not in s.fact_columns:
                raise Reject(Rule.SHAPE, f"join: the fact table has no column {key} to join {join.dimension.name} on")
            s.keys[key] = info.spelled.get(key, key)
            continue
        if join.condition is not None:
            fk = _key_equality(s, join.condition, alias)
            if fk is None:
                raise Reject(Rule.SHAPE, f"join: {join.dimension.name} must be joined on <fact column> = {alias}.{join.dimension.key} alone")
        else:  # a comma join: its key equality is a WHERE conjunct, kept where it is
            found = [(i, k) for i, p in enumerate(where) if (k := _key_equality(s, p, alias)) is not None]
            if len(found) != 1:
                raise Reject(Rule.SHAPE, f"join: {join.dimension.name} needs one <fact column> = {alias}.{join.dimension.key} in WHERE")
            join_conjuncts.add(found[0][0])
            fk = found[0][1]
        s.keys[fk] = info.spelled.get(fk, fk)
    inner_where: list[exp.Expr] = []
    outer_where: list[exp.Expr] = []
    for i, pred in enumerate(where):
        owners = s.owners(pred)
        if i in join_conjuncts:
            outer_where.append(pred.copy())
        elif _ALIAS in owners:
            raise Reject(Rule.SHAPE, "join: a select-list alias in WHERE is answered from raw tiers")
        elif owners <= {_FACT}:
            inner_where.append(pred.copy())  # fact rows are filtered before they meet the dimensions
        elif _FACT not in owners:
            outer_where.append(pred.copy())
        else:
            raise Reject(Rule.FILTER, f"join: {pred.sql(dialect=DIALECT)} mixes fact and dimension columns")
    outer = tree.copy()
    group = outer.args.get("group")
    if group is not None:
        if any(isinstance(g, exp.Rollup | exp.Cube | exp.GroupingSets) for g in group.expressions) or group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets"):
            raise Reject(Rule.SHAPE, "join: ROLLUP, CUBE and GROUPING SETS are answered from raw tiers")
        for g in _grouped(outer, group):
            owners = s.owners(g)
            if _FACT in owners and owners != {_FACT}:
                raise Reject(Rule.DIMENSION, f"join: GROUP BY {g.sql(dialect=DIALECT)} mixes fact and dimension columns")
            if owners == {_FACT}:
                s.group(g)
        group.set("expressions", [s.rewrite(g) for g in group.expressions])
    elif not any(e.find(exp.AggFunc) for e in outer.expressions):
        raise Reject(Rule.SHAPE, "no aggregation: raw rows are needed")
    shown = output_names(tree, info, sql)
    if shown is None:
        if column_names is None:
            raise Reject(Rule.SHAPE, "join: output names could not be bound")
        try:
            shown = column_names(sql)
        except Exception as exc:  # noqa: BLE001 - the raw path reports the real error
            raise Reject(Rule.SHAPE, f"the statement does not bind: {exc}") from None
    exprs = [s.rewrite(e.unalias() if isinstance(e, exp.Alias) else e) for e in outer.expressions]
    if len(shown) != len(exprs):
        raise Reject(Rule.SHAPE, "join: output columns could not be matched")
    outer.set("expressions", [exp.alias_(e, n, quoted=True, copy=False) for e, n in zip(exprs, shown, strict=True)])
    for key in ("having", "order"):
        clause = outer.args.get(key)
        if clause is not None:
            outer.set(key, s.rewrite(clause))
    outer.set("where", exp.Where(this=exp.and_(*outer_where, copy=False)) if outer_where else None)
    marker = "__tf_join_" + hashlib.sha1(sql.encode()).hexdigest()[:12]
    named = exp.TableAlias(this=exp.to_identifier(s.fact_alias))
    outer.set("from_", exp.From(this=exp.Subquery(this=exp.var(marker), alias=named)))
    inner = _inner(s, fact, inner_where)
    return JoinSplit(
        inner,
        outer,
        marker,
        frozenset(s.sketches),
        s.fact_alias,
        {alias: j.dimension.columns for alias, j in joins.items()},
        frozenset(j.dimension.key for j in joins.values() if j.using),
    )


def _grouped(select: exp.Select, group: exp.Group) -> list[exp.Expr]:
    """The expressions a GROUP BY groups by: ALL and ordinals resolved to the select list."""
    items = [e.unalias() if isinstance(e, exp.Alias) else e for e in select.expressions]
    if group.args.get("all"):
        return [e for e in items if not e.find(exp.AggFunc)]
    out = []
    aliases = {e.alias.lower(): e.unalias() for e in select.expressions if isinstance(e, exp.Alias)}
    for g in group.expressions:
        if isinstance(g, exp.Literal) and g.is_int and 1 <= int(g.this) <= len(items):
            out.append(items[int(g.this) - 1])
        elif isinstance(g, exp.Column) and not g.table and g.name.lower() in aliases:
            out.append(aliases[g.name.lower()])
        else:
            out.append(g)
    return out


def _inner(s: _Splitter, fact: exp.Table, where: list[exp.Expr]) -> exp.Select:
    """The fact side, its columns unqualified (it reads one table): a split's raw edges
    read them from a relation of their own."""
    keys = [exp.column(name, quoted=True) for name in s.keys.values()]
    groups = [_unqualified(expr) for _, expr in s.groups.values()]
    select = exp.Select(
        expressions=[
            *(exp.alias_(k.copy(), name, quoted=True) for k, name in zip(keys, s.keys.values(), strict=True)),
            *(exp.alias_(g.copy(), name, quoted=True) for g, (name, _) in zip(groups, s.groups.values(), strict=True)),
            *(exp.alias_(_unqualified(expr), name, quoted=True) for name, expr in s.measures.values()),
        ]
    )
    select.set("from_", exp.From(this=fact.copy()))
    if where:
        select.set("where", exp.Where(this=exp.and_(*(_unqualified(p) for p in where), copy=False)))
    select.set("group", exp.Group(expressions=[*keys, *groups]))
    return select


def _unqualified(node: exp.Expr) -> exp.Expr:
    copy = node.copy()
    for col in copy.find_all(exp.Column):
        col.set("table", None)
    return copy


def plan_join(
    statement: Statement,
    tables: Mapping[str, TableInfo],
    dimensions: Mapping[str, Dimension],
    names: Names,
    column_names: ColumnNames | None,
    plan_fact: Callable[[Statement], Route],
    plan_raw: Callable[[Statement], Route],
) -> Route | tuple[Rejection, ...]:
    """The statement's route through a rollup, or why it reads the raw tiers."""
    try:
        split = split_join(statement.tree, statement.sql, tables, dimensions, names, column_names)
    except Reject as r:
        return (Rejection("*", r.rule, r.reason),)
    inner_sql = split.inner.sql(dialect=DIALECT)
    # Parsed from its own text: output names are read from the positions in it.
    inner = plan_fact(Statement(inner_sql, sqlglot.parse_one(inner_sql, dialect=DIALECT), StatementKind.QUERY, 0))
    if inner.rollup is None:
        why = Rejection("*", Rule.SHAPE, f"join: no rollup answers the fact side ({inner_sql})")
        return (why, *inner.rejected)
    inner_text = _keep_sketches(inner.sql, split.sketches) if split.sketches else inner.sql
    if inner_text is None:
        return (Rejection("*", Rule.MEASURE, "join: the fact side's sketches could not be kept"), *inner.rejected)
    flat = None
    if not split.sketches and len(inner.parts) == 1 and not inner.registrations:
        flat = flatten(split.outer, inner_text, split.fact_alias, split.dimensions, split.using_keys)
    if flat is not None:  # the rollup's rows joined and aggregated once (router/flatten.py)
        outer_tree, inner_text = flat.outer, flat.table
    else:
        outer_tree = split.outer
    outer_sql = outer_tree.sql(dialect=DIALECT)
    around = plan_raw(Statement(outer_sql, sqlglot.parse_one(outer_sql, dialect=DIALECT), StatementKind.QUERY, 0))
    if split.marker not in around.sql:
        return (Rejection("*", Rule.SHAPE, "join: the outer statement could not be planned"),)
    text = around.sql.replace(split.marker, inner_text, 1)
    parts = tuple(dataclasses.replace(p, reason=f"{p.reason}; {JOIN_REASON}") if p.rollup is not None else p for p in inner.parts)
    registrations = (*around.registrations, *inner.registrations)
    return Route(
        sql=text,
        parts=(*around.parts, *parts),
        rejected=inner.rejected,
        registrations=registrations,
        flat_join=flat is not None and not registrations,
    )


def _keep_sketches(sql: str, columns: frozenset[str]) -> str | None:
    """The fact side's SQL with each ``columns`` output the list of HLL states the rewrite
    estimated (``tf_hll_estimate(list(state))`` → ``list(state)``); None when it is not there
    (only a rollup's own states are merged: a split refuses sketches for the raw edges)."""
    tree = sqlglot.parse_one(sql, dialect=DIALECT)
    if not isinstance(tree, exp.Select):
        return None
    found = set()
    for e in tree.expressions:
        if isinstance(e, exp.Alias) and e.alias in columns:
            estimates = [f for f in e.find_all(exp.Anonymous) if f.name.lower() == "tf_hll_estimate"]
            if len(estimates) != 1 or len(estimates[0].expressions) != 1:
                return None
            e.set("this", estimates[0].expressions[0])
            found.add(e.alias)
    return tree.sql(dialect=DIALECT) if found == columns else None
