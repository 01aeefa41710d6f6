"""tierflight loadtest: the workload parser, the statistics, and short runs against a server."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from tierflight.launch import tierflight_cmd
from tierflight.loadtest import (
    LoadTestConfig,
    LoadTestError,
    WorkloadError,
    load_workload,
    parse_workload,
    run_loadtest,
)
from tierflight.loadtest.stats import summarize
from tierflight.loadtest.vary import ParameterMode, client_rng, sql_literal

SHARED_WORKLOADS = ROOT.parent / "shared" / "workloads"

# A rollup-routed statement and a raw drill-down on warm partitions (the session data has
# October in warm Parquet): the tier shares must show both.
WORKLOAD = """\
-- Data: the session's demo data
-- name: revenue_per_day
SELECT day, sum(bid_price) FROM events WHERE type = 'impression' GROUP BY day;

-- name: raw_one_day
SELECT ts, type, bid_price FROM events
WHERE day = DATE '2024-10-15' AND country = 'JP' ORDER BY ts LIMIT 5;
"""


# -- the workload parser ---------------------------------------------------------------------------


def test_parse_basic() -> None:
    statements = parse_workload(WORKLOAD)
    assert [s.name for s in statements] == ["revenue_per_day", "raw_one_day"]
    assert statements[0].sql == "SELECT day, sum(bid_price) FROM events WHERE type = 'impression' GROUP BY day"
    assert statements[1].sql.endswith("ORDER BY ts LIMIT 5")
    assert (statements[0].line, statements[1].line) == (3, 6)


def test_parse_semicolons_inside_literals_and_comments() -> None:
    text = (
        "-- name: a\n"
        "SELECT 'x;y' AS \"we;ird\", 'it''s; fine' -- trailing; comment\n"
        "FROM t /* block; comment */;\n"
        "-- name: last_without_semicolon\n"
        "SELECT 2\n"
    )
    a, b = parse_workload(text)
    assert a.sql == "SELECT 'x;y' AS \"we;ird\", 'it''s; fine' -- trailing; comment\nFROM t /* block; comment */"
    assert b.name == "last_without_semicolon" and b.sql == "SELECT 2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT 1;", "line 1: statement without a '-- name: NAME' line"),
        ("-- name: a\nSELECT 1;\nSELECT 2;", "line 3: statement without a '-- name: NAME' line"),
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;", "line 3: statement name 'a' is used twice (first on line 1)"),
        ("-- name: a\n;", "line 1: statement 'a' is empty"),
        ("-- name: a\nSELECT 1\n-- name: b\nSELECT 2;", "line 3: statement 'a' is not ended by ';'"),
        ("-- name: a\nSELECT 'open;\n", "line 2: unterminated string"),
        ("-- name: a b\nSELECT 1;", "line 1: bad statement name"),
        ("-- name: a\n-- name: b\nSELECT 1;", "line 2: '-- name: a' is followed by another name line"),
        ("-- only a comment\n", "no statements"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_workload(text, "w.sql")


@pytest.mark.parametrize("name", ["adtech-examples.sql", "adtech-dashboard.sql"])
def test_shared_workloads_parse(name: str) -> None:
    path = SHARED_WORKLOADS / name
    if not path.exists():
        pytest.skip(f"{path} is not here")
    statements = load_workload(path)
    raw = path.read_text()
    assert [s.name for s in statements] == [
        line.split(":", 1)[1].strip() for line in raw.splitlines() if line.startswith("-- name:")
    ]
    for s in statements:
        assert s.sql and not s.sql.endswith(";") and "-- name:" not in s.sql
        assert raw.splitlines()[s.line - 1].strip().startswith(s.sql.splitlines()[0].strip())


def test_missing_workload_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="cannot read workload"):
        load_workload(tmp_path / "nope.sql")


# -- statistics ----------------------------------------------------------------------------------


def test_summarize() -> None:
    records = [(0, i * 0.01, 2.0 + i % 5, 10, 100, "hot", None, None) for i in range(100)]
    records += [(1, i * 0.01, 8.0, 3, 30, "warm", None, None) for i in range(50)]
    records += [(1, 0.5, 1.0, 0, 0, "", "INVALID_ARGUMENT", "bad")]
    figures = summarize(records, ["a", "b"])
    s = figures["summary"]
    assert (s["ok"], s["errors"], s["rows"], s["bytes"]) == (150, 1, 1150, 11500)
    assert s["qps"] == pytest.approx(150 / (0.99 + 0.006), abs=0.01)
    assert figures["tiers"] == {"hot": pytest.approx(2 / 3), "warm": pytest.approx(1 / 3)}
    assert figures["errors"] == {"INVALID_ARGUMENT": {"count": 1, "example": "b: bad"}}
    a, b = figures["statements"]
    assert (a["p50"], a["max"], b["p99"], b["errors"]) == (4.0, 6.0, 8.0, 1)
    assert sum(p["qps"] for p in figures["timeline"]) * (figures["timeline"][0]["t"]) == pytest.approx(150)


def test_config_validation() -> None:
    statements = tuple(parse_workload(WORKLOAD))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"concurrency": 0, "duration": 1}, "--concurrency"),
        ({"concurrency": 2}, "--duration SECONDS or --statements N"),
        ({"concurrency": 2, "duration": -1}, "--duration"),
        ({"concurrency": 2, "duration": 1, "rate": 0}, "--rate"),
        ({"concurrency": 2, "duration": 1, "processes": 3}, "--processes"),
        ({"concurrency": 2, "duration": 1, "user": "u"}, "go together"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LoadTestError, match=message):
            LoadTestConfig("grpc://127.0.0.1:1", statements, **kwargs).validated()


# -- against a server ----------------------------------------------------------------------------


@pytest.fixture()
def workload_file(tmp_path: Path) -> Path:
    path = tmp_path / "workload.sql"
    path.write_text(WORKLOAD)
    return path


@pytest.mark.subprocess
def test_loadtest_command(subprocess_server: Any, workload_file: Path, tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    proc = subprocess.run(
        [
            *tierflight_cmd(),
            "loadtest",
            "--uri", subprocess_server.uri,
            "--workload", str(workload_file),
            "--concurrency", "4",
            "--processes", "2",
            "--duration", "2.5",
            "--report", str(report),
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "QPS" in proc.stdout and "revenue_per_day" in proc.stdout
    data = json.loads(report.read_text())
    assert data["config"]["processes"] == 2 and data["config"]["concurrency"] == 4
    s = data["summary"]
    assert s["qps"] > 0 and s["errors"] == 0 and data["errors"] == {}
    assert s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert 2.4 <= s["elapsed_s"] <= 10
    by_name = {st["name"]: st for st in data["statements"]}
    assert set(by_name) == {"revenue_per_day", "raw_one_day"}
    for st in by_name.values():
        assert st["ok"] > 0 and st["p99"] is not None and st["rows"] > 0
    assert by_name["revenue_per_day"]["tiers"] == {"hot": 1.0}
    assert by_name["raw_one_day"]["tiers"] == {"warm": 1.0}
    assert math.isclose(sum(data["tiers"].values()), 1.0)
    assert data["timeline"]
    png = report.with_suffix(".png")
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.subprocess
def test_open_loop_statement_count(subprocess_server: Any, workload_file: Path) -> None:
    config = LoadTestConfig(
        subprocess_server.uri,
        tuple(load_workload(workload_file)),
        concurrency=3,
        processes=1,
        max_statements=20,
        rate=25.0,
    )
    result = run_loadtest(config)
    s = result.figures["summary"]
    assert s["ok"] + s["errors"] == 20 and s["errors"] == 0
    # 20 sends at 25 per second are scheduled over 0.76 s (19 intervals): the rate holds the
    # load back. QPS is 20 / (0.76 s + the last statement's latency), so at most 20 / 0.76.
    assert s["elapsed_s"] >= 0.76
    assert s["qps"] <= 20 / 0.76 + 0.01
    assert result.config["mode"] == "open loop"


def test_cli_errors(workload_file: Path) -> None:
    from unittest import mock

    from typer.testing import CliRunner

    from tierflight.cli import app

    def run(*args: str) -> Any:
        # Without the CLI's logging set-up, which would outlive the runner's captured stream.
        with mock.patch("tierflight.cli.configure_logging"):
            return CliRunner().invoke(app, ["loadtest", *args])

    base = ["--workload", str(workload_file), "--concurrency", "1"]
    result = run(*base, "--uri", "grpc://127.0.0.1:1", "--duration", "1")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot run statements: UNAVAILABLE")
    assert "Traceback" not in result.output
    result = run(*base)
    assert result.exit_code == 2 and "give --duration SECONDS or --statements N" in result.stderr
    result = run("--workload", "/nonexistent.sql", "--concurrency", "1", "--duration", "1")
    assert result.exit_code == 2 and "cannot read workload /nonexistent.sql" in result.stderr
    result = run(*base, "--duration", "1", "--parameters", "sometimes")
    assert result.exit_code == 2 and "--parameters must be one of literal, bind, not 'sometimes'" in result.stderr


# -- varying statements (-- vary: pools, {pool} placeholders) ---------------------------------------

VARYING = """\
-- vary: day = DATE '2024-09-01' .. DATE '2024-11-20'  -- a trailing comment
-- vary: span = 0..9
-- vary: country = 'US', 'GB', 'JP'
-- vary: odd = 'a--b', 'it''s'
-- vary: advertiser = (SELECT DISTINCT advertiser_id FROM events)
-- name: per_day
SELECT day, sum(bid_price) FROM events
WHERE type = 'impression' AND day BETWEEN {day} AND {day+span} AND country = {country} GROUP BY day;

-- name: one_advertiser
SELECT type, count(*) FROM events WHERE advertiser_id = {advertiser} AND day >= {day-3} GROUP BY type;

-- name: fixed
SELECT '{day}' AS not_a_placeholder;
"""


def test_vary_template_fill_is_deterministic_and_from_the_pools() -> None:
    import datetime as dt

    per_day, one_adv, fixed = parse_workload(VARYING)
    assert fixed.template is None and one_adv.template is not None
    tpl = per_day.template
    assert tpl is not None
    draws = [tpl.draw(client_rng(5, 0)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]  # same seed and client: same first draw
    rng_a, rng_b = client_rng(5, 1), client_rng(5, 1)
    seq_a = [tpl.draw(rng_a) for _ in range(200)]
    assert seq_a == [tpl.draw(rng_b) for _ in range(200)]
    rng_c = client_rng(5, 2)
    assert seq_a != [tpl.draw(rng_c) for _ in range(200)]  # another client draws other values
    lo, hi = dt.date(2024, 9, 1), dt.date(2024, 11, 20)
    for start, end, country in seq_a:
        assert lo <= start <= hi and 0 <= (end - start).days <= 9  # {day} and {day+span} share the day
        assert country in ("US", "GB", "JP")
    assert len({v[0] for v in seq_a}) > 50 and {v[2] for v in seq_a} == {"US", "GB", "JP"}
    start, end, country = seq_a[0]
    text = tpl.literal(seq_a[0])
    assert f"day BETWEEN DATE '{start.isoformat()}' AND DATE '{end.isoformat()}' AND country = '{country}'" in text
    assert tpl.placeholders.endswith("day BETWEEN ? AND ? AND country = ? GROUP BY day")
    assert sql_literal("it's") == "'it''s'" and sql_literal(3) == "3"
    pools = {p.name: p for p in per_day.template.pools}
    assert set(pools) == {"day", "span", "country"}  # only the pools the statement names
    (odd,) = parse_workload(VARYING.split("-- name:")[0] + "-- name: o\nSELECT {odd};")
    assert odd.template is not None and odd.template.pools[0].values == ("a--b", "it's")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- vary: d = 5..1\n-- name: a\nSELECT {d};", "line 1: pool 'd': range 5..1"),
        ("-- vary: d = nope\n-- name: a\nSELECT {d};", "line 1: pool 'd': cannot read 'nope'"),
        ("-- vary: d = 1..2\n-- vary: d = 3..4\n-- name: a\nSELECT {d};", "line 2: pool 'd' is declared twice"),
        ("-- vary: d = 1..2\n-- name: a\nSELECT {e};", "line 3: statement 'a': placeholder {e} names no pool"),
        ("-- vary: d = 1..2\n-- name: a\nSELECT {d+x};", "offset 'x' names no pool"),
        ("-- vary: d = 1..2\n-- name: a\nSELECT 1\n-- vary: e = 1..2\n;", "line 4: '-- vary:' inside a statement"),
    ],
)
def test_vary_errors(text: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{").replace("+", r"\+")):
        parse_workload(text, "w.sql")


def test_vary_without_pools_leaves_braces_alone() -> None:
    (st,) = parse_workload("-- name: a\nSELECT {'k': 1} AS s, '{day}' AS t;")
    assert st.template is None and st.sql == "SELECT {'k': 1} AS s, '{day}' AS t"


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", [ParameterMode.LITERAL, ParameterMode.BIND])
def test_varying_run(subprocess_server: Any, mode: ParameterMode) -> None:
    """Both modes run without errors against a server, with the query pool fetched from it, and
    the repeat count sees the draws vary (bind mode: one text per statement, values bound)."""
    config = LoadTestConfig(
        subprocess_server.uri,
        tuple(parse_workload(VARYING)),
        concurrency=2,
        processes=1,
        max_statements=60,
        parameter_mode=mode,
        seed=3,
    )
    result = run_loadtest(config)
    s, vary = result.figures["summary"], result.figures["variation"]
    assert (s["ok"], s["errors"]) == (60, 0), result.figures["errors"]
    assert vary["varying_statements"] == 2 and vary["counted"] == 60 and vary["parameter_mode"] == mode.value
    # 40 varying draws over large pools, 20 of the one fixed text (1 distinct, 19 repeats).
    assert 38 <= vary["distinct_value_sets"] <= 41 and vary["repeat_rate"] == pytest.approx(1 - vary["distinct_value_sets"] / 60, abs=1e-6)  # reported to 6 places
    assert vary["distinct_texts"] == (3 if mode is ParameterMode.BIND else vary["distinct_value_sets"])
    assert result.config["parameter_mode"] == mode.value


def test_bench_varying_workload_parses() -> None:
    statements = load_workload(ROOT / "bench" / "workloads" / "dashboard-varying.sql")
    assert len(statements) >= 8 and all(st.template is not None for st in statements)
