"""Configuration: one TOML file, every key overridable by ``TIERFLIGHT_<SECTION>__<KEY>``.

Tables, tiers and rollups are declared here; nothing else in the code knows the demo table.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tierflight.errors import ConfigError

ENV_PREFIX = "TIERFLIGHT_"
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: Any, key: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or a number of seconds."""
    if isinstance(value, int | float):
        return dt.timedelta(seconds=value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{key} = {value!r} is not a duration; write e.g. '90d', '12h', '30m' or '45s'")
    return dt.timedelta(seconds=int(m.group(1)) * _DURATION_SECONDS[m.group(2)])


def parse_size(value: Any, key: str) -> int:
    """Bytes from ``512MB``, ``4GiB``, ``1000`` and the like."""
    if isinstance(value, int):
        return value
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{key} = {value!r} is not a size; write e.g. '512MB' or '4GiB'")
    unit = m.group(2).lower().rstrip("b").rstrip("i")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(float(m.group(1)) * scale)


def _env_value(raw: str) -> Any:
    # Environment values are TOML literals when they parse as one (numbers, booleans, arrays,
    # dates); anything else is a plain string, so TIERFLIGHT_TIERS__WARM_WINDOW=30d works unquoted.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply ``TIERFLIGHT_<SECTION>__<KEY>[__<SUBKEY>...]`` variables onto the parsed TOML."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name} overrides {'.'.join(path)}, but {part} is not a section")
            node = child
        node[path[-1]] = _env_value(raw)
    return data


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 31337
    max_in_flight: int = 64
    statement_timeout: dt.timedelta = dt.timedelta(seconds=60)
    max_result_rows: int = 0  # 0: no limit
    max_result_bytes: int = 0
    batch_rows: int = 65_536
    max_batch_bytes: int = 8 << 20
    tls_cert: str | None = None
    tls_key: str | None = None
    query_log_size: int = 1000
    # Answers kept in memory and reused while the data they came from is unchanged (0: off).
    result_cache_bytes: int = 64 << 20
    # On SIGTERM/SIGINT: how long in-flight statements may run on before they are cancelled.
    shutdown_grace: dt.timedelta = dt.timedelta(seconds=10)
    # The largest statement text accepted (bytes of UTF-8, 0: no limit). Parsing is Python
    # work that holds the GIL: 256 KiB (a ~30,000-value IN list) parses in about a second.
    max_statement_bytes: int = 256 << 10


@dataclass(frozen=True)
class DuckDBConfig:
    threads: int = 2
    memory_limit: str = "4GB"


@dataclass(frozen=True)
class TiersConfig:
    now: dt.datetime | None = None
    warm_window: dt.timedelta = dt.timedelta(days=90)
    # How often the server demotes aged warm partitions and compacts small files (0: never).
    maintenance_interval: dt.timedelta = dt.timedelta(hours=1)
    compact_small_file_bytes: int = 64 << 20

    def current_time(self) -> dt.datetime:
        """The pinned clock if configured, else the wall clock (UTC, naive like the data)."""
        if self.now is not None:
            return self.now
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class MetricsConfig:
    # /metrics, /healthz and /readyz. 0: any free port (logged); negative or "off": no endpoint.
    port: int = 9464
    host: str = "127.0.0.1"

    @property
    def enabled(self) -> bool:
        return self.port >= 0


_OFF = ("off", "none", "disabled", "false", "no")


def _metrics_port(value: Any) -> int:
    if isinstance(value, bool):  # `port = false` reads as "off"; true is not a port
        if value:
            raise ConfigError('metrics.port = true is not a port; write a port number, 0 for any, or "off"')
        return -1
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in _OFF:
        return -1
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f'metrics.port = {value!r} is not a port; write a port number, 0 for any, or "off"') from None


@dataclass(frozen=True)
class DemoConfig:
    rows: int = 5_000_000
    days: int = 365
    seed: int = 42
    table: str = "events"


@dataclass(frozen=True)
class ColumnConfig:
    name: str
    type: str  # DuckDB type name
    nullable: bool = True


@dataclass(frozen=True)
class TableConfig:
    name: str
    columns: tuple[ColumnConfig, ...]
    time_column: str
    derived: Mapping[str, str] = field(default_factory=dict)  # name -> SQL over the stored columns
    rollups: tuple[Mapping[str, Any], ...] = ()
    sort_by: tuple[str, ...] = ()
    # How data files are written (tiers.parquet): columns with dictionaries (None: all) and
    # with Bloom filters.
    parquet_dictionary: tuple[str, ...] | None = None
    parquet_bloom_filter: tuple[str, ...] = ()
    # DOUBLE columns whose values are decimals with at most this many digits after the point
    # (prices): ingest refuses other values, and rollups keep their sums exact.
    decimals: Mapping[str, int] = field(default_factory=dict)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class Config:
    path: Path | None
    data_dir: Path
    server: ServerConfig
    duckdb: DuckDBConfig
    tiers: TiersConfig
    metrics: MetricsConfig
    demo: DemoConfig
    tables: Mapping[str, TableConfig]
    auth: Mapping[str, Any]
    raw: Mapping[str, Any]

    def table(self, name: str) -> TableConfig:
        try:
            return self.tables[name]
        except KeyError:
            raise ConfigError(f"table {name!r} is not configured; known tables: {', '.join(self.tables)}") from None


def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table (section), got {type(value).__name__}")
    return value


def _known(cls: Any, section: Mapping[str, Any], name: str) -> None:
    unknown = set(section) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(cls.__dataclass_fields__))}"
        )


def _to_datetime(value: Any, key: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    try:
        return _to_datetime(dt.datetime.fromisoformat(str(value)), key)
    except ValueError:
        raise ConfigError(f"{key} = {value!r} is not a date or timestamp; write e.g. 2024-12-31") from None


def _table(name: str, raw: Mapping[str, Any]) -> TableConfig:
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        raise ConfigError(f"[tables.{name}.columns] must map column names to DuckDB types")
    not_null = set(raw.get("not_null", []))
    columns = tuple(ColumnConfig(c, str(t).upper(), c not in not_null) for c, t in cols_raw.items())
    time_column = str(raw.get("time_column", ""))
    if time_column not in cols_raw:
        raise ConfigError(f"tables.{name}.time_column = {time_column!r} must name one of its columns")
    derived = {str(k): str(v) for k, v in dict(raw.get("derived", {})).items()}
    rollups = tuple(raw.get("rollups", []))
    dictionary = raw.get("parquet_dictionary")
    return TableConfig(
        name=name,
        columns=columns,
        time_column=time_column,
        derived=derived,
        rollups=rollups,
        sort_by=tuple(raw.get("sort_by", [time_column])),
        parquet_dictionary=None if dictionary is None else _column_list(name, "parquet_dictionary", dictionary, cols_raw),
        parquet_bloom_filter=_column_list(name, "parquet_bloom_filter", raw.get("parquet_bloom_filter", []), cols_raw),
        decimals=_decimals(name, raw.get("decimals", {}), cols_raw),
    )


MAX_DECIMAL_DIGITS = 9
_FLOAT_TYPES = {"DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8"}


def _decimals(table: str, value: Any, columns: Mapping[str, Any]) -> dict[str, int]:
    key = f"tables.{table}.decimals"
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must map DOUBLE columns to digits after the point, e.g. {{ price = 2 }}")
    out: dict[str, int] = {}
    for column, digits in value.items():
        if column not in columns:
            raise ConfigError(f"{key} names unknown column {column!r}; columns: {', '.join(columns)}")
        if str(columns[column]).upper() not in _FLOAT_TYPES:
            raise ConfigError(f"{key}.{column}: the column is {columns[column]}, not DOUBLE (only floating-point columns take decimals)")
        if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= MAX_DECIMAL_DIGITS:
            raise ConfigError(f"{key}.{column} = {digits!r} must be a whole number of digits from 0 to {MAX_DECIMAL_DIGITS}")
        out[str(column)] = digits
    return out


def _column_list(table: str, key: str, value: Any, columns: Mapping[str, Any]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"tables.{table}.{key} must be a list of column names, e.g. [\"country\"]")
    unknown = [v for v in value if v not in columns]
    if unknown:
        raise ConfigError(f"tables.{table}.{key} names unknown column(s) {', '.join(unknown)}; columns: {', '.join(columns)}")
    return tuple(value)


def load_config(
    path: Path | str | None,
    *,
    data_dir: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the TOML file, apply environment overrides, then explicit ones (tests, CLI flags)."""
    data: dict[str, Any] = {}
    cfg_path = Path(path) if path is not None else None
    if cfg_path is not None:
        try:
            data = tomllib.loads(cfg_path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {cfg_path} does not exist; pass --config FILE") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {cfg_path} is not valid TOML: {exc}") from None
    apply_env_overrides(data, os.environ if environ is None else environ)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    storage = _section(data, "storage")
    root = data_dir if data_dir is not None else storage.get("root", "data")
    server_raw = _section(data, "server")
    _known(ServerConfig, server_raw, "server")
    server_kwargs = dict(server_raw)
    if "statement_timeout" in server_kwargs:
        server_kwargs["statement_timeout"] = parse_duration(server_kwargs["statement_timeout"], "server.statement_timeout")
    if "shutdown_grace" in server_kwargs:
        server_kwargs["shutdown_grace"] = parse_duration(server_kwargs["shutdown_grace"], "server.shutdown_grace")
    for size_key in ("max_result_bytes", "max_batch_bytes", "result_cache_bytes", "max_statement_bytes"):
        if size_key in server_kwargs:
            server_kwargs[size_key] = parse_size(server_kwargs[size_key], f"server.{size_key}")
    tiers_raw = _section(data, "tiers")
    _known(TiersConfig, tiers_raw, "tiers")
    tiers = TiersConfig(
        now=_to_datetime(tiers_raw.get("now"), "tiers.now"),
        warm_window=parse_duration(tiers_raw.get("warm_window", "90d"), "tiers.warm_window"),
        maintenance_interval=parse_duration(tiers_raw.get("maintenance_interval", "1h"), "tiers.maintenance_interval"),
        compact_small_file_bytes=parse_size(
            tiers_raw.get("compact_small_file_bytes", 64 << 20), "tiers.compact_small_file_bytes"
        ),
    )
    for name, cls in (("duckdb", DuckDBConfig), ("metrics", MetricsConfig), ("demo", DemoConfig)):
        _known(cls, _section(data, name), name)
    metrics_raw = dict(_section(data, "metrics"))
    if "port" in metrics_raw:
        metrics_raw["port"] = _metrics_port(metrics_raw["port"])
    tables = {name: _table(name, raw) for name, raw in _section(data, "tables").items()}
    try:
        return Config(
            path=cfg_path,
            data_dir=Path(root).expanduser().absolute(),
            server=ServerConfig(**server_kwargs),
            duckdb=DuckDBConfig(**_section(data, "duckdb")),
            tiers=tiers,
            metrics=MetricsConfig(**metrics_raw),
            demo=DemoConfig(**_section(data, "demo")),
            tables=tables,
            auth=_section(data, "auth"),
            raw=data,
        )
    except TypeError as exc:
        raise ConfigError(f"invalid configuration value: {exc}") from None
