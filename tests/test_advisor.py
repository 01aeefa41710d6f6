"""The advisor's proposals for statement shapes (tests/fixtures/advisor/*.sql), each checked
with the real router: every statement of a case is answered from the proposed rollup."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router_harness import (
    DATA_DAYS,
    DATA_START,
    SYSTEM_TABLES,
    ModelHot,
    ModelStore,
    _binder,
    _bucket_starts,
    base_config,
)
from tierflight.advisor.propose import AdviceStatus, Proposal, advise, rollup_def
from tierflight.advisor.querylog import Observation, QueryLog, read_log
from tierflight.advisor.shape import FilterKind, Unservable, extract
from tierflight.core.names import Names
from tierflight.engine.sandbox import check_statement
from tierflight.rollups.definition import storage_groups
from tierflight.rollups.registry import RollupRegistry, RollupState, bucket_times
from tierflight.router.planner import Router

ROOT = Path(__file__).resolve().parent
FIXTURES = ROOT / "fixtures" / "advisor"
NOW = dt.datetime(2025, 1, 1)
TABLE_ROWS = 5_000_000
CARDINALITY = {"type": 4, "country": 20, "publisher_id": 1000, "advertiser_id": 500, "user_id": 1_000_000}
BUCKETS = {"minute": 527_040, "hour": 8_784, "day": 366, "week": 53, "month": 12}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    statements: tuple[str, ...]
    expected: tuple[dict[str, Any], ...]


def read_cases(path: Path) -> list[Case]:
    cases = []
    for block in re.split(r"^(?=-- name:)", path.read_text(), flags=re.MULTILINE):
        if not block.startswith("-- name:"):
            continue
        lines = block.splitlines()
        expected = tuple(json.loads(ln.removeprefix("-- expect:")) for ln in lines if ln.startswith("-- expect:"))
        sql = "\n".join(ln for ln in lines[1:] if not ln.startswith("--"))
        statements = tuple(s.strip() for s in sql.split(";") if s.strip())
        cases.append(Case(lines[0].removeprefix("-- name:").strip(), statements, expected))
    return cases


CASES = [c for p in sorted(FIXTURES.glob("*.sql")) for c in read_cases(p)]


def model_estimate(p: Proposal) -> int:
    """Rows as distinct combinations of the modelled columns, capped by the rows they come from."""
    rows = 1.0
    if p.grain:
        buckets = BUCKETS[p.grain]
        rows *= buckets if p.retention_days is None else math.ceil(buckets * p.retention_days / DATA_DAYS)
    for c in p.columns:
        rows *= CARDINALITY.get(c, TABLE_ROWS)
    source = TABLE_ROWS / (CARDINALITY["type"] if p.filter else 1)
    return int(min(rows, source))


def observe(statements: tuple[str, ...]) -> tuple[list[Observation], dict[str, str]]:
    cfg = base_config()
    log = QueryLog(cfg, Path("/nonexistent/advisor"), background=False)
    log.max_bytes = 0  # nothing written
    log.config = dataclasses.replace(cfg, tiers=dataclasses.replace(cfg.tiers, now=NOW))
    out = []
    for sql in statements:
        obs = log.record(check_statement(sql).tree, "warm", None, 10, 100.0, 0.0)
        if obs is not None:
            out.append(obs)
    return out, log.filter_texts


def _as_expected(p: Proposal) -> dict[str, Any]:
    return {"dimensions": list(p.dimensions), "measures": list(p.measures), "filter": p.filter, "retention_days": p.retention_days}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_proposal(case: Case) -> None:
    observations, texts = observe(case.statements)
    proposals = advise(observations, [], model_estimate, texts)
    key = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731
    assert sorted(map(key, map(_as_expected, proposals))) == sorted(map(key, case.expected))
    assert sum(p.statements for p in proposals) == len(observations)
    for p in proposals:
        assert p.rows is not None and p.bytes is not None and p.bytes > 0
        assert p.config_text().startswith("[[tables.events.rollups]]")
    _assert_routed(case, proposals)


def _assert_routed(case: Case, proposals: list[Proposal]) -> None:
    """Every statement a proposal was made for is answered by one of them (the real rules)."""
    if not proposals:
        return
    cfg = base_config()
    table = cfg.tables["events"]
    stores = {"events": ModelStore(table, NOW, cfg.tiers.warm_window, ModelHot(0))}
    registry = RollupRegistry(cfg, None, stores)  # type: ignore[arg-type]  # nothing is loaded
    registry.states.clear()
    defs = [rollup_def(p, table) for p in proposals]
    for group in storage_groups(defs):
        state = RollupState(group, tuple(d for d in defs if d.name in group.members), status="active", rows=1000)
        if group.grain is not None:
            start = DATA_START if group.retention is None else max(DATA_START, NOW - group.retention)
            state.times = bucket_times(_bucket_starts(group.grain, start, DATA_START + dt.timedelta(days=DATA_DAYS)))
            state.rows = len(state.times)
        registry.states[group.name] = state
    router = Router(lambda: stores, registry, lambda: NOW, column_names=_binder(), names=Names(cfg.tables, lambda: SYSTEM_TABLES))  # type: ignore[arg-type,return-value]
    for sql in case.statements:
        try:
            observe((sql,))[0][0]
        except IndexError:
            continue  # unservable: nothing proposed for it
        route = router.plan(check_statement(sql))
        assert route.rollup in {p.name for p in proposals}, (sql, route.rejected)


def test_shapes_hold_no_literal_values() -> None:
    observations, _ = observe(("SELECT publisher_id, count(*) FROM events WHERE country = 'SECRET-VALUE' AND publisher_id IN (123456789, 555444333) AND bid_price > 0.987654 GROUP BY 1",))
    text = json.dumps(observations[0].to_json())
    # (A one-value IN is an equality to the router: two values keep the IN kind.)
    for literal in ("SECRET", "123456789", "555444333", "987654"):
        assert literal not in text
    assert dict(observations[0].shape.filters) == {"country": FilterKind.EQ, "publisher_id": FilterKind.IN, "bid_price": FilterKind.RANGE}


def test_unservable_statements_have_no_shape() -> None:
    cfg = base_config()
    infos = QueryLog(cfg, Path("/nonexistent/advisor"), background=False).infos
    for sql in ("SELECT * FROM events", "SELECT ts, count(*) FROM events GROUP BY ts", "SELECT quantile_cont(bid_price, 0.5) FROM events"):
        with pytest.raises(Unservable):
            extract(check_statement(sql).tree, infos, Names(cfg.tables), NOW)


def test_the_log_is_durable_bounded_and_rotated(tmp_path: Path) -> None:
    cfg = base_config()
    log = QueryLog(cfg, tmp_path, background=False)
    log.max_bytes = 2000
    tree = check_statement("SELECT country, count(*) FROM events GROUP BY country").tree
    for _ in range(50):
        log.record(tree, "warm", None, 20, 12.5, 1.0)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["queries.1.jsonl", "queries.jsonl"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    again = list(read_log(tmp_path))
    assert 0 < len(again) < 50 and again[-1] == log.records[-1]
    # A torn last line (a crash mid-write) is skipped, the rest read.
    with open(tmp_path / "queries.jsonl", "a") as f:
        f.write('{"shape": {"table": "ev')
    assert list(read_log(tmp_path)) == again
    reopened = QueryLog(cfg, tmp_path, background=False)
    assert list(reopened.records) == again
    reopened.max_bytes = 2000
    for _ in range(30):  # appends to the file it found, and rotates it by its size
        reopened.record(tree, "warm", None, 20, 12.5, 2.0)
    reopened.close()
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert list(read_log(tmp_path))[-1].at == 2.0


def test_query_log_bytes_zero_turns_the_log_off(tmp_path: Path) -> None:
    from router_harness import CONFIG
    from tierflight.core.config import load_config

    cfg = load_config(CONFIG, data_dir=tmp_path, environ={}, overrides={"rollups.query_log_bytes": "0", "metrics.port": 0})
    assert cfg.rollups.query_log_bytes == 0
    log = QueryLog(cfg)
    log.offer(check_statement("SELECT country, count(*) FROM events GROUP BY 1").tree, "warm", None, 1, 1.0)
    log.drain(0.2)
    log.close()
    assert not (tmp_path / "advisor").exists() and not log.records
    on = load_config(CONFIG, data_dir=tmp_path, environ={}, overrides={"rollups.query_log_bytes": "1MB", "metrics.port": 0})
    assert on.rollups.query_log_bytes == 1 << 20


def test_rollup_answered_statements_teach_nothing_and_budget_refuses() -> None:
    observations, texts = observe(("SELECT day, publisher_id, count(*) FROM events GROUP BY ALL", "SELECT country, count(*) FROM events GROUP BY 1"))
    routed = [dataclasses.replace(observations[1], rollup="country_type")]
    proposals = advise([observations[0], *routed], [], model_estimate, texts)
    assert [p.dimensions for p in proposals] == [("day", "publisher_id")]
    refused = advise(observations, [], model_estimate, texts, budget=100_000)
    assert {p.dimensions: p.status for p in refused} == {
        ("day", "publisher_id"): AdviceStatus.OVER_BUDGET,
        ("country",): AdviceStatus.PROPOSED,
    }


def test_min_statements_and_benefit_ranking() -> None:
    observations, texts = observe(("SELECT country, count(*) FROM events GROUP BY 1",) * 3 + ("SELECT day, publisher_id, count(*) FROM events GROUP BY ALL",))
    slow = [dataclasses.replace(o, ms=5000.0) if o.shape.grain else o for o in observations]
    ranked = advise(slow, [], model_estimate, texts)
    assert [p.dimensions for p in ranked] == [("day", "publisher_id"), ("country",)]
    assert ranked[0].benefit_ms == 5000.0 and ranked[1].statements == 3
    assert [p.dimensions for p in advise(slow, [], model_estimate, texts, min_statements=2)] == [("country",)]
    assert np.isfinite(ranked[0].bytes or 0)


# -- in a server ------------------------------------------------------------------------


def test_server_logs_shapes_and_advises(server: Any, conn: Any) -> None:
    """Statements no rollup serves are logged as shapes (in the data dir, no literals) and
    proposed in system.rollup_advice with estimates from the data and the config to adopt."""
    sql = "SELECT publisher_id, country, count(*) AS n, sum(bid_price) AS s FROM events WHERE advertiser_id <> 424242 GROUP BY ALL"
    with conn.cursor() as cur:
        for _ in range(2):
            cur.execute(sql)
            cur.fetch_arrow_table()
    server.app.advisor.log.drain()
    server.app.advisor._cached = None
    logged = (server.app.config.data_dir / "advisor" / "queries.jsonl").read_text()
    assert '"publisher_id"' in logged and "424242" not in logged
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM system.rollup_advice WHERE list_sort(dimensions) = ['advertiser_id', 'country', 'publisher_id']")
        rows = cur.fetch_arrow_table().to_pylist()
    assert len(rows) == 1, rows
    advice = rows[0]
    assert advice["statements"] >= 2 and advice["benefit_ms"] > 0
    assert advice["measures"] == ["count", "sum(bid_price)"]
    # Estimated from a sample of the data, not guessed: at most the table's rows, more than one group.
    assert 1 < advice["estimated_rows"] <= 200_000 and advice["estimated_bytes"] > advice["estimated_rows"]
    assert advice["config"].startswith("[[tables.events.rollups]]") and advice["status"] == "proposed"


def test_a_shared_filter_value_is_shown_to_admins_only() -> None:
    """A shared filter's value is another user's literal: system.rollup_advice shows it to a
    caller who may see every user's statements, and its column only to others."""
    from tierflight.advisor.service import _redacted, advice_table

    observations, texts = observe(("SELECT publisher_id, count(*) AS n FROM events WHERE country = 'ZZ-SECRET' GROUP BY 1",) * 2)
    proposals = advise(observations, [], model_estimate, texts)
    admin = advice_table(proposals).to_pylist()
    assert [r["filter"] for r in admin] == ["country = 'ZZ-SECRET'"] and "ZZ-SECRET" in admin[0]["config"]
    other = advice_table([_redacted(p) for p in proposals]).to_pylist()
    assert "ZZ-SECRET" not in repr(other)
    assert other[0]["filter"] == "country = ?" and other[0]["config"] is None and "admin only" in other[0]["note"]
