"""Config: every section typed at load time, and a typo in any key refused by name.

No server: each test loads a small TOML file (or the shipped one) and looks at the result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest

from tierflight.core.config import (
    CatalogType,
    Config,
    IcebergAuth,
    OnUnavailable,
    RollupConfig,
    load_config,
)
from tierflight.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "conf" / "tierflight.toml"

TABLE = """
[tables.t]
time_column = "ts"
[tables.t.columns]
ts = "TIMESTAMP"
n = "INTEGER"
[[tables.t.rollups]]
name = "r"
dimensions = ["day"]
measures = ["count"]
"""

# (section path as written in the message, the mistyped key, a TOML value, the key meant).
TYPOS = [
    ("server", "batch_rowz", "1000", "batch_rows"),
    ("storage", "warm_ur", '"s3://b/data"', "warm_uri"),
    ("s3", "endpont", '"http://127.0.0.1:1"', "endpoint"),
    ("duckdb", "thread", "4", "threads"),
    ("tiers", "warm_windw", '"30d"', "warm_window"),
    ("iceberg", "namespce", '"x"', "namespace"),
    ("metrics", "prot", "0", "port"),
    ("demo", "rowz", "10", "rows"),
    ("auth", "token_ttl", "60", "token_ttl_seconds"),
    ("auth.users.alice", "passwd", '"x"', "password_hash"),
    ("ingest", "flush_rowz", "10", "flush_rows"),
    ("router", "enabld", "false", "enabled"),
    ("rollups", "memory_budgt", '"1GB"', "memory_budget"),
    ("tables.t", "time_colum", '"ts"', "time_column"),
]


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / "tierflight.toml"
    path.write_text(text)
    return load_config(path, data_dir=tmp_path, environ=environ or {})


def _message(section: str, key: str, meant: str) -> str:
    return re.escape(f"unknown key '{key}' in [{section}]") + r".*" + re.escape(f"did you mean '{meant}'?")


@pytest.mark.parametrize(("section", "key", "value", "meant"), TYPOS)
def test_a_typo_in_the_file_is_refused_by_name(tmp_path: Path, section: str, key: str, value: str, meant: str) -> None:
    if section == "tables.t":
        text = TABLE.replace("[tables.t.columns]", f"{key} = {value}\n[tables.t.columns]")
    else:
        text = f"{TABLE}\n[{section}]\n{key} = {value}\n"
    with pytest.raises(ConfigError, match=_message(section, key, meant)):
        _load(tmp_path, text)


@pytest.mark.parametrize(("section", "key", "value", "meant"), TYPOS)
def test_a_typo_in_an_environment_override_names_the_variable(
    tmp_path: Path, section: str, key: str, value: str, meant: str
) -> None:
    variable = "TIERFLIGHT_" + "__".join(part.upper() for part in [*section.split("."), key])
    with pytest.raises(ConfigError, match=_message(section, key, meant)) as err:
        _load(tmp_path, TABLE, {variable: value.strip('"')})
    assert f"(set by {variable})" in str(err.value)


def test_a_typo_in_a_rollup_entry_is_refused_by_name(tmp_path: Path) -> None:
    text = TABLE.replace('dimensions = ["day"]', 'dimension = ["day"]')
    with pytest.raises(ConfigError, match=_message("tables.t.rollups[0]", "dimension", "dimensions")):
        _load(tmp_path, text)
    for key, meant in [("measure", "measures"), ("retension", "retention"), ("ordr", "order"), ("filtr", "filter")]:
        with pytest.raises(ConfigError, match=_message("tables.t.rollups[0]", key, meant)):
            _load(tmp_path, f'{TABLE}{key} = ["day"]\n')


def test_an_unknown_section_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown section [ingst]; did you mean [ingest]?")):
        _load(tmp_path, "[ingst]\nflush_rows = 10\n")
    with pytest.raises(ConfigError, match=re.escape("unknown section [routr] (set by TIERFLIGHT_ROUTR__ENABLED)")):
        _load(tmp_path, "", {"TIERFLIGHT_ROUTR__ENABLED": "false"})


def test_a_key_with_no_near_name_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown key 'zzz' in [router]; valid keys: enabled")):
        _load(tmp_path, "[router]\nzzz = 1\n")


def test_defaults_are_the_previous_behaviour(tmp_path: Path) -> None:
    from tierflight.protocol.auth import AuthSettings
    from tierflight.tiers.cold import IcebergSettings
    from tierflight.tiers.s3 import S3Settings

    cfg = load_config(None, environ={})
    assert cfg.data_dir == Path("data").absolute()
    assert (cfg.storage.warm_uri, cfg.storage.poll_interval) == (None, dt.timedelta(seconds=2))
    assert cfg.router.enabled is True
    rollups = cfg.rollups
    assert (rollups.memory_budget, rollups.allow_stale, rollups.enabled, rollups.snapshot_uri) == (2 << 30, False, True, None)
    assert rollups.reload_interval == dt.timedelta(seconds=5)
    ingest = cfg.ingest
    assert (ingest.flush_rows, ingest.flush_bytes, ingest.nice, ingest.yield_rows_per_s) == (1_000_000, 256 << 20, 10, 280_000)
    assert (ingest.flush_age, ingest.max_past, ingest.max_future, ingest.snapshot_every) == (
        dt.timedelta(minutes=5),
        dt.timedelta(days=3650),
        dt.timedelta(days=1),
        dt.timedelta(seconds=30),
    )
    s3 = S3Settings.from_config(cfg.s3, environ={})
    assert (s3.endpoint, s3.region, s3.access_key, s3.secret_key, s3.timeout) == (None, "us-east-1", None, None, 10.0)
    iceberg = IcebergSettings.from_config(cfg.iceberg, tmp_path, s3)
    assert (iceberg.catalog_type, iceberg.namespace, iceberg.timeout, iceberg.on_unavailable) == ("sql", "tierflight", 10.0, "error")
    assert iceberg.properties == {
        "uri": f"sqlite:///{tmp_path / 'catalog' / 'iceberg.db'}",
        "warehouse": (tmp_path / "iceberg").as_uri(),
        # The warehouse moves with the data dir (tiers.relocate; tests/test_anywhere.py).
        "py-io-impl": "tierflight.tiers.relocate.RebasingFileIO",
        "tierflight.stored-root": str(tmp_path),
        "tierflight.current-root": str(tmp_path),
        "s3.connect-timeout": "10",
        "s3.request-timeout": "10",
    }
    auth = AuthSettings.from_config(cfg.auth, environ={})
    assert (auth.enabled, auth.token_ttl_seconds) == (False, 3600)
    assert cfg.server.batch_rows == 65_536 and cfg.metrics.port == 9464 and cfg.duckdb.threads == 2


def test_the_shipped_config_parses_into_typed_sections() -> None:
    cfg = load_config(SHIPPED, environ={})
    assert not hasattr(cfg, "raw")  # nothing reads the TOML but config.py
    assert cfg.iceberg.type is CatalogType.SQL and cfg.iceberg.on_unavailable is OnUnavailable.ERROR
    assert cfg.iceberg.timeout == dt.timedelta(seconds=10)
    assert cfg.rollups.memory_budget == 1 << 30 and cfg.ingest.flush_bytes == 256 << 20
    events = cfg.table("events")
    assert all(isinstance(r, RollupConfig) for r in events.rollups)
    minute = next(r for r in events.rollups if r.name == "minute_impressions")
    assert minute == RollupConfig(
        "minute_impressions", ("minute",), ("count", "sum(bid_price)"), "type = 'impression'", dt.timedelta(days=90)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.router.enabled = False  # type: ignore[misc]


def test_no_module_reads_the_raw_toml() -> None:
    readers = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("server", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"config\.raw\b|\.raw\.get\(|config\.get\(\"auth\"", line)
    ]
    assert readers == []


def test_environment_overrides_are_typed_values(tmp_path: Path) -> None:
    env = {
        "TIERFLIGHT_INGEST__FLUSH_ROWS": "1500",
        "TIERFLIGHT_ROUTER__ENABLED": "false",
        "TIERFLIGHT_ROLLUPS__MEMORY_BUDGET": "64MB",
        "TIERFLIGHT_ICEBERG__ON_UNAVAILABLE": "skip",
        "TIERFLIGHT_STORAGE__POLL_INTERVAL": "0s",
    }
    cfg = _load(tmp_path, "", env)
    assert cfg.ingest.flush_rows == 1500 and cfg.router.enabled is False and cfg.rollups.memory_budget == 64 << 20
    assert cfg.iceberg.on_unavailable is OnUnavailable.SKIP and cfg.storage.poll_interval == dt.timedelta(0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[router]\nenabled = \"yes\"\n", "router.enabled = 'yes' must be true or false"),
        ("[iceberg]\ntype = \"hive\"\n", "iceberg.type = 'hive'; use 'sql' or 'rest'"),
        ("[iceberg]\non_unavailable = \"ignore\"\n", "iceberg.on_unavailable = 'ignore'; use 'error' or 'skip'"),
        ("[iceberg]\nauth = \"basic\"\n", "iceberg.auth = 'basic'; use 'keys' or 'none'"),
        ("[rollups]\nreload_interval = \"soon\"\n", "rollups.reload_interval = 'soon' is not a duration"),
        ("[storage]\nwarm_uri = 3\n", "storage.warm_uri = 3 must be a string"),
        ("[s3]\ntimeout = \"later\"\n", "s3.timeout = 'later' is not a duration"),
        ("[ingest]\nflush_rows = \"many\"\n", "ingest.flush_rows = 'many' must be a whole number"),
        ("[router]\n", None),
        ("router = 1\n", "[router] must be a table"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, text: str, message: str | None) -> None:
    if message is None:
        _load(tmp_path, text)
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, text)


def test_iceberg_catalog_properties_pass_through_and_our_keys_are_checked(tmp_path: Path) -> None:
    text = (
        '[iceberg]\ntype = "rest"\nuri = "http://127.0.0.1:8181"\nwarehouse = "s3://w"\nauth = "none"\n'
        '"s3.endpoint" = "http://127.0.0.1:8333"\ncredential = "a:b"\n"oauth2-server-uri" = "http://x/token"\n'
        # An unquoted dotted key is a nested table in TOML: it is the same property.
        's3.region = "eu-west-1"\n'
    )
    cfg = _load(tmp_path, text)
    assert (cfg.iceberg.type, cfg.iceberg.auth, cfg.iceberg.uri, cfg.iceberg.warehouse) == (
        CatalogType.REST,
        IcebergAuth.NONE,
        "http://127.0.0.1:8181",
        "s3://w",
    )
    assert dict(cfg.iceberg.properties) == {
        "s3.endpoint": "http://127.0.0.1:8333",
        "credential": "a:b",
        "oauth2-server-uri": "http://x/token",
        "s3.region": "eu-west-1",
    }
    with pytest.raises(ConfigError, match=_message("iceberg", "on-unavailable", "on_unavailable")):
        _load(tmp_path, '[iceberg]\n"on-unavailable" = "skip"\n')
    with pytest.raises(ConfigError, match=_message("iceberg", "tmeout", "timeout")):
        _load(tmp_path, "", {"TIERFLIGHT_ICEBERG__TMEOUT": "5s"})


def test_table_columns_named_by_not_null_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tables\.t\.not_null names unknown column\(s\) nn"):
        _load(tmp_path, TABLE.replace("[tables.t.columns]", 'not_null = ["nn"]\n[tables.t.columns]'))


def test_console_log_tracebacks_show_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:
    """An internal error's traceback on a terminal: frames only, never their locals (rich's
    default renders every local, credentials included, and costs seconds per error)."""
    from tierflight.core.log import configure_logging, flush_logs, get_logger, reset_logging

    def failing(password: str) -> None:
        raise RuntimeError("boom")

    configure_logging(json_format=False)
    try:
        try:
            failing("-".join(["s3cret", "local", "value"]))  # not in the source a traceback quotes
        except RuntimeError as exc:
            get_logger("tierflight.test").error("internal_error", exc_info=exc)
        flush_logs()
    finally:
        reset_logging()
    err = capfd.readouterr().err
    assert "RuntimeError: boom" in err
    assert "s3cret-local-value" not in err
