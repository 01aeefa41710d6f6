"""quantiles(col) rollup measures: KLL sketches per group, and approx_quantile answered from them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasketches
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from conftest import RunningServer, make_config
from tierflight.core.errors import ConfigError
from tierflight.rollups.build import add_quantiles
from tierflight.rollups.definition import KLL_K, Measure, StorageGroup, parse_rollups
from tierflight.rollups.kll import merged
from tierflight.rollups.verify_quantiles import rank_error

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def _events_rollup(tmp_path: Path, *measures: str) -> list[Any]:
    cfg = make_config(tmp_path, **{"tables.events.rollups": [{"name": "r", "dimensions": ["day"], "measures": list(measures)}]})
    return parse_rollups(cfg.table("events"))


def test_quantiles_measures_parse_and_bad_ones_are_refused(tmp_path: Path) -> None:
    (r,) = _events_rollup(tmp_path, "quantiles(bid_price)", "quantiles(user_id, 400)")
    measures = {m.label(): m for m in r.measures}
    assert measures["quantiles(bid_price)"].sketch_k == KLL_K
    assert measures["quantiles(user_id, 400)"].sketch_k == 400
    assert dict(r.value_types) == {"bid_price": "DOUBLE", "user_id": "BIGINT"}
    for bad, needle in [
        ("quantiles(bid_price, 7)", "k must be a whole number from 8"),
        ("quantiles(bid_price, x)", "k must be"),
        ("quantiles(country)", "numeric column"),
        ("sum(bid_price, 3)", "only hll(col, lg_k) and quantiles(col, k)"),
        ("quantiles(*)", "needs a column"),
    ]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            _events_rollup(tmp_path, bad)


def _sketch_states(values: dict[int, np.ndarray], k: int, batches: int) -> dict[int, list[bytes]]:
    """Each group's states as ingest leaves them: one sketch per batch (built by the build's
    own code over DuckDB rows), merged only when read."""
    group = StorageGroup("g", "t", ("g",), (Measure("count"), Measure("quantiles", "x", k=k)), None, None, ("g",))
    con = duckdb.connect()
    out: dict[int, list[bytes]] = {g: [] for g in values}
    for b in range(batches):
        part = {g: v[b::batches] for g, v in values.items()}
        rows = pa.table({
            "g": np.concatenate([np.full(len(v), g) for g, v in part.items()]),
            "x": np.concatenate(list(part.values())),
        })
        con.register("rows", rows)
        base = pa.table({"g": pa.array(sorted(values), pa.int64())})
        table = add_quantiles(con, "rows", group, [group.measures[1]], base, "ts")
        for g, blob in zip(table["g"].to_pylist(), table["quantiles__x"].to_pylist(), strict=True):
            out[g].append(blob)
    return out


@pytest.mark.parametrize("k", [200, 50])
def test_sketch_answers_are_within_the_documented_rank_error(k: int) -> None:
    """The promise, measured: over the same rows, the merged sketches' answer at each q is a
    value whose normalized rank is within the sketch's bound of q (exactly q in groups of at
    most k values), for group sizes from 1 to 60,000 and skewed, tied and plain values."""
    rng = np.random.default_rng(5)
    sizes = [1, 2, 3, 7, k, k + 1, 1000, 20_000, 60_000]
    values = {}
    for i, n in enumerate(sizes):
        values[i] = rng.lognormal(size=n)
        values[100 + i] = rng.integers(0, 5, size=n).astype(np.float64)  # heavy ties
    bound = datasketches.kll_doubles_sketch.get_normalized_rank_error(k, False)
    worst = {"small": 0.0, "large": 0.0}
    for g, blobs in _sketch_states(values, k, batches=3).items():
        sketch = merged(blobs)
        xs = np.sort(values[g])
        assert sketch is not None and sketch.n == len(xs)
        assert (sketch.get_min_value(), sketch.get_max_value()) == (xs[0], xs[-1])
        for q in QS:
            v = sketch.get_quantile(q)
            err = rank_error(q, int(np.searchsorted(xs, v, "left")), int(np.searchsorted(xs, v, "right")), len(xs))
            if len(xs) <= k:
                assert v in xs and err == 0, (g, len(xs), q, v)  # kept whole: exact
            assert err <= bound, (g, len(xs), q, err, bound)
            worst["small" if len(xs) <= k else "large"] = max(worst["small" if len(xs) <= k else "large"], err)
    assert worst["small"] == 0 and 0 < worst["large"] <= bound


def test_merged_sketches_of_no_values_answer_null() -> None:
    from tierflight.rollups.kll import quantile

    empty = bytes(datasketches.kll_doubles_sketch(200).serialize())
    out = quantile(pa.array([[empty], None, [], [empty, None]], pa.list_(pa.binary())), pa.array([0.5] * 4))
    assert out.to_pylist() == [None, None, None, None]
    with pytest.raises(ValueError, match="between 0 and 1"):
        one = datasketches.kll_doubles_sketch(200)
        one.update(1.0)
        quantile(pa.array([[bytes(one.serialize())]], pa.list_(pa.binary())), pa.array([1.5]))


# -- through the server ------------------------------------------------------------------------

ROLLUPS = [
    {"name": "day_type_q", "dimensions": ["day", "type"], "measures": ["count", "quantiles(bid_price)", "quantiles(user_id, 400)"]},
]


@pytest.fixture()
def quantiled(tmp_path: Path) -> Iterator[RunningServer]:
    from conftest import load_demo, start_in_process

    overrides = {"tables.events.rollups": ROLLUPS, "rollups.verify_interval": "0s"}
    load_demo(make_config(tmp_path, **overrides), 20_000, dt.date(2024, 9, 20), 30, 5)
    running = start_in_process(make_config(tmp_path, **overrides))
    try:
        yield running
    finally:
        running.server.shutdown()
        running.app.close()


def _query(running: RunningServer, sql: str) -> pa.Table:
    import adbc_driver_flightsql.dbapi as fsql

    with fsql.connect(running.uri, autocommit=True) as c, c.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def _assert_within_bound(running: RunningServer, k_of: dict[str, int]) -> None:
    """approx_quantile per type from the rollup vs the raw values of the same rows."""
    for column, k in k_of.items():
        sql = f"SELECT type, approx_quantile({column}, [0.01, 0.5, 0.9, 0.99]) AS qs FROM events GROUP BY type ORDER BY type"
        route = _query(running, f"EXPLAIN ROUTE {sql}").to_pylist()
        assert route[0]["source"] == "rollup:day_type_q", route
        answers = _query(running, sql).to_pylist()
        raw = _query(running, f"SELECT type, list({column}) AS xs FROM events WHERE auction_id IS NOT NULL GROUP BY type").to_pylist()
        values = {r["type"]: np.sort(np.array([x for x in r["xs"] if x is not None], np.float64)) for r in raw}
        bound = datasketches.kll_doubles_sketch.get_normalized_rank_error(k, False)
        for row in answers:
            xs = values[row["type"]]
            if not len(xs):
                assert row["qs"] is None
                continue
            for q, v in zip((0.01, 0.5, 0.9, 0.99), row["qs"], strict=True):
                err = rank_error(q, int(np.searchsorted(xs, v, "left")), int(np.searchsorted(xs, v, "right")), len(xs))
                assert err <= bound, (column, row["type"], q, v, err)


def test_approx_quantile_is_answered_from_the_sketches_through_ingest_and_compaction(quantiled: RunningServer) -> None:
    import adbc_driver_flightsql.dbapi as fsql

    from test_ingest import _rows

    app = quantiled.app
    _assert_within_bound(quantiled, {"bid_price": 200, "user_id": 400})
    scalar = _query(quantiled, "SELECT approx_quantile(user_id, 0.5) AS m FROM events")
    assert scalar.schema.field("m").type == pa.int64()  # the column's type, as DuckDB answers
    with fsql.connect(quantiled.uri, autocommit=True) as c, c.cursor() as cur:
        for i in range(3):
            cur.adbc_ingest("events", _rows(500, dt.datetime(2024, 10, 18, 3) + dt.timedelta(hours=i), seed=i), mode="append")
    _assert_within_bound(quantiled, {"bid_price": 200, "user_id": 400})  # merged on ingest
    app.rollups.snapshot("events")  # compacted by key: each group's sketches merged into one
    app.router.invalidate()
    _assert_within_bound(quantiled, {"bid_price": 200, "user_id": 400})
    state = app.rollups.states["day_type_q"]
    assert state.meta is not None
    stored = app.rollups.snapshots.read(state.meta)  # what a restart loads
    counted = sum(merged([blob]).n for blob in stored["quantiles__bid_price"].to_pylist() if merged([blob]) is not None)
    raw = _query(quantiled, "SELECT count(bid_price) AS n FROM events WHERE auction_id IS NOT NULL").to_pylist()[0]["n"]
    assert counted == raw and stored.num_rows == stored.select(["day", "type"]).group_by(["day", "type"]).aggregate([]).num_rows
    result = app.rollup_verifier().verify_one(app.rollups.states["day_type_q"], 1.0)
    assert result.mismatches == 0 and result.groups > 0, result.evidence


def test_exact_quantile_functions_never_read_sketches(quantiled: RunningServer) -> None:
    for sql in (
        "SELECT type, median(bid_price) FROM events GROUP BY type",
        "SELECT type, quantile_cont(bid_price, 0.5) FROM events GROUP BY type",
        "SELECT type, quantile_disc(bid_price, 0.5) FROM events GROUP BY type",
    ):
        route = _query(quantiled, f"EXPLAIN ROUTE {sql}").to_pylist()
        assert not any(r["source"].startswith("rollup:") for r in route), route
        reasons = " ".join(str(r) for r in route)
        assert "is exact and rollups keep quantile sketches" in reasons, reasons
    # Not a literal quantile, or an accuracy: the raw tiers answer (and DuckDB checks them).
    for sql in (
        "SELECT approx_quantile(bid_price, 0.5 + 0.1) FROM events",
        "SELECT approx_quantile(bid_price, 0.5, 100) FROM events",
    ):
        route = _query(quantiled, f"EXPLAIN ROUTE {sql}").to_pylist()
        assert not any(r["source"].startswith("rollup:") for r in route), route
