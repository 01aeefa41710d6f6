"""The router without a server: the real Router, rules and rollup definitions from
conf/tierflight.toml, over a modelled data state (no DuckDB data, no files).

What the router asks of the data is small: each table's config, its generation, the hot
tail's row count and the sources a time range needs (``TableStore``), and each rollup's
status and row estimate (``RollupRegistry`` / ``RollupState``). The registry and its states
are the real objects, built from the config; only the store is a model (``ModelStore``): day
partitions over the year the shared workloads are generated for, cold before the warm
window, warm after. Rollup sizes follow the demo data set (docs/benchmarks.md, 5M rows over
366 days), so the cheapest-first order among candidates is the one a real server sees.

Fixture files (tests/fixtures/router/routes/*.sql) hold one case per ``-- name:`` line:

    -- name: NAME
    -- now: 2025-01-01              (optional: the clock; default TEST_NOW)
    -- status: ROLLUP=STATUS         (optional, repeatable: e.g. day_type=stale)
    -- hot_rows: N                   (optional: hot-tail rows not merged into the rollups)
    <statement>;
    -- expect: rollup NAME | split NAME | nested NAME,... | join NAME | raw
    -- rejected: CANDIDATE RULE      (one per rejection the route reports, in order; "cost"
                                       rejections, never tried, are left out)
    <rewritten SQL>;                 (rollup, split, nested: what DuckDB runs, compared after
                                       normalising through sqlglot, so formatting is free)

``PYTHONPATH=server:client python tests/router_harness.py FILE...`` rewrites the expectations of FILE from the current
code (statements and options kept); review the diff before committing it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import sqlglot

from tierflight.core.config import Config, TableConfig, load_config
from tierflight.core.names import Names
from tierflight.core.sql import quote_ident, table_view_sql
from tierflight.engine.sandbox import check_statement
from tierflight.rollups.registry import RollupRegistry, bucket_times
from tierflight.router.joins import JOIN_REASON
from tierflight.router.planner import Router
from tierflight.router.route import Route
from tierflight.router.subqueries import NESTED_REASON
from tierflight.tiers.base import Partition, TierKind, TimeRange
from tierflight.tiers.dimension import DimensionStore
from tierflight.tiers.store import Source

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "conf" / "tierflight.toml"
FIXTURES = ROOT / "tests" / "fixtures" / "router" / "routes"
DEFAULT_NOW = dt.datetime(2025, 1, 1)
# The shared workloads' data: `tierflight generate --start 2024-01-01 --days 366`.
DATA_START = dt.datetime(2024, 1, 1)
DATA_DAYS = 366
ROWS_PER_DAY = 5_000_000 // DATA_DAYS
# Rows of each rollup on the demo data (docs/benchmarks.md, "Per rollup").
ROLLUP_ROWS: Mapping[str, int] = {
    "advertiser_type": 6_184,
    "country_type": 48,
    "day_advertiser_type": 304_801,
    "day_country_type": 17_151,
    "day_country_users": 4_392,
    "day_type": 1_464,
    "hour_country_type": 302_675,
    "hour_type": 33_732,
    "minute_impressions": 129_534,
    "month_advertiser_type": 61_510,
    "publisher_type": 4_389,
}
_STEP = {"minute": np.timedelta64(1, "m"), "hour": np.timedelta64(1, "h"), "day": np.timedelta64(1, "D"), "week": np.timedelta64(7, "D")}


@cache
def base_config() -> Config:
    # A data dir that is never created: nothing here reads or writes files.
    return load_config(CONFIG, data_dir=Path("/nonexistent/tierflight-router-model"), environ={}, overrides={"metrics.port": 0})


def _bucket_starts(grain: str, start: dt.datetime, end: dt.datetime) -> np.ndarray[Any, Any]:
    if grain == "month":
        months = np.arange(np.datetime64(start, "M"), np.datetime64(end, "M") + 1)
        out = months.astype("datetime64[us]")
    elif grain == "week":
        monday = start - dt.timedelta(days=start.weekday())
        out = np.arange(np.datetime64(monday, "us"), np.datetime64(end, "us"), _STEP["week"]).astype("datetime64[us]")
    else:
        out = np.arange(np.datetime64(start, "us"), np.datetime64(end, "us"), _STEP[grain]).astype("datetime64[us]")
    return out[out < np.datetime64(end, "us")]


@dataclass
class ModelHot:
    rows: int = 0


@dataclass
class ModelStore:
    """What the router reads of a TableStore: day partitions, cold before the warm window."""

    table: TableConfig
    now: dt.datetime
    warm_window: dt.timedelta
    hot: ModelHot = field(default_factory=ModelHot)
    generation: int = 0

    def refresh_if_changed(self) -> bool:
        return False

    def partitions(self) -> list[Partition]:
        return [p for s in self.sources() for p in s.partitions]

    def sources(self, time_range: TimeRange | None = None, day_as: str | None = None) -> list[Source]:
        lo = DATA_START if time_range is None or time_range.start is None else max(DATA_START, time_range.start)
        end = DATA_START + dt.timedelta(days=DATA_DAYS)
        hi = end if time_range is None or time_range.end is None else min(end, time_range.end)
        boundary = (self.now - self.warm_window).replace(hour=0, minute=0, second=0, microsecond=0)
        parts: dict[TierKind, list[Partition]] = {TierKind.COLD: [], TierKind.WARM: []}
        day = lo.replace(hour=0, minute=0, second=0, microsecond=0)
        while day < hi:
            tier = TierKind.COLD if day < boundary else TierKind.WARM
            nxt = day + dt.timedelta(days=1)
            parts[tier].append(Partition(self.table.name, tier, f"day={day.date()}", day, nxt, 1, ROWS_PER_DAY, ROWS_PER_DAY * 40))
            day = nxt
        return [
            Source(tier, f"SELECT * FROM {tier}_{self.table.name}", tuple(ps), len(ps)) for tier, ps in parts.items() if ps
        ]


# The system tables App registers (engine.database serves them; only their names matter here).
SYSTEM_TABLES = frozenset({"partitions", "queries", "rollup_advice", "rollups", "snapshots"})


@dataclass(frozen=True)
class Options:
    now: dt.datetime = DEFAULT_NOW
    status: tuple[tuple[str, str], ...] = ()
    hot_rows: int = 0


def build_router(options: Options = Options()) -> Router:
    """A fresh Router (empty plan and rewrite caches) over the real registry and modelled
    stores of ``options``."""
    stores, registry = _data_state(options)
    cfg = base_config()
    names = Names(cfg.tables, lambda: SYSTEM_TABLES, cfg.dimensions)
    return Router(lambda: stores, registry, lambda: options.now, column_names=_binder(), names=names, dimensions=_dimensions)


@cache
def _dimension_stores() -> dict[str, DimensionStore]:
    """The dimension tables, empty (version 0): the router reads their keys and columns."""
    cfg = base_config()
    return {name: DimensionStore(cfg.data_dir, table, writer=False) for name, table in cfg.dimensions.items()}


def _dimensions() -> dict[str, DimensionStore]:
    return _dimension_stores()


@cache
def _data_state(options: Options) -> tuple[dict[str, ModelStore], RollupRegistry]:
    """The modelled stores and the real registry (states from the config), per options: the
    router only reads them (a hit count aside), and a registry opens a DuckDB of its own."""
    cfg = base_config()
    stores = {name: ModelStore(t, options.now, cfg.tiers.warm_window, ModelHot(options.hot_rows)) for name, t in cfg.tables.items()}
    registry = RollupRegistry(cfg, None, stores)  # type: ignore[arg-type]  # no Database: nothing is loaded
    statuses = dict(options.status)
    for state in registry.states.values():
        name, group = state.group.name, state.group
        state.status = statuses.get(name, "active")
        state.rows = ROLLUP_ROWS.get(name, 10_000)
        if group.grain is not None:
            start = DATA_START
            if group.retention is not None:
                start = max(start, options.now - group.retention)
            buckets = _bucket_starts(group.grain, start, DATA_START + dt.timedelta(days=DATA_DAYS))
            # Sorted bucket starts, one per stored row (what the loaded rollup keeps).
            state.times = bucket_times(np.repeat(buckets, max(1, state.rows // max(1, len(buckets)))))
    return stores, registry


@cache
def _binder() -> Any:
    """Output names as DuckDB gives them (what App._column_names does): bound against empty
    views of the configured tables."""
    con = duckdb.connect(":memory:")
    for table in [*base_config().tables.values(), *base_config().dimensions.values()]:
        con.execute(f"CREATE VIEW {quote_ident(table.name)} AS {table_view_sql(table, [])}")

    def names(sql: str) -> list[str]:
        return [d[0] for d in con.execute(f"DESCRIBE {sql}").fetchall()]

    return names


# -- fixture files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    sql: str
    options: Options
    header: tuple[str, ...]  # the option lines, as written
    kind: str | None = None  # rollup, split, raw (None: no expectation yet)
    rollup: str | None = None
    rejected: tuple[tuple[str, str], ...] = ()
    expected_sql: str | None = None


_OPTION = re.compile(r"--\s*(\w+):\s*(.*?)\s*$")


def _parse_options(lines: Iterable[str]) -> Options:
    opts = Options()
    for line in lines:
        m = _OPTION.match(line)
        assert m, line
        key, value = m.groups()
        if key == "now":
            opts = dataclasses.replace(opts, now=dt.datetime.fromisoformat(value))
        elif key == "status":
            name, _, status = value.partition("=")
            opts = dataclasses.replace(opts, status=(*opts.status, (name.strip(), status.strip())))
        elif key == "hot_rows":
            opts = dataclasses.replace(opts, hot_rows=int(value))
        else:
            raise ValueError(f"unknown fixture option {key!r}")
    return opts


def read_cases(path: Path) -> list[Case]:
    cases: list[Case] = []
    blocks = re.split(r"^(?=-- name:)", path.read_text(), flags=re.MULTILINE)
    for block in blocks:
        if not block.startswith("-- name:"):
            continue
        lines = block.splitlines()
        name = lines[0].removeprefix("-- name:").strip()
        body, _, expect = "\n".join(lines[1:]).partition("\n-- expect:")
        body_lines = body.splitlines()
        header = tuple(ln for ln in body_lines if ln.startswith("--"))
        sql = "\n".join(ln for ln in body_lines if not ln.startswith("--")).strip().rstrip(";").strip()
        case = Case(path.name, name, sql, _parse_options(header), header)
        if expect:
            first, *rest = expect.splitlines()
            kind, _, rollup = first.strip().partition(" ")
            rejected = tuple(
                tuple(ln.removeprefix("-- rejected:").split()) for ln in rest if ln.startswith("-- rejected:")
            )
            text = "\n".join(ln for ln in rest if not ln.startswith("--")).strip().rstrip(";").strip()
            case = dataclasses.replace(
                case, kind=kind, rollup=rollup or None, rejected=rejected, expected_sql=text or None  # type: ignore[arg-type]
            )
        cases.append(case)
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"{path.name}: duplicate case names {sorted(duplicates)}"
    return cases


def all_cases() -> list[Case]:
    return [c for path in sorted(FIXTURES.glob("*.sql")) for c in read_cases(path)]


def normalise(sql: str) -> str:
    """One spelling of a statement: formatting, keyword case and redundant quoting are free."""
    return sqlglot.parse_one(sql, read="duckdb").sql(dialect="duckdb", normalize=False)


def route_of(case: Case) -> Route:
    return build_router(case.options).plan(check_statement(case.sql))


def outcome(route: Route) -> tuple[str, str | None, tuple[tuple[str, str], ...], str | None]:
    """(kind, rollup, tried rejections, rewritten SQL) of a route."""
    rejected = tuple((r.candidate, r.rule) for r in route.rejected if r.rule != "cost")
    if route.rollup is None:
        return "raw", None, rejected, None
    if any(p.reason.endswith(JOIN_REASON) for p in route.parts):
        kind = "join"  # the fact side answered by a rollup, joined to dimension tables after
    elif any(p.reason == NESTED_REASON for p in route.parts):
        kind = "nested"  # subqueries answered by rollups, the rest of the statement around them
    else:
        kind = "split" if len(route.parts) > 1 else "rollup"
    return kind, route.rollup, rejected, _stable_markers(route.sql)


def _stable_markers(sql: str) -> str:
    """The raw planner names each source with a random marker: numbered in order here."""
    found = list(dict.fromkeys(re.findall(r"__tf_source_[0-9a-f]{12}", sql)))
    for i, marker in enumerate(found):
        sql = sql.replace(marker, f"__tf_source_{i}")
    return sql


def render(case: Case, route: Route) -> str:
    kind, rollup, rejected, sql = outcome(route)
    out = [f"-- name: {case.name}", *case.header, case.sql + ";", f"-- expect: {kind}{' ' + rollup if rollup else ''}"]
    out += [f"-- rejected: {c} {r}" for c, r in rejected]
    if sql is not None:
        out.append(sqlglot.parse_one(sql, read="duckdb").sql(dialect="duckdb", pretty=True) + ";")
    return "\n".join(out) + "\n"


def rewrite_file(path: Path) -> None:
    text = path.read_text()
    preamble = re.split(r"^-- name:", text, maxsplit=1, flags=re.MULTILINE)[0]
    rendered = [render(c, route_of(c)) for c in read_cases(path)]
    path.write_text(preamble + "\n".join(rendered))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        rewrite_file(Path(arg))
