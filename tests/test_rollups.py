"""Rollup contents, re-aggregation, HLL accuracy, snapshots and staleness."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import datasketches
import pytest

from conftest import TEST_NOW, RunningServer, make_config
from differential import assert_same


def _states(server: RunningServer) -> list[Any]:
    return list(server.app.rollups.states.values())


def _kept(state: Any) -> str:
    """The raw rows a rollup holds: its filter, and its retention (from the pinned now)."""
    from tierflight.rollups.definition import retention_start

    g = state.group
    conds = [f"({g.filter})"] if g.filter else []
    start = retention_start(g, TEST_NOW)
    if start is not None:
        conds.append(f"ts >= TIMESTAMP '{start}'")
    return f"WHERE {' AND '.join(conds)}" if conds else ""


def _direct_sql(state: Any) -> str:
    """The same GROUP BY computed directly on the raw rows (the oracle's flat table), with
    DuckDB's own DOUBLE sums (the states' exact decimal sums agree within rounding)."""
    from tierflight.rollups.build import dimension_expr, state_expr

    g = state.group
    dims = [f"{dimension_expr(d, 'ts')} AS {d}" for d in g.dimensions]
    measures = [f"{state_expr(m)} AS {m.state}" for m in g.measures if m.kind != "hll"]
    group_by = f"GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    return f"SELECT {', '.join(dims + measures)} FROM events {_kept(state)} {group_by}"


def test_every_rollup_equals_direct_group_by(server: RunningServer, flat: Any) -> None:
    states = _states(server)
    assert len(states) >= 8 and all(s.status == "active" for s in states)
    for state in states:
        g = state.group
        cols = [*g.dimensions, *(m.state for m in g.measures if m.kind != "hll")]
        cur = server.app.database.cursor()
        try:
            stored = cur.sql(f"SELECT {', '.join(cols)} FROM {state.qualified}").to_arrow_table()
        finally:
            cur.close()
        sql = _direct_sql(state)
        assert_same(stored, flat.sql(sql).to_arrow_table(), f"{g.name}: {sql}", ordered=False)


@pytest.mark.parametrize(
    ("rollup", "fine", "coarse"),
    [
        ("minute_impressions", "minute", "CAST(date_trunc('hour', minute) AS TIMESTAMP)"),
        ("minute_impressions", "minute", "CAST(minute AS DATE)"),
        ("hour_type", "hour", "CAST(hour AS DATE)"),
        ("day_type", "day", "CAST(date_trunc('week', day) AS DATE)"),
        ("day_type", "day", "CAST(date_trunc('month', day) AS DATE)"),
    ],
)
def test_reaggregation_to_coarser_grain(server: RunningServer, flat: Any, rollup: str, fine: str, coarse: str) -> None:
    state = server.app.rollups.states[rollup]
    raw_grain = coarse.replace(fine, "ts") if "CAST(ts AS DATE)" not in coarse else coarse
    raw_expr = {"CAST(minute AS DATE)": "CAST(ts AS DATE)", "CAST(hour AS DATE)": "CAST(ts AS DATE)"}.get(coarse, raw_grain)
    flt = _kept(state)
    cur = server.app.database.cursor()
    try:
        got = cur.sql(
            f"SELECT {coarse} AS g, CAST(sum(_count) AS BIGINT) AS n FROM {state.qualified} GROUP BY 1 ORDER BY 1"
        ).to_arrow_table()
    finally:
        cur.close()
    expected = flat.sql(f"SELECT {raw_expr} AS g, count(*) AS n FROM events {flt} GROUP BY 1 ORDER BY 1").to_arrow_table()
    assert_same(got, expected, coarse, ordered=True)


def test_hll_estimates_within_stated_error(server: RunningServer, flat: Any) -> None:
    state = server.app.rollups.states["day_country_users"]
    (sketch,) = [m for m in state.group.measures if m.kind == "hll"]
    lg_k = sketch.sketch_lg_k
    assert lg_k == 10  # hll(user_id, 10) in the demo config
    cur = server.app.database.cursor()
    try:
        rows = cur.sql(f"SELECT country, list(hll__user_id) FROM {state.qualified} GROUP BY country").fetchall()
    finally:
        cur.close()
    exact = dict(flat.sql("SELECT country, count(DISTINCT user_id) FROM events GROUP BY country").fetchall())
    # Three standard deviations of the union's relative error bound.
    err = abs(datasketches.hll_sketch.get_rel_err(True, True, lg_k, 3))
    assert 0 < err < 0.11
    assert len(rows) == len(exact)
    for country, blobs in rows:
        union = datasketches.hll_union(lg_k)
        for b in blobs:
            sketch_blob = datasketches.hll_sketch.deserialize(b)
            assert sketch_blob.lg_config_k == lg_k
            union.update(sketch_blob)
        est = union.get_result().get_estimate()
        assert math.isclose(est, exact[country], rel_tol=err), (country, est, exact[country])


def test_snapshots_restart_without_rebuild_and_detect_corruption(server: RunningServer, tmp_path: Path) -> None:
    import shutil

    from tierflight.engine.database import Database
    from tierflight.rollups.registry import RollupRegistry
    from tierflight.rollups.snapshot import LocalSnapshots, read_meta
    from tierflight.tiers.store import TableStore

    src = server.app.config.data_dir
    shutil.copytree(src / "rollups", tmp_path / "rollups")
    # A registry over the same data and a copy of the snapshots: load, corrupt one, load again.
    cfg = make_config(src)
    root = tmp_path / "rollups"
    db = Database(cfg)
    stores = {"events": TableStore(cfg, cfg.table("events"))}
    reg = RollupRegistry(cfg, db, stores)
    reg.snapshots = LocalSnapshots(root)
    reg.load(build_missing=False)
    assert all(s.status == "active" for s in reg.states.values())
    meta = read_meta(root, "day_type")
    assert meta is not None
    data = root / meta.file
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # truncated
    reg2 = RollupRegistry(cfg, db, stores)
    reg2.snapshots = LocalSnapshots(root)
    reg2.load(build_missing=False)
    assert reg2.states["day_type"].status == "stale"
    reg2.load(build_missing=True)
    assert reg2.states["day_type"].status == "active"
    new_meta = read_meta(root, "day_type")
    assert new_meta is not None and new_meta.file != meta.file
    db.close()


def test_definition_change_marks_rollup_stale(server: RunningServer, tmp_path: Path) -> None:
    import dataclasses
    import shutil

    from tierflight.engine.database import Database
    from tierflight.rollups.definition import Measure
    from tierflight.rollups.registry import RollupRegistry
    from tierflight.rollups.snapshot import LocalSnapshots
    from tierflight.tiers.store import TableStore

    src = server.app.config.data_dir
    shutil.copytree(src / "rollups", tmp_path / "rollups")
    cfg = make_config(src)
    db = Database(cfg)
    reg = RollupRegistry(cfg, db, {"events": TableStore(cfg, cfg.table("events"))})
    reg.snapshots = LocalSnapshots(tmp_path / "rollups")
    state = reg.states["country_type"]
    state.group = dataclasses.replace(state.group, measures=(*state.group.measures, Measure("max", "bid_price")))
    reg.load(build_missing=False)
    assert state.status == "stale"
    assert reg.states["day_type"].status == "active"
    db.close()


def test_system_rollups(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT name, status, rows, bytes, watermark, dimensions FROM system.rollups ORDER BY name")
        rows = cur.fetch_arrow_table().to_pylist()
    assert {r["name"] for r in rows} >= {"day_type", "minute_impressions", "day_country_users"}
    assert all(r["status"] == "active" and r["rows"] > 0 and r["bytes"] > 0 and r["watermark"] for r in rows)


def test_bad_rollup_config_is_a_clear_error(data_dir: Path) -> None:
    from tierflight.core.config import RollupConfig
    from tierflight.core.errors import ConfigError

    from tierflight.rollups.definition import parse_rollups

    cfg = make_config(data_dir)
    table = cfg.table("events")
    for bad, needle in [
        ({"name": "x", "dimensions": ["nope"], "measures": ["count"]}, "neither a column"),
        ({"name": "x", "dimensions": ["day"], "measures": ["sum(nope)"]}, "unknown column"),
        ({"name": "x", "dimensions": ["day"], "measures": ["median(bid_price)"]}, "is not one of"),
        ({"name": "x", "dimensions": ["day", "hour"], "measures": ["count"]}, "at most one time grain"),
        ({"name": "bad name", "dimensions": ["day"], "measures": ["count"]}, "identifier"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            parse_rollups(dataclasses.replace(table, rollups=(RollupConfig(**bad),)))
