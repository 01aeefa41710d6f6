"""The ``tierflight`` command line."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tierflight.config import Config, load_config
from tierflight.errors import TierflightError
from tierflight.log import configure_logging, get_logger

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

DEFAULT_CONFIG = Path("conf/tierflight.toml")
DEFAULT_URI = "grpc://127.0.0.1:31337"


class _State:
    config_path: Path = DEFAULT_CONFIG
    data_dir: Path | None = None


state = _State()


def _config(**overrides: Any) -> Config:
    return load_config(state.config_path, data_dir=state.data_dir, overrides=overrides)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def main_options(
    config: Annotated[Path, typer.Option("--config", help="configuration file")] = DEFAULT_CONFIG,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="overrides the storage root")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    state.config_path = config
    state.data_dir = data_dir
    configure_logging(log_level)


def _store(config: Config, table: str) -> Any:
    from tierflight.engine.database import Database
    from tierflight.tiers.store import TableStore

    return TableStore(config, config.table(table), Database(config))


def ensure_demo_data(config: Config) -> None:
    """Generate the demo data set on first start (no data in the data dir)."""
    from tierflight.demo.load import generate_into

    demo = config.demo
    if demo.table not in config.tables:
        return
    store = _store(config, demo.table)
    if store.has_data():
        return
    today = config.tiers.current_time().date()
    start = today - dt.timedelta(days=demo.days - 1)
    typer.echo(f"generating demo data: {demo.rows:,} events over {demo.days} days into {config.data_dir}", err=True)
    generate_into(store, demo.rows, start, demo.days, demo.seed, progress=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to bind (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config; 0 picks a free one)")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="allow a non-loopback address without auth")] = False,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="do not generate demo data on first start")] = False,
) -> None:
    """Run the Flight SQL server."""
    from tierflight.app import App, serve_forever
    from tierflight.protocol.server import build_server

    log = get_logger("tierflight.app")
    try:
        config = _config()
        log.info(
            "starting",
            config=str(config.path) if config.path else None,
            data_dir=str(config.data_dir),
            tables=sorted(config.tables),
            pid=os.getpid(),
        )
        if not no_demo:
            ensure_demo_data(config)
        instance = App(config, progress=True)
        bind_host = host or config.server.host
        server = build_server(instance, bind_host, config.server.port if port is None else port, insecure=insecure)
        # Before the ready line: a probe that sees "ready" may scrape /metrics at once.
        metrics_port = instance.start_http()
    except (TierflightError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    scheme = "grpc+tls" if config.server.tls_cert else "grpc"

    def ready() -> None:
        instance.start_maintenance()
        instance.ingest_service.start_background()
        log.info("ready", host=bind_host, port=server.port, metrics_port=metrics_port)
        print(f"tierflight ready at {scheme}://{bind_host}:{server.port}", flush=True)

    try:
        drained = serve_forever(server, ready)
    finally:
        instance.flush_all()
        instance.close()
    log.info("stopped", drained=drained)
    if not drained:
        # A call whose client stopped reading outlives the cancel; gRPC would wait for it at
        # interpreter exit. Everything is flushed and closed by now, so leave without it.
        sys.stderr.flush()
        os._exit(0)


@app.command()
def generate(
    rows: Annotated[int, typer.Option("--rows", help="number of events")] = 5_000_000,
    start: Annotated[str | None, typer.Option("--start", help="first day, YYYY-MM-DD")] = None,
    days: Annotated[int, typer.Option("--days", help="number of days")] = 365,
    seed: Annotated[int, typer.Option("--seed")] = 42,
) -> None:
    """Write demo events into the configured tiers (same seed, same rows)."""
    from tierflight.demo.load import generate_into

    config = _config()
    if rows <= 0 or days <= 0:
        _fail("--rows and --days must be positive")
    try:
        first = dt.date.fromisoformat(start) if start else config.tiers.current_time().date() - dt.timedelta(days=days - 1)
    except ValueError:
        _fail(f"--start {start!r} is not a date; write YYYY-MM-DD")
        return
    try:
        stats = generate_into(_store(config, config.demo.table), rows, first, days, seed, progress=True)
    except TierflightError as exc:
        _fail(str(exc))
        return
    typer.echo(f"wrote {stats.rows:,} rows in {stats.files} files ({stats.bytes / 1e6:.1f} MB) in {stats.seconds:.1f} s", err=True)


def _connect(uri: str) -> Any:
    import adbc_driver_flightsql.dbapi as fsql

    return fsql.connect(uri)


def _print_table(table: Any, fmt: str, output: Path | None) -> None:
    import pyarrow.csv as pacsv

    out = output.open("wb") if output else sys.stdout.buffer
    try:
        if fmt == "csv":
            pacsv.write_csv(table, out)
        elif fmt == "json":
            import json

            for row in table.to_pylist():
                out.write((json.dumps(row, default=str) + "\n").encode())
        elif fmt == "arrow":
            import pyarrow as pa

            with pa.ipc.new_stream(out, table.schema) as writer:
                writer.write_table(table)
        else:
            out.write((table.to_pandas().to_string(index=False) + "\n").encode() if table.num_rows else b"(no rows)\n")
    finally:
        if output:
            out.close()


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="the statement")],
    uri: Annotated[str, typer.Option("--uri")] = DEFAULT_URI,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or arrow")] = "table",
    output: Annotated[Path | None, typer.Option("--output")] = None,
) -> None:
    """Run one statement against a server and print the result."""
    import time

    started = time.perf_counter()
    try:
        with _connect(uri) as conn, conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
    except Exception as exc:  # noqa: BLE001 - the driver's errors carry the server's message
        _fail(str(exc).splitlines()[0])
        return
    _print_table(table, fmt, output)
    typer.echo(f"{table.num_rows} rows in {(time.perf_counter() - started) * 1000:.1f} ms", err=True)


@app.command()
def explain(
    sql: Annotated[str, typer.Argument(help="the statement")],
    uri: Annotated[str, typer.Option("--uri")] = DEFAULT_URI,
) -> None:
    """Print the route a statement takes."""
    query(f"EXPLAIN ROUTE {sql}", uri=uri, fmt="table", output=None)


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
    database = Database(config)
    stores = {name: TableStore(config, table, database) for name, table in config.tables.items()}
    registry = RollupRegistry(config, database, stores)
    started = time.perf_counter()
    registry.build(progress=True)
    for state in registry.states.values():
        typer.echo(f"{state.group.name}: {state.status}, {state.rows:,} rows, {state.bytes / 1e6:.2f} MB", err=True)
    typer.echo(f"built {len(registry.states)} rollups in {time.perf_counter() - started:.1f} s", err=True)


@tiers_app.command("demote")
def tiers_demote() -> None:
    """Move warm partitions older than the warm window into the Iceberg table."""
    from tierflight.tiers.maintenance import demote

    try:
        for name, store in _stores(_config()).items():
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
        for name, store in _stores(config).items():
            stats = compact_warm(store, config.tiers.compact_small_file_bytes)
            typer.echo(f"{name}: compacted {stats.partitions} partitions ({stats.files_before} -> {stats.files_after} files)", err=True)
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
