"""``python -m bench.run``: run benchmarks, store their results, rewrite docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

from bench.common import ROOT, BenchContext, git_info, load_average, log, machine_info, utc_now
from bench.registry import BENCHMARKS, BROKEN, discover
from bench.report import load_results, render


def _command(argv: list[str]) -> str:
    try:
        python = str(Path(sys.executable).relative_to(ROOT))
    except ValueError:
        python = "python"
    return shlex.join([python, "-m", "bench.run", *argv])


def wait_quiet(timeout: float, threshold: float) -> None:
    deadline = time.monotonic() + timeout
    load = load_average()
    while load and load[0] >= threshold and time.monotonic() < deadline:
        log(f"load average {load[0]} >= {threshold:g}: waiting for a quieter machine")
        time.sleep(15)
        load = load_average()
    if load and load[0] >= threshold:
        log(f"still busy (load average {load[0]}); measuring anyway")


DEFAULT_ROWS = 20_000_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of demo data for the data benchmarks (default 20,000,000; --quick: 200,000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small data and few repetitions: a smoke test, not figures"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated benchmark names (default: all); see --list"
    )
    parser.add_argument("--skip", default="", help="comma-separated benchmark names not to run")
    parser.add_argument("--repeats", type=int, default=3, help="measurement rounds per benchmark (default 3)")
    parser.add_argument(
        "--output", type=Path, default=Path("docs/benchmarks.md"), help="the report to rewrite"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=ROOT / "bench" / "results", help="where results JSON go"
    )
    parser.add_argument("--no-report", action="store_true", help="only store results, leave the report alone")
    parser.add_argument(
        "--report-only", action="store_true", help="run nothing, rewrite the report from stored results"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--keep-going", action="store_true", help="run the rest when a benchmark fails")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each benchmark, wait up to SECONDS for the 1-minute load average to drop below "
        "half the core count (a shared machine's noise); 0: don't wait",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    registry = discover()
    for module, error in BROKEN.items():
        log(f"benchmark module bench/{module}.py did not import: {error}")
    if args.list:
        for name in registry:
            print(name)
        return 0
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = [n for n in [*only, *skip] if n not in registry]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(registry)}", file=sys.stderr)
        return 2
    selected = [] if args.report_only else [n for n in (only or list(registry)) if n not in skip]

    results_dir: Path = args.results_dir if args.results_dir.is_absolute() else ROOT / args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    output: Path = args.output if args.output.is_absolute() else ROOT / args.output
    ctx = BenchContext(
        rows=args.rows if args.rows is not None else (200_000 if args.quick else DEFAULT_ROWS),
        quick=args.quick,
        repeats=max(1, args.repeats),
        results_dir=results_dir,
        command=_command(argv),
    )
    machine = machine_info()
    log(
        f"machine: {machine['nproc']} x {machine['cpu']}, {machine['ram_gib']} GiB; running {', '.join(selected)}"
    )
    failed: list[str] = []
    for name in selected:
        log(f"== {name}")
        if args.wait_quiet > 0:
            wait_quiet(args.wait_quiet, (machine["nproc"] or 1) / 2)
        git = git_info()
        load_before = load_average()
        started = time.perf_counter()
        try:
            result = BENCHMARKS[name](ctx)
        except Exception:
            traceback.print_exc(limit=100)  # explicit: an in-process server sets sys.tracebacklimit = 0
            failed.append(name)
            if not args.keep_going:
                break
            continue
        # A run on another data size than the default is a result of its own (e.g. rollups@100000000):
        # it does not replace the default-size figures the targets are read from.
        stored = name if ctx.rows == DEFAULT_ROWS or args.quick else f"{name}@{ctx.rows}"
        if stored != name:
            result["title"] = f"{result.get('title', name)} ({ctx.rows:,} rows)"
        result["name"] = stored
        result["meta"] = {
            "date": utc_now(),
            "command": ctx.command,
            "git": git,
            "machine": machine,
            "rows_option": ctx.rows,
            "quick": ctx.quick,
            "repeats": ctx.repeats,
            "seconds": round(time.perf_counter() - started, 1),
            "load_before": load_before,
            "load_after": load_average(),
        }
        path = results_dir / f"{stored}.json"
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"{name}: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        for item in result.get("summary", []):
            target = (
                f"  (target {item['target']}: {'met' if item.get('ok') else 'MISSED'})"
                if item.get("target")
                else ""
            )
            print(f"{name}: {item['metric']}: {item['value']} {item.get('unit', '')}{target}", flush=True)

    if not args.no_report:
        output.parent.mkdir(parents=True, exist_ok=True)
        previous = output.read_text() if output.exists() else ""
        output.write_text(render(load_results(results_dir), list(registry), previous, charts_into=output.parent))
        log(f"rewrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
