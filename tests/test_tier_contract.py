"""Every tier implementation keeps the Tier contract (tiers/base.py): the methods with their
signatures, and the behaviour the store relies on (an empty tier answers no relation, a
pruned range lists only its partitions, a relation reads exactly the rows it claims)."""

from __future__ import annotations

import datetime as dt
import inspect
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import TEST_SEED, make_config

DAYS = [dt.date(2024, 6, 1) + dt.timedelta(days=i) for i in range(6)]
COLD_DAYS, WARM_DAYS, HOT_DAYS = DAYS[:2], DAYS[2:4], DAYS[4:]


def _day_range(day: dt.date, days: int = 1) -> Any:
    from tierflight.tiers.base import TimeRange

    start = dt.datetime.combine(day, dt.time())
    return TimeRange(start, start + dt.timedelta(days=days))


def _implementations() -> dict[Any, type]:
    from tierflight.tiers.store import TIER_IMPLEMENTATIONS

    return dict(TIER_IMPLEMENTATIONS)


def _contract_methods() -> list[str]:
    from tierflight.tiers.base import Tier

    return sorted(Tier.__abstractmethods__)


@pytest.mark.parametrize("kind", ["hot", "warm", "cold"])
def test_every_tier_kind_is_registered_and_implements_the_contract(kind: str) -> None:
    from tierflight.tiers.base import Tier, TierKind

    impl = _implementations()[TierKind(kind)]
    assert issubclass(impl, Tier) and not inspect.isabstract(impl)
    assert impl.kind is TierKind(kind)
    assert _contract_methods() == ["apply", "build_listing", "listing", "partitions", "relation"]
    for name in _contract_methods():
        declared = list(inspect.signature(getattr(Tier, name)).parameters)
        assert list(inspect.signature(getattr(impl, name)).parameters) == declared, f"{impl.__name__}.{name}"


def test_the_registries_cover_every_kind() -> None:
    from tierflight.tiers.base import TierKind
    from tierflight.tiers.warm import WARM_STORAGE, LocalWarmStorage, S3WarmStorage, WarmStorage

    assert set(_implementations()) == set(TierKind)
    assert {k: WARM_STORAGE[k] for k in ("", "file", "s3", "s3a")} == {
        "": LocalWarmStorage,
        "file": LocalWarmStorage,
        "s3": S3WarmStorage,
        "s3a": S3WarmStorage,
    }
    for storage in set(WARM_STORAGE.values()):
        assert isinstance(storage, type) and issubclass(storage, WarmStorage) and not inspect.isabstract(storage)


def test_an_unknown_warm_uri_scheme_is_a_config_error(tmp_path: Path) -> None:
    from tierflight.core.errors import ConfigError

    from tierflight.tiers.store import TableStore

    cfg = make_config(tmp_path, **{"storage.warm_uri": "gs://bucket/data"})
    with pytest.raises(ConfigError, match="gs:// is not supported"):
        TableStore(cfg, cfg.table("events"))


def test_a_file_uri_warm_tier_is_local(tmp_path: Path) -> None:
    from tierflight.tiers.store import TableStore

    cfg = make_config(tmp_path, **{"storage.warm_uri": f"file://{tmp_path}/elsewhere"})
    store = TableStore(cfg, cfg.table("events"))
    assert not store.warm_on_s3
    assert store.warm_location(DAYS[0], "x.parquet") == f"{tmp_path}/elsewhere/events/warm/day=2024-06-01/x.parquet"


@pytest.fixture
def empty_store(tmp_path: Path) -> Any:
    from tierflight.tiers.store import TableStore

    cfg = make_config(tmp_path)
    return TableStore(cfg, cfg.table("events"))


def test_an_empty_tier_answers_no_relation_and_no_partition(empty_store: Any) -> None:
    from tierflight.tiers.base import ALL_TIME, Scan

    assert [t.kind for t in empty_store.tiers] == ["cold", "warm", "hot"]
    for tier in empty_store.tiers:
        listing = tier.listing()
        assert tier.partitions(listing) == [] and tier.partitions() == []
        for scan in (Scan(), Scan(ALL_TIME, strict=False, day_as="day"), Scan(_day_range(DAYS[0]))):
            assert tier.relation(listing, scan) is None, tier.kind
    assert empty_store.sources() == [] and empty_store.partitions() == []


def _fill(cfg: Any) -> tuple[Any, dict[dt.date, int]]:
    """A store with two days in each tier (cold, warm, hot), written through the store as
    ingest and bulk loads do, and the rows of each day."""
    from tierflight.demo.generate import generate_days
    from tierflight.tiers.store import TableStore

    store = TableStore(cfg, cfg.table("events"))
    days = {d: t.cast(store.schema) for d, t in generate_days(1_200, DAYS[0], len(DAYS), TEST_SEED)}
    cold = [store.write_cold_file(d, "part-0.parquet", days[d])[0] for d in COLD_DAYS]
    store.register_cold(cold, WARM_DAYS[0])
    for d in WARM_DAYS:
        store.write_warm_file(d, "part-0.parquet", days[d])
    for d in HOT_DAYS:
        store.hot.append(days[d])
    store.refresh()
    return store, {d: t.num_rows for d, t in days.items()}


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[dt.date, int]]:
    return _fill(make_config(tmp_path_factory.mktemp("contract")))


@pytest.fixture(scope="module")
def tiered_s3(tmp_path_factory: pytest.TempPathFactory, weed: Any) -> tuple[Any, dict[dt.date, int]]:
    """The same on object storage: warm under an S3 prefix, cold in a REST catalog."""
    overrides = {**weed.overrides(), "storage.warm_uri": "s3://tierflight/contract", "iceberg.namespace": "contract"}
    return _fill(make_config(tmp_path_factory.mktemp("contract-s3"), **overrides))


def _rows(relation: Any) -> int:
    con = duckdb.connect()
    try:
        for name, obj in relation.registrations:
            con.register(name, obj)
        (count,) = con.execute(f"SELECT count(*) FROM ({relation.sql})").fetchall()[0]
        return int(count)
    finally:
        con.close()


@pytest.mark.parametrize("kind", ["cold", "warm", "hot"])
def test_a_tier_prunes_partitions_and_relation_to_the_range(kind: str, tiered: tuple[Any, dict[dt.date, int]]) -> None:
    _check_pruning(kind, *tiered)


@pytest.mark.parametrize("kind", ["cold", "warm"])
def test_a_tier_on_object_storage_prunes_the_same(kind: str, tiered_s3: tuple[Any, dict[dt.date, int]]) -> None:
    store, _ = tiered_s3
    assert store.warm_on_s3 and store.cold_on_s3
    _check_pruning(kind, *tiered_s3)


def _check_pruning(kind: str, store: Any, rows: dict[dt.date, int]) -> None:
    from tierflight.tiers.base import Scan

    tier = next(t for t in store.tiers if t.kind == kind)
    own = {"cold": COLD_DAYS, "warm": WARM_DAYS, "hot": HOT_DAYS}[kind]
    listing = tier.listing()
    parts = tier.partitions(listing)
    assert parts and {p.tier for p in parts} == {kind}
    assert sum(p.rows for p in parts) == sum(rows[d] for d in own)

    # One day of the tier's two: only its partition, and a relation over just its rows (the
    # hot tail is one partition spanning its days, read whole and filtered by the statement).
    first = _day_range(own[0])
    pruned = tier.partitions(listing, first)
    assert pruned and all(first.overlaps(p.start, p.end) for p in pruned)
    if kind != "hot":
        assert [p.start.date() for p in pruned] == [own[0]]
        rel = tier.relation(listing, Scan(first))
        assert rel is not None and _rows(rel) == rows[own[0]]

    # A range the tier holds no row of: no partition, no relation.
    outside = _day_range(DAYS[0] - dt.timedelta(days=30), 7)
    assert tier.partitions(listing, outside) == []
    assert tier.relation(listing, Scan(outside)) is None

    # The whole tier, with the day column asked for: given from day directories or not, the
    # relation reads every row, and says which derived columns it carries.
    rel = tier.relation(listing, Scan(day_as="day"))
    assert rel is not None and rel.carries in ((), ("day",))
    assert _rows(rel) == sum(rows[d] for d in own)


def test_the_store_assembles_one_source_per_tier_in_order(tiered: tuple[Any, dict[dt.date, int]]) -> None:
    store, _ = tiered
    sources = store.sources()
    assert [s.tier for s in sources] == ["cold", "warm", "hot"]
    assert [s.files for s in sources] == [2, 2, 0]
    one_warm_day = store.sources(_day_range(WARM_DAYS[1]), "day")
    assert [(s.tier, [p.partition for p in s.partitions]) for s in one_warm_day] == [("warm", ["day=2024-06-04"])]
    assert one_warm_day[0].carries == ("day",)
