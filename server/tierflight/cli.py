"""The ``tierflight`` command line."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tierflight.core.config import Config, load_config
from tierflight.core.datadir import lock_data_dir
from tierflight.core.errors import TierflightError
from tierflight.core.log import configure_logging, flush_logs, get_logger
from tierflight.lifecycle import settle_heap

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tierflight: Arrow Flight SQL analytics server",
)
rollups_app = typer.Typer(no_args_is_help=True, help="Rollup maintenance")
app.add_typer(rollups_app, name="rollups")
tiers_app = typer.Typer(no_args_is_help=True, help="Tier maintenance")
app.add_typer(tiers_app, name="tiers")
tables_app = typer.Typer(no_args_is_help=True, help="Table schema changes (offline: no server on the data dir)")
app.add_typer(tables_app, name="tables")

DEFAULT_URI = "grpc://127.0.0.1:31337"


class _State:
    config_path: Path | None = None  # None: the configuration shipped in the package
    data_dir: Path | None = None
    log_level: str = "info"


state = _State()


def _config(**overrides: Any) -> Config:
    return load_config(state.config_path, data_dir=state.data_dir, overrides=overrides, packaged=True)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def main_options(
    config: Annotated[
        Path | None, typer.Option("--config", help="configuration file (default: the one shipped in the package)")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="overrides the storage root")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    state.config_path = config
    state.data_dir = data_dir
    state.log_level = log_level
    configure_logging(log_level)


def _lock_or_fail(config: Config) -> None:
    try:
        lock_data_dir(config.data_dir)
    except TierflightError as exc:
        _fail(str(exc))


def _store(config: Config, table: str) -> Any:
    from tierflight.tiers.store import TableStore

    return TableStore(config, config.table(table))


def ensure_demo_data(config: Config) -> None:
    """Generate the demo data set on first start (no data in the data dir); the demo
    dimension tables too, on any start that finds them never loaded."""
    from tierflight.demo.load import generate_dimensions, generate_into
    from tierflight.tiers.dimension import DimensionStore

    demo = config.demo
    if demo.table not in config.tables:
        return
    store = _store(config, demo.table)
    if store.has_data():
        targets = config.table(demo.table).references.values()
        if any(DimensionStore(config.data_dir, config.dimensions[t], writer=False).current.version == 0 for t in targets):
            generate_dimensions(config, demo.table, demo.seed)
        return
    today = config.tiers.current_time().date()
    start = today - dt.timedelta(days=demo.days - 1)
    typer.echo(f"generating demo data: {demo.rows:,} events over {demo.days} days into {config.data_dir}", err=True)
    generate_into(store, demo.rows, start, demo.days, demo.seed, progress=True)
    generate_dimensions(config, demo.table, demo.seed)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config; 0 picks a free one)")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="allow a non-loopback address without auth")] = False,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="do not generate demo data on first start")] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="worker processes behind one front (1: a single process)")
    ] = 1,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="with --workers: the host name clients reach this machine by, in the workers' endpoint "
            "locations (default: --host, or the machine's host name when --host is a wildcard address)",
        ),
    ] = None,
    worker_ports: Annotated[
        int,
        typer.Option(
            "--worker-ports",
            help="with --workers: worker i serves DoGet on port BASE + i (default 0: any free port)",
            metavar="BASE",
        ),
    ] = 0,
) -> None:
    """Run the Flight SQL server."""
    from tierflight.protocol.auth import AuthSettings, check_bind_allowed

    log = get_logger("tierflight.app")
    try:
        config = _config()
        log.info(
            "starting",
            config=str(config.path) if config.path else "packaged default",
            data_dir=str(config.data_dir),
            tables=sorted(config.tables),
            pid=os.getpid(),
        )
        # Refuse an exposed address without auth at once, before loading data and rollups.
        check_bind_allowed(host or config.server.host, AuthSettings.from_config(config.auth).enabled, insecure)
        lock_data_dir(config.data_dir)
        if workers != 1:
            # The front imports no engine (it only routes calls): the primary worker
            # generates the demo data when there is none.
            from tierflight.workers.supervisor import serve_workers

            serve_workers(config, host or config.server.host, config.server.port if port is None else port, workers, run_worker_command,
                          insecure=insecure, log_level=state.log_level, demo=not no_demo, advertise=advertise, worker_ports=worker_ports)
            return
        from tierflight.app import App
        from tierflight.protocol.server import build_server

        if not no_demo:
            ensure_demo_data(config)
        instance = App(config, progress=True)
        bind_host = host or config.server.host
        server = build_server(
            instance.flight_services(), bind_host, config.server.port if port is None else port, insecure=insecure
        )
        # Before the ready line: a probe that sees "ready" may scrape /metrics at once.
        metrics_port = instance.start_http()
    except (TierflightError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    scheme = "grpc+tls" if config.server.tls_cert else "grpc"

    def ready() -> None:
        instance.start_maintenance()
        instance.ingest_service.start_background()
        instance.start_snapshot_watch()
        instance.start_verifier()
        instance.start_auto()
        settle_heap()
        log.info("ready", host=bind_host, port=server.port, metrics_port=metrics_port)
        print(f"tierflight ready at {scheme}://{bind_host}:{server.port}", flush=True)

    from tierflight.app import serve_forever

    try:
        drained = serve_forever(instance, server, ready)
    finally:
        instance.flush_all()
        instance.close()
    log.info("stopped", drained=drained)
    if not drained:
        # A call whose client stopped reading outlives the cancel; gRPC would wait for it at
        # interpreter exit. Everything is flushed and closed by now, so leave without it.
        flush_logs()
        sys.stderr.flush()
        os._exit(0)


@app.command(hidden=True)
def worker(
    socket: Annotated[Path, typer.Option("--socket", help="Unix socket to serve on")],
    index: Annotated[int, typer.Option("--index", help="0: the primary; others follow it")],
    demo: Annotated[bool, typer.Option("--demo", help="generate the demo data first if there is none")] = False,
    direct_host: Annotated[
        str, typer.Option("--direct-host", help="address of the DoGet port (the front's host)")
    ] = "127.0.0.1",
    direct_port: Annotated[int, typer.Option("--direct-port", help="the DoGet port (0: any free one)")] = 0,
) -> None:
    """One worker of `serve --workers` (started by the front; not for direct use)."""
    from tierflight.app import App, serve_forever
    from tierflight.protocol.auth import MIDDLEWARE_KEY, NoOpAuthHandler, tls_certificates
    from tierflight.protocol.boundary import install_traceback_guard
    from tierflight.protocol.server import FlightSqlServer
    from tierflight.protocol.tickets import TicketKey, key_from_env
    from tierflight.workers.direct import DirectServer, Servers
    from tierflight.workers.supervisor import READY_LINE, ticket_ttl_s
    from tierflight.workers.trust import FrontIdentityFactory

    try:
        key = key_from_env()
        if key is None:
            raise TierflightError("no ticket key in the environment: workers are started by `serve --workers`")
        config = _config()
        if demo:
            ensure_demo_data(config)
        instance = App(config, progress=False, follower=index > 0)
        install_traceback_guard()
        tickets = TicketKey(key, ticket_ttl_s(config))
        server = FlightSqlServer(
            instance.flight_services(),
            f"grpc+unix://{socket}",
            tickets=tickets,
            auth_handler=NoOpAuthHandler(),
            middleware={MIDDLEWARE_KEY: FrontIdentityFactory()},
        )
        # The DoGet port: the same certificate as the front, no auth (the tickets are
        # signed), see tierflight.workers.direct.
        certs = tls_certificates(config.server.tls_cert, config.server.tls_key)
        scheme = "grpc+tls" if certs else "grpc"
        bind = f"[{direct_host}]" if ":" in direct_host and not direct_host.startswith("[") else direct_host
        direct = DirectServer(server, f"{scheme}://{bind}:{direct_port}", tls_certificates=certs or None)
        metrics_port = instance.start_http()
    except (TierflightError, ValueError, OSError) as exc:
        _fail(str(exc))
        return

    def ready() -> None:
        _exit_with_parent()
        if index == 0:
            instance.start_maintenance()
            instance.ingest_service.start_background()
            instance.start_verifier()
            instance.start_auto()
        instance.start_snapshot_watch()
        settle_heap()
        get_logger("tierflight.app").info(
            "worker_ready", worker=index, pid=os.getpid(), metrics_port=metrics_port, direct_port=direct.port
        )
        print(f"{READY_LINE} direct={direct.port}", flush=True)

    try:
        serve_forever(instance, Servers(server, direct), ready)
    finally:
        if index == 0:
            instance.flush_all()
        instance.close()


def _exit_with_parent() -> None:
    """A worker whose front died (even by SIGKILL) shuts down like on SIGTERM: flushes, exits."""
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tierflight-parent-watch", daemon=True).start()


@app.command()
def generate(
    rows: Annotated[int, typer.Option("--rows", help="number of events")] = 5_000_000,
    start: Annotated[str | None, typer.Option("--start", help="first day, YYYY-MM-DD")] = None,
    days: Annotated[int, typer.Option("--days", help="number of days")] = 365,
    seed: Annotated[int, typer.Option("--seed")] = 42,
) -> None:
    """Write demo events into the configured tiers (same seed, same rows), and the rows of the
    dimension tables they reference (advertisers, publishers) for every id they can hold."""
    from tierflight.demo.load import generate_dimensions, generate_into

    config = _config()
    if rows <= 0 or days <= 0:
        _fail("--rows and --days must be positive")
    _lock_or_fail(config)
    try:
        first = dt.date.fromisoformat(start) if start else config.tiers.current_time().date() - dt.timedelta(days=days - 1)
    except ValueError:
        _fail(f"--start {start!r} is not a date; write YYYY-MM-DD")
        return
    try:
        stats = generate_into(_store(config, config.demo.table), rows, first, days, seed, progress=True)
        added = generate_dimensions(config, config.demo.table, seed)
    except TierflightError as exc:
        _fail(str(exc))
        return
    typer.echo(f"wrote {stats.rows:,} rows in {stats.files} files ({stats.bytes / 1e6:.1f} MB) in {stats.seconds:.1f} s", err=True)
    for name, n in added.items():
        typer.echo(f"{name}: {n:,} rows added", err=True)


UriOpt = Annotated[str, typer.Option("--uri", help="the server")]
UserOpt = Annotated[str | None, typer.Option("--user", help="user name (basic auth)")]
PasswordOpt = Annotated[
    str | None,
    typer.Option("--password", envvar="TIERFLIGHT_PASSWORD", help="password (prompted for when --user is given without it)"),
]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="TIERFLIGHT_TOKEN", help="static bearer token")]
TlsOpt = Annotated[Path | None, typer.Option("--tls-root-certs", help="CA certificate (PEM) for a grpc+tls:// server")]


def _connect(
    uri: str,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls_root_certs: Path | None = None,
) -> Any:
    import tierflight_client

    if user is not None and password is None:
        password = getpass.getpass(f"password for {user}: ")
    try:
        return tierflight_client.connect(uri, user=user, password=password, token=token, tls_root_certs=tls_root_certs)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    except tierflight_client.TierflightClientError as exc:
        _fail(_client_error(uri, exc), 1)


def _client_error(uri: str, exc: Any) -> str:
    # A refused connection says "connection error: desc = ..."; name the address users gave.
    if exc.code == "UNAVAILABLE":
        return f"cannot reach {uri}: {exc.message}"
    return str(exc)


def _print_table(table: Any, fmt: str, output: Path | None, max_rows: int | None = None) -> None:
    from tierflight.output import write_result

    if fmt == "arrow" and output is None and sys.stdout.isatty():
        _fail("--format arrow writes binary: give --output FILE or pipe it")
    try:
        if output is None:
            write_result(table, fmt, sys.stdout.buffer, max_rows)
            sys.stdout.flush()
        else:
            with output.open("wb") as out:
                write_result(table, fmt, out, max_rows)
    except OSError as exc:
        _fail(f"cannot write {output or 'stdout'}: {exc}")


def _run_statement(
    sql: str,
    uri: str,
    fmt: str,
    output: Path | None,
    max_rows: int,
    user: str | None,
    password: str | None,
    token: str | None,
    tls_root_certs: Path | None,
    route_line: bool,
) -> None:
    import time

    import tierflight_client
    from tierflight.output import FORMATS, describe_route

    if fmt not in FORMATS:
        _fail(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    conn = _connect(uri, user, password, token, tls_root_certs)
    try:
        with conn:
            table = conn.query(sql)
            route = conn.last_route
    except tierflight_client.TierflightClientError as exc:
        _fail(_client_error(uri, exc), 1)
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    limit = max_rows if max_rows > 0 else None
    _print_table(table, fmt, output, limit)
    if route_line:
        typer.echo(describe_route(route), err=True)
    shown = f" (showing {limit:,}; --max-rows 0 for all)" if fmt == "table" and limit and table.num_rows > limit else ""
    typer.echo(f"{table.num_rows:,} rows{shown} in {elapsed_ms:.1f} ms", err=True)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="the statement")],
    uri: UriOpt = DEFAULT_URI,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json (one object per line) or arrow (IPC stream)")] = "table",
    output: Annotated[Path | None, typer.Option("--output", help="write the result to FILE instead of stdout")] = None,
    max_rows: Annotated[int, typer.Option("--max-rows", help="rows the text table shows (0: all)")] = 1000,
    user: UserOpt = None,
    password: PasswordOpt = None,
    token: TokenOpt = None,
    tls_root_certs: TlsOpt = None,
) -> None:
    """Run one statement and print the result; route and timing go to stderr."""
    _run_statement(sql, uri, fmt, output, max_rows, user, password, token, tls_root_certs, route_line=True)


@app.command()
def explain(
    sql: Annotated[str, typer.Argument(help="the statement")],
    uri: UriOpt = DEFAULT_URI,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or arrow")] = "table",
    user: UserOpt = None,
    password: PasswordOpt = None,
    token: TokenOpt = None,
    tls_root_certs: TlsOpt = None,
) -> None:
    """Print the route a statement takes (EXPLAIN ROUTE): tiers, sources, rejected rollups."""
    _run_statement(f"EXPLAIN ROUTE {sql}", uri, fmt, None, 0, user, password, token, tls_root_certs, route_line=False)


@app.command()
def loadtest(
    workload: Annotated[Path, typer.Option("--workload", help="statements file: '-- name: NAME' then 'SQL;'")],
    concurrency: Annotated[int, typer.Option("--concurrency", help="concurrent clients")],
    uri: UriOpt = DEFAULT_URI,
    duration: Annotated[float | None, typer.Option("--duration", help="seconds to measure")] = None,
    statements: Annotated[int | None, typer.Option("--statements", help="statements to run in total (alone: at most 600 s)")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="open loop: statements per second in total")] = None,
    processes: Annotated[int | None, typer.Option("--processes", help="worker processes (default: one per core)")] = None,
    warmup: Annotated[float, typer.Option("--warmup", help="seconds to run before measuring")] = 0.0,
    timeout: Annotated[float, typer.Option("--timeout", help="per-statement timeout in seconds")] = 30.0,
    report: Annotated[Path | None, typer.Option("--report", help="write a JSON report here, and a PNG chart next to it")] = None,
    user: UserOpt = None,
    password: PasswordOpt = None,
    token: TokenOpt = None,
    tls_root_certs: TlsOpt = None,
    parameters: Annotated[
        str, typer.Option("--parameters", help="{pool} placeholders: 'literal' (new text per call) or 'bind' (prepared once)")
    ] = "literal",
    seed: Annotated[int, typer.Option("--seed", help="seed of the values drawn for {pool} placeholders")] = 0,
) -> None:
    """Load-test a server with a workload file: QPS, latency percentiles, errors, tier shares."""
    from tierflight.loadtest import LoadTestError, WorkloadError
    from tierflight.loadtest.command import run_command
    from tierflight.loadtest.vary import ParameterMode

    if parameters not in {m.value for m in ParameterMode}:
        _fail(f"--parameters must be one of {', '.join(m.value for m in ParameterMode)}, not {parameters!r}")
    if user is not None and password is None:
        password = getpass.getpass(f"password for {user}: ")
    try:
        run_command(
            uri=uri, workload=workload, concurrency=concurrency, duration=duration, statements=statements, rate=rate,
            processes=processes, warmup=warmup, timeout=timeout, report=report, user=user, password=password, token=token,
            tls_root_certs=tls_root_certs, parameters=ParameterMode(parameters), seed=seed,
        )
    except (LoadTestError, WorkloadError, OSError) as exc:
        _fail(str(exc))


def _stores(config: Config) -> dict[str, Any]:
    return {name: _store(config, name) for name in config.tables}


@rollups_app.command("build")
def rollups_build() -> None:
    """Build every configured rollup in one pass per table and write its snapshot."""
    import time

    from tierflight.engine.database import Database
    from tierflight.rollups.registry import RollupRegistry
    from tierflight.tiers.store import TableStore

    config = _config()
    _lock_or_fail(config)
    database = Database(config)
    stores = {name: TableStore(config, table) for name, table in config.tables.items()}
    registry = RollupRegistry(config, database, stores)
    started = time.perf_counter()
    registry.build(progress=True)
    for state in registry.states.values():
        typer.echo(f"{state.group.name}: {state.status}, {state.rows:,} rows, {state.bytes / 1e6:.2f} MB", err=True)
    typer.echo(f"built {len(registry.states)} rollups in {time.perf_counter() - started:.1f} s", err=True)


@rollups_app.command("verify")
def rollups_verify(
    names: Annotated[list[str] | None, typer.Argument(help="rollups to verify (default: all)")] = None,
    sample: Annotated[float, typer.Option("--sample", help="share of each rollup's groups to recompute, above 0 and at most 1")] = 1.0,
    since: Annotated[str | None, typer.Option("--since", help="only time buckets from this date/timestamp, or this long ago (7d, 12h)")] = None,
) -> None:
    """Recompute rollup groups from the raw tiers and compare (exit status 1 on any mismatch)."""
    from tierflight.app import App
    from tierflight.rollups.verifier import Verifier, since_time

    if not 0 < sample <= 1:
        _fail(f"--sample {sample} must be above 0 and at most 1 (e.g. 0.01 for 1% of the groups)")
    config = _config()
    try:
        start = since_time(since, config.tiers.current_time()) if since else None
    except ValueError as exc:
        _fail(str(exc))
    _lock_or_fail(config)
    instance = App(config, build_rollups=False)
    try:
        by_name = {m: s for s in instance.rollups.states.values() for m in (s.group.name, *s.group.members)}
        unknown = [n for n in names or () if n not in by_name]
        if unknown:
            _fail(f"no rollup named {', '.join(unknown)}; configured: {', '.join(sorted(by_name))}")
        wanted = dict.fromkeys(by_name[n].group.name for n in names) if names else instance.rollups.states
        states = [instance.rollups.states[n] for n in wanted]
        verifier = Verifier(instance.rollups, instance.swap_lock, cursor=instance.database.cursor())
        lines, failed, unverified = [], False, False
        with typer.progressbar(states, label="verifying", file=sys.stderr, item_show_func=lambda s: s.group.name if s else "") as bar:
            for st in bar:
                if st.status not in ("active", "stale"):
                    lines.append((st.group.name, "-", "-", "-", "-", f"not loaded ({st.status})"))
                    unverified = True
                    continue
                try:
                    r = verifier.verify_one(st, sample, since=start)
                except Exception as exc:  # noqa: BLE001 - reported per rollup (exit status 2), the others still run
                    lines.append((st.group.name, "-", "-", "-", "-", f"not verified: {str(exc).splitlines()[0][:200]}"))
                    unverified = True
                    continue
                failed |= r.mismatches > 0
                unverified |= r.skipped is not None
                note = r.skipped or ("MISMATCH" if r.mismatches else "ok")
                lines.append((r.rollup, f"{r.groups:,}", f"{r.mismatches:,}", f"{r.largest_error:.3g}", f"{r.seconds:.2f}", note))
                for m in r.evidence:
                    typer.echo(f"{r.rollup}: {m.describe()}", err=True)
        header = ("rollup", "groups", "mismatches", "largest error", "seconds", "")
        widths = [max(len(str(row[i])) for row in (header, *lines)) for i in range(len(header))]
        for row in (header, *lines):
            typer.echo("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        verifier.close()
    finally:
        instance.close()
    if failed:
        raise typer.Exit(1)
    if unverified:
        raise typer.Exit(2)


@rollups_app.command("advise")
def rollups_advise(
    output_format: str = typer.Option("table", "--format", help="table (ranked proposals and config text) or json"),
) -> None:
    """Ranked rollup proposals learned from the query log, with estimated rows, bytes and
    benefit, and the config text to adopt each (reads the data dir; a running server may
    keep serving)."""
    import json

    from tierflight.advisor.estimate import DataEstimator
    from tierflight.advisor.querylog import log_dir, read_log
    from tierflight.advisor.service import advice_table, compute_advice, describe
    from tierflight.tiers.store import TableStore

    if output_format not in ("table", "json"):
        _fail(f"--format must be table or json, got {output_format!r}")
    config = _config()
    observations = list(read_log(log_dir(config)))
    stores = {name: TableStore(config, table) for name, table in config.tables.items()}
    estimator = DataEstimator(stores, config.tiers.current_time, config.duckdb.temp_directory or str(config.data_dir / ".duckdb_tmp"))
    try:
        # Filter texts are never written to the log: shared filters are proposed by a
        # running server (system.rollup_advice); here their columns become dimensions.
        proposals = compute_advice(config, observations, estimator, {})
    finally:
        estimator.close()
    if output_format == "json":
        typer.echo(json.dumps(advice_table(proposals).to_pylist(), default=str, indent=2))
        return
    if not proposals:
        typer.echo(f"no proposals: {len(observations)} statements observed, all answered from rollups or none a rollup could answer")
        return
    for rank, p in enumerate(proposals, start=1):
        typer.echo(describe(p, rank))


@tiers_app.command("demote")
def tiers_demote() -> None:
    """Move warm partitions older than the warm window into the Iceberg table."""
    from tierflight.tiers.maintenance import demote

    try:
        config = _config()
        lock_data_dir(config.data_dir)
        for name, store in _stores(config).items():
            stats = demote(store)
            typer.echo(f"{name}: demoted {stats.days} days ({stats.rows:,} rows, {stats.files} files) in {stats.seconds:.1f} s", err=True)
    except TierflightError as exc:
        _fail(str(exc))


@tiers_app.command("compact")
def tiers_compact() -> None:
    """Rewrite warm partitions made of several small files into one file each."""
    from tierflight.tiers.maintenance import compact_warm

    try:
        config = _config()
        lock_data_dir(config.data_dir)
        for name, store in _stores(config).items():
            stats = compact_warm(store, config.tiers.compact_small_file_bytes)
            typer.echo(f"{name}: compacted {stats.partitions} partitions ({stats.files_before} -> {stats.files_after} files)", err=True)
    except TierflightError as exc:
        _fail(str(exc))


@tables_app.command("alter")
def tables_alter(
    table: Annotated[str, typer.Argument(help="a configured table")],
    change: Annotated[list[str], typer.Argument(help="rename column OLD to NEW")],
) -> None:
    """Change a table's schema: `tables alter TABLE rename column OLD to NEW` (offline)."""
    from tierflight.tiers.alter import rename_column

    words = list(change)
    if len(words) >= 2 and words[0].lower() == "rename" and words[1].lower() == "column":
        words = words[2:]
    elif words and words[0].lower() == "rename":
        words = words[1:]
    else:
        words = []
    if len(words) != 3 or words[1].lower() != "to":
        _fail("usage: tierflight tables alter TABLE rename column OLD to NEW")
    try:
        config = _config()
        lock_data_dir(config.data_dir)
        store = rename_column(config, table, words[0], words[2])
        typer.echo(f"{table}: renamed column {words[0]} to {words[2]} (schema version {store.registry.version})", err=True)
    except TierflightError as exc:
        _fail(str(exc))


@app.command("hash-password")
def hash_password_cmd() -> None:
    """Print a password hash for [auth.users.NAME] password_hash."""
    from tierflight.protocol.auth import hash_password

    password = getpass.getpass("password: ")
    if password != getpass.getpass("again: "):
        _fail("passwords differ")
    print(hash_password(password))


def run_worker_command(args: list[str]) -> None:
    """A forked worker's body after its set-up (workers.supervisor): ``tierflight worker ...``."""
    app(args, prog_name="tierflight")


def main() -> None:
    try:
        app()
    except TierflightError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - users get a message, the log gets the details
        get_logger("tierflight.cli").error("command_failed", error=repr(exc), exc_info=exc)
        typer.secho(f"error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
