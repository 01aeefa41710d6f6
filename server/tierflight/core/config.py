"""Configuration: one TOML file, every key overridable by ``TIERFLIGHT_<SECTION>__<KEY>``.

Every section is parsed here, once, into a frozen dataclass; no other module reads the TOML.
An unknown key or section is refused by name with the nearest valid one, so a typo such as
``router.enabld`` fails at start-up instead of silently keeping the default.

Tables, tiers and rollups are declared here; nothing else in the code knows the demo table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import importlib.resources
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, get_type_hints

from tierflight.core.config_keys import Origins, check_keys, unknown_key
from tierflight.core.errors import AuthConfigError, ConfigError
from tierflight.core.passwords import HASH_ALGORITHM

ENV_PREFIX = "TIERFLIGHT_"
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: Any, key: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or a number of seconds."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{key} = {value!r} is not a duration; write e.g. '90d', '12h', '30m' or '45s'")
    return dt.timedelta(seconds=int(m.group(1)) * _DURATION_SECONDS[m.group(2)])


def parse_size(value: Any, key: str) -> int:
    """Bytes from ``512MB``, ``4GiB``, ``1000`` and the like."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", str(value), re.IGNORECASE)
    if not m:
        raise ConfigError(f"{key} = {value!r} is not a size; write e.g. '512MB' or '4GiB'")
    unit = m.group(2).lower().rstrip("b").rstrip("i")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(float(m.group(1)) * scale)


def parse_size_or_share(value: Any, key: str) -> int | float:
    """Bytes (``8GB``), or a share of the machine's memory (``75%`` → 0.75)."""
    if isinstance(value, float) and 0 < value <= 1:
        return value
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$", str(value))
    if m is None:
        return parse_size(value, key)
    share = float(m.group(1)) / 100
    if not 0 < share <= 1:
        raise ConfigError(f"{key} = {value!r} must be a share from 1% to 100%, a size like '8GB', or 0 (off)")
    return share


def _env_value(raw: str) -> Any:
    # Environment values are TOML literals when they parse as one (numbers, booleans, arrays,
    # dates); anything else is a plain string, so TIERFLIGHT_TIERS__WARM_WINDOW=30d works unquoted.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], origins: Origins | None = None
) -> dict[str, Any]:
    """Apply ``TIERFLIGHT_<SECTION>__<KEY>[__<SUBKEY>...]`` variables onto the parsed TOML.

    ``origins`` records which variable set each key (and its sections), so that an unknown key
    it carried is refused naming the variable rather than a file line that does not exist."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if origins is not None:
            for depth in range(1, len(path) + 1):
                origins.setdefault(tuple(path[:depth]), name)
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
    # The process' resident memory past which the newest statements are cancelled: bytes (int)
    # or a fraction of the machine's (cgroup's) memory (float, from "75%"); 0: no ceiling.
    memory_ceiling: int | float = 0.75
    # The largest statement text accepted (bytes of UTF-8, 0: no limit). Parsing is Python
    # work that holds the GIL: 256 KiB (a ~30,000-value IN list) parses in about a second.
    max_statement_bytes: int = 256 << 10


@dataclass(frozen=True)
class StorageConfig:
    # Relative paths are taken from the working directory; --data-dir overrides it.
    root: str = "data"
    # Warm partitions under this prefix (s3://... or a local directory) instead of <root>.
    warm_uri: str | None = None
    # How often a table's state on shared (S3) storage is checked for another node's changes.
    poll_interval: dt.timedelta = dt.timedelta(seconds=2)


@dataclass(frozen=True)
class S3Config:
    # Each None falls back to the AWS_* environment (see tiers.s3.S3Settings.from_config).
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    timeout: dt.timedelta = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class DuckDBConfig:
    threads: int = 2
    memory_limit: str = "4GB"
    # Spill files of sorts, joins and aggregates past memory_limit: where, and how many bytes
    # in all ("": <data dir>/.duckdb_tmp); a statement that needs more fails.
    temp_directory: str = ""
    max_temp_directory_size: int = 16 << 30


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


class CatalogType(enum.StrEnum):
    SQL = "sql"  # pyiceberg's SQL catalog on SQLite under the data dir (embedded)
    REST = "rest"


class OnUnavailable(enum.StrEnum):
    ERROR = "error"  # a statement that needs the cold tier fails while it is unreachable
    SKIP = "skip"  # it is answered from the other tiers, and the log says so


class IcebergAuth(enum.StrEnum):
    KEYS = "keys"  # the S3 key pair as OAuth2 client credentials (REST catalogs)
    NONE = "none"


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class IcebergConfig:
    type: CatalogType = CatalogType.SQL
    namespace: str = "tierflight"
    # How long a catalog (REST) or object store request may take before it fails.
    timeout: dt.timedelta = dt.timedelta(seconds=10)
    on_unavailable: OnUnavailable = OnUnavailable.ERROR
    auth: IcebergAuth = IcebergAuth.KEYS
    uri: str | None = None  # default (sql): sqlite:///<data_dir>/catalog/iceberg.db
    warehouse: str | None = None  # default (sql): <data_dir>/iceberg
    # Other pyiceberg catalog properties, passed to the catalog as given ("s3.endpoint", ...).
    properties: Mapping[str, str] = field(default_factory=_empty)


@dataclass(frozen=True)
class MetricsConfig:
    # /metrics, /healthz and /readyz. 0: any free port (logged); negative or "off": no endpoint.
    port: int = 9464
    host: str = "127.0.0.1"

    @property
    def enabled(self) -> bool:
        return self.port >= 0


_OFF = ("off", "none", "disabled", "false", "no")


def _metrics_port(value: Any, key: str = "metrics.port") -> int:
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
class UserConfig:
    # None: a token-only user. Checked as a hash by protocol.auth.User.
    password_hash: str | None = field(default=None, repr=False)
    permissions: tuple[str, ...] = ("read",)


@dataclass(frozen=True)
class AuthConfig:
    users: Mapping[str, UserConfig] = field(default_factory=_empty)
    # Static bearer token -> user name (secrets: never in a repr).
    tokens: Mapping[str, str] = field(default_factory=_empty, repr=False)
    token_ttl_seconds: int = 3600  # idle lifetime of session tokens
    # Failed logins per user name before each further try waits (doubling up to the cap).
    max_failed_logins: int = 5
    login_backoff_cap_seconds: int = 60


@dataclass(frozen=True)
class IngestConfig:
    # The hot tail is flushed to warm Parquet (late rows: to Iceberg) past any of these.
    flush_rows: int = 1_000_000
    flush_bytes: int = 256 << 20
    flush_age: dt.timedelta = dt.timedelta(minutes=5)
    max_past: dt.timedelta = dt.timedelta(days=3650)
    max_future: dt.timedelta = dt.timedelta(days=1)
    nice: int = 10
    snapshot_every: dt.timedelta = dt.timedelta(seconds=30)
    # While statements run, a table's ingest is held to at most this many rows/s (0: never).
    yield_rows_per_s: int = 280_000
    # The most a dimension table may hold in memory (Arrow bytes); a larger load is refused.
    max_dimension_bytes: int = 1 << 30


@dataclass(frozen=True)
class RouterConfig:
    enabled: bool = True  # false: every statement reads the raw tiers (for comparisons)
    # Joined rollups (router/joined.py): rows kept in all, over every join they hold (0: none).
    joined_rollup_rows: int = 4_000_000


@dataclass(frozen=True)
class RollupsConfig:
    memory_budget: int = 2 << 30
    allow_stale: bool = False
    enabled: bool = True
    # Where snapshots live (default: next to an S3 warm tier, else <data_dir>/rollups).
    snapshot_uri: str | None = None
    # How often a server looks for rollup snapshots another node published (0: never).
    reload_interval: dt.timedelta = dt.timedelta(seconds=5)
    # Background verification (rollups/verifier.py): how often a sample of every rollup's
    # groups is recomputed from the raw tiers (0: never), and the share of groups sampled.
    verify_interval: dt.timedelta = dt.timedelta(minutes=10)
    verify_sample: float = 0.01
    # The advisor's durable query log (advisor/querylog.py): file size before rotation (0: off).
    query_log_bytes: int = 8 << 20
    # Autonomous mode (advisor/auto.py): the advisor's top proposals are built and dropped.
    auto: bool = True
    auto_ttl: dt.timedelta = dt.timedelta(days=1)  # an auto rollup with no hit this long is dropped
    auto_min_statements: int = 3  # observations of a shape before it is built
    auto_delay: dt.timedelta = dt.timedelta(seconds=20)  # after its first statement
    auto_interval: dt.timedelta = dt.timedelta(seconds=10)  # how often the advice is acted on


@dataclass(frozen=True)
class ColumnConfig:
    name: str
    type: str  # DuckDB type name
    nullable: bool = True


@dataclass(frozen=True)
class RollupConfig:
    """One ``[[tables.<t>.rollups]]`` entry; its dimensions and measures are checked against
    the table by rollups.definition.parse_rollups."""

    name: str = ""
    dimensions: tuple[str, ...] = ()
    measures: tuple[str, ...] = ()
    filter: str | None = None
    retention: dt.timedelta | None = None
    order: tuple[str, ...] = ()


class TableKind(enum.StrEnum):
    FACT = "fact"  # time-partitioned rows in the hot/warm/cold tiers, with rollups
    DIMENSION = "dimension"  # a small keyed table held in memory, replaced or appended whole


class Evolve(enum.StrEnum):
    """How a table's schema may follow its producers' batches (tiers.evolution)."""

    NONE = "none"  # a batch must have the table's columns and types
    WIDEN = "widen"  # ... or widen a column's type (INTEGER -> BIGINT, FLOAT -> DOUBLE)
    ADD_COLUMNS = "add_columns"  # ... or add new nullable columns (and widen)


@dataclass(frozen=True)
class TableConfig:
    name: str
    columns: tuple[ColumnConfig, ...]
    time_column: str  # "" for a dimension table
    derived: Mapping[str, str] = field(default_factory=dict)  # name -> SQL over the stored columns
    rollups: tuple[RollupConfig, ...] = ()
    sort_by: tuple[str, ...] = ()
    # How data files are written (tiers.parquet): columns with dictionaries (None: all) and
    # with Bloom filters.
    parquet_dictionary: tuple[str, ...] | None = None
    parquet_bloom_filter: tuple[str, ...] = ()
    # DOUBLE columns whose values are decimals with at most this many digits after the point
    # (prices): ingest refuses other values, and rollups keep their sums exact.
    decimals: Mapping[str, int] = field(default_factory=dict)
    kind: TableKind = TableKind.FACT
    # A dimension table's key column (unique, not null); None for a fact table.
    key: str | None = None
    # A fact table's foreign keys: its column -> the dimension table whose key it holds.
    references: Mapping[str, str] = field(default_factory=dict)
    # How a fact table's schema may follow its producers' batches (a dimension's never does).
    evolve: Evolve = Evolve.NONE

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
    tables: Mapping[str, TableConfig]  # fact tables (kind = "fact")
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    s3: S3Config = field(default_factory=S3Config)
    iceberg: IcebergConfig = field(default_factory=IcebergConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    rollups: RollupsConfig = field(default_factory=RollupsConfig)
    # Dimension tables (kind = "dimension"), apart from the fact tables: they have no tiers.
    dimensions: Mapping[str, TableConfig] = field(default_factory=_empty)

    def table(self, name: str) -> TableConfig:
        try:
            return self.tables[name]
        except KeyError:
            raise ConfigError(f"table {name!r} is not configured; known tables: {', '.join(self.tables)}") from None


# -- values ------------------------------------------------------------------------------------

Parser = Callable[[Any, str], Any]
T = TypeVar("T")


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} = {value!r} must be a whole number")
    return value


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} = {value!r} must be a number")
    return float(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} = {value!r} must be true or false")
    return value


def _str(value: Any, key: str) -> str:
    if isinstance(value, os.PathLike):  # a path handed over by a test or a CLI flag
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} = {value!r} must be a string")
    return value


def _optional_str(value: Any, key: str) -> str | None:
    # An empty string means "not set", as it always has (e.g. warm_uri = "").
    return _str(value, key) or None


def _str_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings, e.g. [\"a\", \"b\"]")
    return tuple(value)


def _optional_duration(value: Any, key: str) -> dt.timedelta | None:
    return parse_duration(value, key) if value else None  # unset, "" or 0: none


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


def _enum(kind: type[enum.StrEnum]) -> Parser:
    def parse(value: Any, key: str) -> enum.StrEnum:
        try:
            return kind(str(value).lower())
        except ValueError:
            raise ConfigError(f"{key} = {value!r}; use {' or '.join(repr(m.value) for m in kind)}") from None

    return parse


def _nice(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise ConfigError(f"{key} must be an integer from 0 to 19, got {value!r}")
    return value


def _fraction(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"{key} must be a share of groups above 0 and at most 1 (e.g. 0.01), got {value!r}")
    return float(value)


def _rows(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be a whole number of rows (0: none), got {value!r}")
    return value


def _rate(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be a whole number of rows per second (0: off), got {value!r}")
    return value


# Fields parsed other than by their type (sizes, ports, ranges); every other field is parsed
# by its annotation in _by_type.
_PARSERS: dict[type, dict[str, Parser]] = {
    ServerConfig: {
        **{k: parse_size for k in ("max_result_bytes", "max_batch_bytes", "result_cache_bytes", "max_statement_bytes")},
        "memory_ceiling": parse_size_or_share,
    },
    DuckDBConfig: {"max_temp_directory_size": parse_size},
    TiersConfig: {"now": _to_datetime, "compact_small_file_bytes": parse_size},
    MetricsConfig: {"port": _metrics_port},
    IngestConfig: {
        "flush_bytes": parse_size,
        "max_dimension_bytes": parse_size,
        "nice": _nice,
        "yield_rows_per_s": _rate,
    },
    RouterConfig: {"joined_rollup_rows": _rows},
    RollupsConfig: {"memory_budget": parse_size, "verify_sample": _fraction, "query_log_bytes": parse_size},
    RollupConfig: {"retention": _optional_duration},
}


# Fields that are no key of their section (filled from several keys).
_NOT_KEYS: dict[type, tuple[str, ...]] = {IcebergConfig: ("properties",)}


def _by_type(hint: Any) -> Parser:
    simple: dict[Any, Parser] = {
        int: _int,
        float: _float,
        bool: _bool,
        str: _str,
        str | None: _optional_str,
        dt.timedelta: parse_duration,
        tuple[str, ...]: _str_list,
    }
    if hint in simple:
        return simple[hint]
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return _enum(hint)
    raise TypeError(f"no config parser for {hint!r}")  # a programming error, caught by the tests


_FIELD_PARSERS: dict[type, dict[str, Parser]] = {}


def _field_parsers(cls: type) -> dict[str, Parser]:
    """Each key of ``cls``'s section and how its value is parsed (worked out once per class)."""
    if cls not in _FIELD_PARSERS:
        hints = get_type_hints(cls)
        own = _PARSERS.get(cls, {})
        skip = _NOT_KEYS.get(cls, ())
        _FIELD_PARSERS[cls] = {f.name: own.get(f.name) or _by_type(hints[f.name]) for f in fields(cls) if f.name not in skip}
    return _FIELD_PARSERS[cls]


def build(cls: type[T], path: tuple[str, ...], section: Any, origins: Origins | None = None) -> T:
    """``cls`` from one TOML table: every key known, every value parsed by its field."""
    where = ".".join(path)
    if not isinstance(section, Mapping):
        raise ConfigError(f"[{where}] must be a table (section), got {type(section).__name__}")
    parsers = _field_parsers(cls)
    check_keys(section, parsers, path, origins)
    return cls(**{k: parsers[k](v, f"{where}.{k}") for k, v in section.items()})


def ingest_config(section: Mapping[str, Any]) -> IngestConfig:
    return build(IngestConfig, ("ingest",), section)


# -- [iceberg] -----------------------------------------------------------------------------------

# pyiceberg catalog properties that are single words (REST and SQL catalogs).
_CATALOG_WORDS = ("credential", "token", "scope", "audience", "resource", "prefix", "echo", "pool_pre_ping")


def _flatten(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # An unquoted dotted key (s3.endpoint = ...) is a nested table in TOML: it means the
    # property "s3.endpoint" all the same.
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _iceberg(section: Any, origins: Origins) -> IcebergConfig:
    if not isinstance(section, Mapping):
        raise ConfigError(f"[iceberg] must be a table (section), got {type(section).__name__}")
    ours = _field_parsers(IcebergConfig)
    properties: dict[str, str] = {}
    for key, value in _flatten({k: v for k, v in section.items() if k not in ours}).items():
        # pyiceberg's catalog properties are open-ended ("s3.endpoint", "header.X-Foo",
        # "oauth2-server-uri", any FileIO's), so they pass through as given. They are spelt
        # with dots or dashes and tierflight's keys with neither: a plain word must be one of
        # ours (or a known single-word property), so a typo of one of ours is still refused,
        # as is a dashed spelling of one of ours (on-unavailable).
        plain = "." not in key and "-" not in key
        if (plain and key not in _CATALOG_WORDS) or key.replace("-", "_") in ours:
            raise unknown_key(key, [*ours, *_CATALOG_WORDS], ("iceberg",), origins)
        properties[key] = str(value)
    own = build(IcebergConfig, ("iceberg",), {k: v for k, v in section.items() if k in ours}, origins)
    return dataclasses.replace(own, properties=MappingProxyType(properties))


# -- [auth] --------------------------------------------------------------------------------------


def auth_config(section: Any, origins: Origins | None = None) -> AuthConfig:
    """The ``[auth]`` section's shape; who may log in is checked by protocol.auth.AuthSettings."""
    if not isinstance(section, Mapping):
        raise AuthConfigError("[auth] must be a table")
    check_keys(section, [f.name for f in fields(AuthConfig)], ("auth",), origins, error=AuthConfigError)
    users_raw = section.get("users", {})
    if not isinstance(users_raw, Mapping):
        raise AuthConfigError("[auth.users] must be a table of [auth.users.<name>] tables")
    users: dict[str, UserConfig] = {}
    for name, entry in users_raw.items():
        where = f"auth.users.{name}"
        if not isinstance(entry, Mapping):
            raise AuthConfigError(f"{where} must be a table with password_hash and permissions")
        check_keys(entry, [f.name for f in fields(UserConfig)], ("auth", "users", name), origins, error=AuthConfigError)
        password_hash = entry.get("password_hash")
        if password_hash is not None and not isinstance(password_hash, str):
            raise AuthConfigError(f"{where}.password_hash is not a {HASH_ALGORITHM} hash; create one with `tierflight hash-password`")
        if password_hash == "":
            raise AuthConfigError(
                f"{where}.password_hash is empty; create one with `tierflight hash-password`, "
                "or remove the key to make a token-only user"
            )
        perms = entry.get("permissions", ["read"])
        if not isinstance(perms, list | tuple) or not all(isinstance(p, str) for p in perms):
            raise AuthConfigError(f'{where}.permissions must be a list of strings, e.g. ["read", "ingest"]')
        users[str(name)] = UserConfig(password_hash, tuple(perms))
    tokens_raw = section.get("tokens", {})
    if not isinstance(tokens_raw, Mapping):
        raise AuthConfigError('[auth.tokens] must be a table of "token" = "user name" entries')
    if not all(isinstance(t, str) and isinstance(u, str) for t, u in tokens_raw.items()):
        raise AuthConfigError('[auth.tokens] entries must be "token" = "user name" strings')
    ttl = section.get("token_ttl_seconds", 3600)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise AuthConfigError("auth.token_ttl_seconds must be a positive integer number of seconds")
    limits = {}
    for key in ("max_failed_logins", "login_backoff_cap_seconds"):
        value = section.get(key, getattr(AuthConfig, key))
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise AuthConfigError(f"auth.{key} must be a positive integer (got {value!r})")
        limits[key] = value
    return AuthConfig(MappingProxyType(users), MappingProxyType(dict(tokens_raw)), ttl, **limits)


# -- [tables.<t>] --------------------------------------------------------------------------------

_TABLE_KEYS = (
    "columns",
    "time_column",
    "not_null",
    "derived",
    "rollups",
    "sort_by",
    "parquet_dictionary",
    "parquet_bloom_filter",
    "decimals",
    "kind",
    "key",
    "references",
    "evolve",
)
# Keys of a fact table that a dimension table has no use for (it has no time, tiers or rollups).
_FACT_ONLY_KEYS = (
    "time_column",
    "derived",
    "rollups",
    "sort_by",
    "parquet_dictionary",
    "parquet_bloom_filter",
    "decimals",
    "references",
    "evolve",
)


def _table(name: str, raw: Any, origins: Origins) -> TableConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[tables.{name}] must be a table (section), got {type(raw).__name__}")
    check_keys(raw, _TABLE_KEYS, ("tables", name), origins)
    kind = _enum(TableKind)(raw.get("kind", TableKind.FACT.value), f"tables.{name}.kind")
    if kind is TableKind.DIMENSION:
        return _dimension(name, raw)
    if "key" in raw:
        raise ConfigError(f'tables.{name}.key: only a dimension table (kind = "dimension") declares a key')
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        raise ConfigError(f"[tables.{name}.columns] must map column names to DuckDB types")
    not_null = set(_column_list(name, "not_null", raw.get("not_null", []), cols_raw))
    columns = tuple(ColumnConfig(c, str(t).upper(), c not in not_null) for c, t in cols_raw.items())
    time_column = str(raw.get("time_column", ""))
    if time_column not in cols_raw:
        raise ConfigError(f"tables.{name}.time_column = {time_column!r} must name one of its columns")
    derived = raw.get("derived", {})
    if not isinstance(derived, Mapping):
        raise ConfigError(f"[tables.{name}.derived] must map column names to SQL expressions")
    rollups = raw.get("rollups", [])
    if not isinstance(rollups, list):
        raise ConfigError(f"tables.{name}.rollups must be a list of [[tables.{name}.rollups]] tables")
    dictionary = raw.get("parquet_dictionary")
    return TableConfig(
        name=name,
        columns=columns,
        time_column=time_column,
        derived={str(k): str(v) for k, v in derived.items()},
        rollups=tuple(build(RollupConfig, ("tables", name, f"rollups[{i}]"), r, origins) for i, r in enumerate(rollups)),
        sort_by=_str_list(raw.get("sort_by", [time_column]), f"tables.{name}.sort_by"),
        parquet_dictionary=None if dictionary is None else _column_list(name, "parquet_dictionary", dictionary, cols_raw),
        parquet_bloom_filter=_column_list(name, "parquet_bloom_filter", raw.get("parquet_bloom_filter", []), cols_raw),
        decimals=_decimals(name, raw.get("decimals", {}), cols_raw),
        references=_references(name, raw.get("references", {}), cols_raw),
        evolve=Evolve(_enum(Evolve)(raw.get("evolve", Evolve.NONE.value), f"tables.{name}.evolve")),
    )


def _dimension(name: str, raw: Mapping[str, Any]) -> TableConfig:
    """A ``kind = "dimension"`` table: columns, a key (unique and NOT NULL), optional not_null."""
    for fact_key in _FACT_ONLY_KEYS:
        if fact_key in raw:
            raise ConfigError(
                f'tables.{name}.{fact_key}: {name} is a dimension table (kind = "dimension"), which has no '
                "time column, tiers, rollups, references or schema evolution; remove the key"
            )
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        raise ConfigError(f"[tables.{name}.columns] must map column names to DuckDB types")
    key = raw.get("key")
    if not isinstance(key, str) or key not in cols_raw:
        raise ConfigError(
            f"tables.{name}.key = {key!r} must name one of its columns ({', '.join(cols_raw)}): "
            "a dimension table declares its unique key"
        )
    not_null = {*_column_list(name, "not_null", raw.get("not_null", []), cols_raw), key}
    columns = tuple(ColumnConfig(c, str(t).upper(), c not in not_null) for c, t in cols_raw.items())
    return TableConfig(name=name, columns=columns, time_column="", kind=TableKind.DIMENSION, key=key)


def _references(table: str, value: Any, columns: Mapping[str, Any]) -> dict[str, str]:
    key = f"tables.{table}.references"
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f'{key} must map columns to dimension tables, e.g. {{ advertiser_id = "advertisers" }}')
    unknown = [c for c in value if c not in columns]
    if unknown:
        raise ConfigError(f"{key} names unknown column(s) {', '.join(unknown)}; columns: {', '.join(columns)}")
    return {str(c): str(t) for c, t in value.items()}


def _check_references(facts: Mapping[str, TableConfig], dimensions: Mapping[str, TableConfig]) -> None:
    """Each reference names a dimension table whose key has the referencing column's type."""
    for fact in facts.values():
        types = {c.name: c.type for c in fact.columns}
        for column, target in fact.references.items():
            where = f"tables.{fact.name}.references.{column} = {target!r}"
            dim = dimensions.get(target)
            if dim is None:
                known = ", ".join(dimensions) or "none is configured"
                raise ConfigError(f'{where}: not a dimension table (kind = "dimension"); dimension tables: {known}')
            key_type = next(c.type for c in dim.columns if c.name == dim.key)
            if key_type != types[column]:
                raise ConfigError(
                    f"{where}: {column} is {types[column]} but {target}'s key {dim.key} is {key_type}; "
                    "declare them with the same type"
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


# -- loading -------------------------------------------------------------------------------------

SECTIONS = (
    "server",
    "storage",
    "s3",
    "duckdb",
    "tiers",
    "iceberg",
    "metrics",
    "demo",
    "auth",
    "ingest",
    "router",
    "rollups",
    "tables",
)


# The default configuration, shipped inside the package (conf/tierflight.toml is a copy).
PACKAGED_CONFIG = "default.toml"


def packaged_config_text() -> str:
    return importlib.resources.files("tierflight").joinpath(PACKAGED_CONFIG).read_text()


def load_config(
    path: Path | str | None,
    *,
    data_dir: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    packaged: bool = False,
) -> Config:
    """Read the TOML file, apply environment overrides, then explicit ones (tests, CLI flags).

    No ``path``: the packaged default if ``packaged`` (the CLI without --config), else nothing
    (every section at its defaults, no tables)."""
    data: dict[str, Any] = {}
    cfg_path = Path(path) if path is not None else None
    if cfg_path is not None:
        try:
            data = tomllib.loads(cfg_path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {cfg_path} does not exist; pass --config FILE") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {cfg_path} is not valid TOML: {exc}") from None
    elif packaged:
        data = tomllib.loads(packaged_config_text())
    origins: Origins = {}
    apply_env_overrides(data, os.environ if environ is None else environ, origins)
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    check_keys(data, SECTIONS, (), origins)
    sections = {name: data.get(name, {}) for name in SECTIONS}
    storage = build(StorageConfig, ("storage",), sections["storage"], origins)
    root = data_dir if data_dir is not None else storage.root
    tables = sections["tables"]
    if not isinstance(tables, Mapping):
        raise ConfigError(f"[tables] must be a table (section), got {type(tables).__name__}")
    parsed = {name: _table(name, raw, origins) for name, raw in tables.items()}
    _check_references(
        {n: t for n, t in parsed.items() if t.kind is TableKind.FACT},
        {n: t for n, t in parsed.items() if t.kind is TableKind.DIMENSION},
    )
    return Config(
        path=cfg_path,
        data_dir=Path(root).expanduser().absolute(),
        server=build(ServerConfig, ("server",), sections["server"], origins),
        duckdb=build(DuckDBConfig, ("duckdb",), sections["duckdb"], origins),
        tiers=build(TiersConfig, ("tiers",), sections["tiers"], origins),
        metrics=build(MetricsConfig, ("metrics",), sections["metrics"], origins),
        demo=build(DemoConfig, ("demo",), sections["demo"], origins),
        tables={name: t for name, t in parsed.items() if t.kind is TableKind.FACT},
        dimensions=MappingProxyType({name: t for name, t in parsed.items() if t.kind is TableKind.DIMENSION}),
        auth=auth_config(sections["auth"], origins),
        storage=storage,
        s3=build(S3Config, ("s3",), sections["s3"], origins),
        iceberg=_iceberg(sections["iceberg"], origins),
        ingest=build(IngestConfig, ("ingest",), sections["ingest"], origins),
        router=build(RouterConfig, ("router",), sections["router"], origins),
        rollups=build(RollupsConfig, ("rollups",), sections["rollups"], origins),
    )
