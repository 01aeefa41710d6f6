"""The shared workloads through ROAPI over the same Parquet, beside tierflight and DuckDB.

ROAPI (a Rust Flight SQL server on DataFusion, ``roapi`` on PyPI) serves one table ``events``
over every data file of the data set (the warm Parquet partitions and the Iceberg data files,
linked into one directory). It knows neither the derived columns nor DuckDB's dialect, so
each statement is translated for it with sqlglot: ``day``, ``week``, ``hour`` and ``minute``
become their definitions from ``conf/tierflight.toml``, ``GROUP BY ALL`` the select list's
plain expressions, ``approx_count_distinct`` DataFusion's ``approx_distinct``; a statement it
still cannot run is reported with its error. Every system is reached the same way where it
has a server: ADBC, one cursor reused, the result fetched as Arrow; tierflight with routing
on and its defaults (a repeated statement is answered from its result cache, which the
'tierflight, new text' column leaves out), DuckDB in the benchmark process over a view of the
same files. Calls alternate between the systems, statement by statement.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    CONFIG,
    BenchContext,
    Unavailable,
    load_average,
    log,
    start_roapi,
    start_tierflight,
    summarize_ms,
)
from bench.dataset import (
    DATA_ENV,
    WORKLOADS,
    connect,
    data_description,
    data_files,
    duckdb_connection,
    ensure_dataset,
    ensure_rollups,
    fetch,
    interleaved_runs,
    read_workload,
    same_rows,
    timed_runs,
)
from bench.registry import Result, benchmark

WORKLOAD_FILES = ("adtech-examples.sql", "adtech-dashboard.sql")


def for_datafusion(sql: str, derived: dict[str, str], dialect: str = "postgres") -> str:
    """A DuckDB statement over ``events`` as DataFusion runs it over the bare files (written
    in ``dialect``: PostgreSQL's is closest to DataFusion's, DuckDB's keeps some forms as sent)."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="duckdb")
    definitions = {name.lower(): sqlglot.parse_one(expr, read="duckdb") for name, expr in derived.items()}

    def expand(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in definitions:
            return definitions[node.name.lower()].copy()
        if isinstance(node, exp.ApproxDistinct):
            return exp.Anonymous(this="approx_distinct", expressions=[node.this.copy()])
        return node

    for select in list(tree.find_all(exp.Select)):
        group = select.args.get("group")
        if group is not None and group.args.get("all"):
            plain = [
                e.unalias().copy() if isinstance(e, exp.Alias) else e.copy()
                for e in select.expressions
                if not (e.unalias() if isinstance(e, exp.Alias) else e).find(exp.AggFunc)
            ]
            select.set("group", exp.Group(expressions=plain))
    tree = tree.transform(expand)
    return tree.sql(dialect=dialect)


def _linked(files: list[Path], into: Path) -> Path:
    """One directory holding (links to) every data file: ROAPI reads a directory as a table."""
    into.mkdir(parents=True, exist_ok=True)
    for old in into.iterdir():
        old.unlink()
    for i, f in enumerate(files):
        (into / f"{i:05d}-{f.name}").symlink_to(f.resolve())
    return into


@benchmark("roapi_workloads")
def run(ctx: BenchContext) -> Result:
    rows = ctx.rows
    data_dir = ensure_dataset(rows)
    ensure_rollups(data_dir)
    work = ctx.scratch("roapi_workloads")
    derived = dict(tomllib.loads(CONFIG.read_text())["tables"]["events"]["derived"])
    files = data_files(data_dir)
    min_runs, max_runs, budget = (3, 5, 4.0) if ctx.quick else (5, 20, 10.0)
    load = [load_average()]
    duck = duckdb_connection(files)
    # The translations name DataFusion's function; DuckDB runs them too (see below).
    duck.execute("CREATE MACRO approx_distinct(x) AS approx_count_distinct(x)")
    try:
        roapi = start_roapi(
            {"events": f"{_linked(files, work / 'events')},format=parquet"}, log_path=work / "roapi.log", timeout=300
        )
    except Unavailable as exc:
        raise RuntimeError(f"ROAPI is not available: {exc}") from None
    tf = start_tierflight(data_dir, DATA_ENV, log_path=work / "tierflight.log")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        conn_tf, conn_ro = connect(tf.uri), connect(roapi.uri)
        cur_tf, cur_ro = conn_tf.cursor(), conn_ro.cursor()
        for wfile in WORKLOAD_FILES:
            results[wfile] = {}
            for name, sql in read_workload(WORKLOADS / wfile):
                expected = duck.sql(sql).to_arrow_table()
                entry: dict[str, Any] = {"sql": sql, "rows": expected.num_rows}
                fns: dict[str, Callable[[], object]] = {
                    "tierflight": lambda sql=sql: fetch(cur_tf, sql),
                    "duckdb": lambda sql=sql: duck.sql(sql).to_arrow_table(),
                }
                for dialect in ("postgres", "duckdb"):
                    translated = entry["roapi_sql"] = for_datafusion(sql, derived, dialect)
                    try:
                        answer = fetch(cur_ro, translated)
                    except Exception as exc:  # ROAPI's own refusal is the finding
                        entry["roapi_error"] = str(exc).splitlines()[0][:160]
                        cur_ro.close()
                        cur_ro = conn_ro.cursor()
                        continue
                    entry.pop("roapi_error", None)
                    entry["roapi_agrees"] = same_rows(answer, expected)
                    # Whether a difference is ROAPI's or the translation's: DuckDB runs it too.
                    entry["translation_agrees"] = same_rows(duck.sql(translated).to_arrow_table(), expected)
                    fns["roapi"] = lambda t=translated, c=cur_ro: fetch(c, t)
                    break
                entry["tierflight_agrees"] = same_rows(fetch(cur_tf, sql), expected)
                side = interleaved_runs(fns, min_runs=min_runs, max_runs=max_runs, budget_s=budget, warmup=1)
                entry["p50"] = {k: summarize_ms(v)["p50"] for k, v in side.items()}
                if " limit " not in f" {sql.lower()} ":
                    # A text the server has not seen (same answer): no plan and no result to reuse.
                    fresh = [
                        timed_runs(lambda s=f"{sql} LIMIT {1_000_000_000 + i}": fetch(cur_tf, s), min_runs=1,
                                   max_runs=1, budget_s=0, warmup=0)[0]
                        for i in range(5)
                    ]  # fmt: skip
                    entry["p50"]["tierflight_new"] = summarize_ms(fresh)["p50"]
                results[wfile][name] = entry
                log(f"{name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in entry["p50"].items()))
            load.append(load_average())
        cur_tf.close()
        cur_ro.close()
        conn_tf.close()
        conn_ro.close()
    finally:
        tf.stop()
        roapi.stop()
        duck.close()

    summary: list[dict[str, Any]] = []
    tables = []
    for wfile, w in results.items():
        ran = [r for r in w.values() if "roapi" in r["p50"]]
        t_tf = sum(r["p50"]["tierflight"] for r in ran)
        t_ro = sum(r["p50"]["roapi"] for r in ran)
        t_duck = sum(r["p50"]["duckdb"] for r in ran)
        summary.append(
            {
                "metric": f"{wfile}: statements ROAPI ran, p50 sum tierflight / ROAPI / DuckDB ({len(ran)} of {len(w)})",
                "value": f"{t_tf:.1f} / {t_ro:.1f} / {t_duck:.1f}",
                "unit": "ms",
            }
        )
        if t_tf > 0:
            summary.append(
                {
                    "metric": f"{wfile}: ROAPI p50 sum / tierflight p50 sum (statements both ran)",
                    "value": round(t_ro / t_tf, 1),
                    "unit": "x",
                }
            )
        tables.append(
            {
                "title": f"{wfile} (p50 ms, side by side)",
                "columns": [
                    "statement",
                    "rows",
                    "tierflight",
                    "tierflight, new text",
                    "ROAPI",
                    "DuckDB",
                    "ROAPI / tierflight",
                    "answers agree (tierflight, ROAPI)",
                ],
                "rows": [
                    [
                        name,
                        r["rows"],
                        round(r["p50"]["tierflight"], 2),
                        round(r["p50"]["tierflight_new"], 2) if "tierflight_new" in r["p50"] else "-",
                        round(r["p50"]["roapi"], 2)
                        if "roapi" in r["p50"]
                        else f"error: {r.get('roapi_error', '?')}",
                        round(r["p50"]["duckdb"], 2),
                        round(r["p50"]["roapi"] / r["p50"]["tierflight"], 1) if "roapi" in r["p50"] else "-",
                        f"{'yes' if r['tierflight_agrees'] else 'no'}, "
                        + ("-" if "roapi" not in r["p50"] else ("yes" if r["roapi_agrees"] else "no"))
                        + ("" if r.get("translation_agrees", True) else " (translation differs)"),
                    ]
                    for name, r in w.items()
                ],
            }
        )
    tables.append(
        {
            "title": "Statements as sent to ROAPI (DataFusion)",
            "columns": ["statement", "SQL"],
            "rows": [[name, r["roapi_sql"]] for w in results.values() for name, r in w.items()],
        }
    )
    return {
        "title": "Shared workloads: tierflight vs ROAPI vs DuckDB on the same Parquet",
        "description": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "data": data_description(rows) + f"; ROAPI {roapi.version} over the same {len(files)} files",
        "summary": summary,
        "tables": tables,
        "notes": [
            "Answers are compared with DuckDB's as sorted rows, floats within a relative 1e-9; approximate distinct "
            "counts (two different sketches) and a LIMIT 1 subquery without ORDER BY may differ without an error. "
            "Each translated statement is also run by DuckDB: where only ROAPI's answer differs, the difference is "
            "ROAPI's (the table says so when the translation itself changed the answer).",
            f"Side by side: {min_runs} to {max_runs} calls per system and statement within {budget:g} s; 'new text' is "
            "one call with a text tierflight has not seen (the statement plus a LIMIT far above its result): planning "
            "and execution without the result cache.",
            f"The machine is shared with other test runs; load average (1/5/15 min) at the start and after each workload: {load}.",
        ],
    }
