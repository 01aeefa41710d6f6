"""Which rollups a build derives from another's states, and that derived states equal the rows'."""

from __future__ import annotations

import datetime as dt
from itertools import permutations
from typing import Any

import pytest
from tierflight.core.config import load_config

from conftest import CONFIG, RunningServer, make_config
from differential import assert_same
from tierflight.rollups import lattice
from tierflight.rollups.build import build_groups, state_expr
from tierflight.rollups.definition import (
    Measure,
    StorageGroup,
    all_rollups,
    dimension_expr,
    retention_start,
    storage_groups,
)

COUNT, SUM = Measure("count"), Measure("sum", "bid_price")


def group(name: str, *dims: str, retention: dt.timedelta | None = None, measures: tuple[Measure, ...] = (COUNT,)) -> StorageGroup:
    return StorageGroup(name, "events", dims, measures, None, retention, (name,))


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        (("hour", "type"), ("day", "type"), True),
        (("minute",), ("hour",), True),
        (("day", "type"), ("month",), True),
        (("day", "country", "type"), ("country", "type"), True),
        (("hour", "country", "type"), ("country",), True),
        (("day", "type"), (), True),
        (("day", "type"), ("hour", "type"), False),  # finer from coarser
        (("week",), ("month",), False),  # weeks do not nest in months
        (("month",), ("week",), False),
        (("day", "type"), ("day", "country"), False),  # a column the parent lacks
        (("day", "type"), ("day", "type"), False),  # the same dimensions
        (("country", "type"), ("day", "type"), False),  # no time grain to coarsen
    ],
)
def test_derivable(parent: tuple[str, ...], child: tuple[str, ...], expected: bool) -> None:
    assert lattice.derivable(group("p", *parent), group("c", *child)) is expected


def _demo_groups() -> list[StorageGroup]:
    config = load_config(CONFIG, environ={})
    return storage_groups(all_rollups(config.tables.values()))


def test_demo_rollups_scan_only_the_lattice_roots() -> None:
    unfiltered = [g for g in _demo_groups() if g.filter is None]
    assert {g.name for g in lattice.roots(unfiltered)} == {"hour_country_type", "day_advertiser_type", "publisher_type"}


def test_derivation_always_goes_to_a_smaller_rank() -> None:
    # The build derives groups in descending rank, so every parent is computed first.
    for p, c in permutations(_demo_groups(), 2):
        if lattice.derivable(p, c):
            assert lattice.size_rank(p) > lattice.size_rank(c), (p.name, c.name)


def test_derived_states_with_retention_equal_the_rows(server: RunningServer, flat: Any) -> None:
    """A parent that keeps less history than its child still feeds it the whole history, and
    a derived group's retention applies to its own rows."""
    # The data ends 32 days before "now": the parent keeps its last 8 days, its children all.
    recent = dt.timedelta(days=40)
    measures = (COUNT, SUM, Measure("min", "bid_price"), Measure("max", "total_price"), Measure("count_col", "total_price"))
    groups = [
        group("hour_country", "hour", "country", "type", retention=recent, measures=measures),
        group("day_country", "day", "country", measures=measures),
        group("week_type", "week", "type", retention=dt.timedelta(days=60), measures=measures),
        group("month_type", "month", "type", measures=measures),
        group("hour_type", "hour", "type", measures=measures),
        group("everything", measures=measures),
    ]
    assert [g.name for g in lattice.roots(groups)] == ["hour_country"]
    config = make_config(server.app.config.data_dir)
    now = config.tiers.current_time()
    cur = server.app.database.cursor()
    try:
        built = build_groups(server.app.stores["events"], groups, cur, now).tables
    finally:
        cur.close()
    for g in groups:
        dims = [f"{dimension_expr(d, 'ts')} AS {d}" for d in g.dimensions]
        states = [f"{state_expr(m)} AS {m.state}" for m in g.measures]
        group_by = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
        sql = f"SELECT {', '.join(dims + states)} FROM events {group_by}"
        start = retention_start(g, now)
        if start is not None:
            sql = f"SELECT * FROM ({sql}) WHERE CAST({g.grain} AS TIMESTAMP) >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'"
        expected = flat.sql(sql).to_arrow_table()
        assert built[g.name].num_rows == expected.num_rows > 0, g.name
        assert_same(built[g.name], expected, f"{g.name}: {sql}", ordered=False)


def test_hll_states_of_any_column_type_estimate_distinct_counts(server: RunningServer, flat: Any) -> None:
    """Integer columns take the vectorised sketch path, others (strings, floats) DataSketches'
    own hashing: both estimate each group's distinct count within the sketch's error, and a
    group whose column is all NULL gets an empty sketch."""
    import datasketches

    from tierflight.rollups.definition import HLL_LG_K

    hll = (COUNT, Measure("hll", "user_id"), Measure("hll", "auction_id"), Measure("hll", "total_price"))
    groups = [group("day_type_sketches", "day", "type", measures=hll)]
    cur = server.app.database.cursor()
    try:
        built = build_groups(server.app.stores["events"], groups, cur, make_config(server.app.config.data_dir).tiers.current_time())
    finally:
        cur.close()
    table = built.tables["day_type_sketches"]
    exact = {
        (r[0], r[1]): r[2:]
        for r in flat.sql(
            "SELECT CAST(ts AS DATE), type, count(DISTINCT user_id), count(DISTINCT auction_id), "
            "count(DISTINCT total_price) FROM events GROUP BY 1, 2"
        ).fetchall()
    }
    assert table.num_rows == len(exact) > 0
    err = abs(datasketches.hll_sketch.get_rel_err(True, True, HLL_LG_K, 3))
    empty = 0
    for row in table.to_pylist():
        want = exact[(row["day"], row["type"])]
        for state, n in zip(("hll__user_id", "hll__auction_id", "hll__total_price"), want, strict=True):
            sketch = datasketches.hll_sketch.deserialize(row[state])
            if n == 0:
                assert sketch.is_empty()
                empty += 1
            else:
                assert abs(sketch.get_estimate() - n) <= max(err * n, 1.0), (row["day"], row["type"], state)
    assert empty > 0  # total_price is only set on purchases
