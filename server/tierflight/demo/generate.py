"""Synthetic ad-tech event generator for demos and benchmarks.

Each auction produces a ``serve`` and, with decreasing probability, an
``impression``, a ``click`` and a ``purchase``; all events of an auction share
its ``auction_id``, advertiser, publisher, user and country, and their
timestamps strictly increase in that order.

Guarantees (relied upon by the storage tiers and the tests):

* Deterministic: the same ``(rows, start, days, seed)`` always yields the same
  rows.  Every day draws from its own stream ``SeedSequence([seed, ordinal])``
  and the advertiser/publisher catalogue from ``[seed, 0]``, so results do not
  depend on how days are batched, threaded or consumed.
* Exact size: the days add up to exactly ``rows`` events.  A day's quota is
  filled with whole auctions except the last (latest-served) one, whose tail
  events may be cut off - which still satisfies every funnel invariant.
* Auctions never cross midnight: an auction served so close to midnight that
  its later events would spill over is shifted earlier (by at most a few
  hours, only for a handful of auctions), so each day's table holds exactly
  the rows whose ``ts`` falls on that day.
* Memory is proportional to one day's rows (~100 bytes/row at peak), never to
  the whole range.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tierflight.core.config import TableConfig
from tierflight.tiers.parquet import write_file, write_options

__all__ = [
    "EVENTS_SCHEMA",
    "GenerateStats",
    "generate_days",
    "generate_to_hive",
]

EVENTS_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", pa.timestamp("us")),
        pa.field("type", pa.utf8()),
        pa.field("auction_id", pa.utf8()),
        pa.field("advertiser_id", pa.int32()),
        pa.field("publisher_id", pa.int32()),
        pa.field("bid_price", pa.float64()),
        pa.field("user_id", pa.int64()),
        pa.field("total_price", pa.float64()),
        pa.field("country", pa.utf8()),
    ]
)

EVENT_TYPES: Final = ("serve", "impression", "click", "purchase")
COUNTRIES: Final = ("US", "GB", "DE", "JP", "FR", "BR", "IN", "CA", "AU", "ES", "IT", "NL")
_COUNTRY_WEIGHTS: Final = (38, 10, 9, 8, 6, 6, 6, 5, 4, 3, 3, 2)
N_ADVERTISERS: Final = 1_600
N_PUBLISHERS: Final = 1_100
N_USERS: Final = 4_000_000

# Funnel rates: P(impression | serve), P(click | impression), P(purchase | click).
# Click and purchase rates are scaled per advertiser so CTR/CVR vary across them.
_P_IMPRESSION: Final = 0.75
_P_CLICK: Final = 0.025
_P_PURCHASE: Final = 0.075
_MEAN_EVENTS_PER_AUCTION: Final = 1.0 + _P_IMPRESSION * (1.0 + _P_CLICK * (1.0 + _P_PURCHASE))

# Weekly cycle, Monday..Sunday: weekends see noticeably less traffic.
_WEEKDAY_WEIGHTS: Final = (1.00, 1.02, 1.03, 1.02, 0.97, 0.74, 0.70)
# Daily cycle (UTC): trough around 04:00, peak around 16:00.
_HOURLY_WEIGHTS: Final = 0.25 + 0.75 * (1.0 - np.cos(2 * np.pi * (np.arange(24) + 0.5 - 4.0) / 24)) / 2

_US_PER_SECOND: Final = 1_000_000
_US_PER_HOUR: Final = 3_600 * _US_PER_SECOND
_US_PER_DAY: Final = 24 * _US_PER_HOUR
_EPOCH: Final = dt.date(1970, 1, 1)
# Rows per record batch: bounds the per-batch temporaries and keeps int32
# string offsets (36 bytes/row for auction_id) far from overflow.
_BATCH_ROWS: Final = 1 << 20
# Auctions per UUID-building step: the hex expansion needs 6x the raw bytes.
_CHUNK: Final = 1 << 18
# Each in-flight day holds ~100 bytes/row; more threads than this buys little.
_MAX_WORKERS: Final = 4

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]
_T = TypeVar("_T", bound=np.generic)


@dataclass(frozen=True)
class _Alias:
    """Walker/Vose alias table: O(1) sampling from a discrete distribution.

    Replaces ``searchsorted`` over a CDF, whose binary search over random keys
    was one of the generator's hottest spots.
    """

    prob: _F64
    alias: _I64

    @classmethod
    def of(cls, weights: npt.ArrayLike) -> _Alias:
        p = np.asarray(weights, dtype=np.float64)
        scaled = p * (p.size / p.sum())
        prob = np.ones(p.size)
        alias = np.arange(p.size, dtype=np.int64)
        small = [i for i in range(p.size) if scaled[i] < 1.0]
        large = [i for i in range(p.size) if scaled[i] >= 1.0]
        while small and large:
            s, g = small.pop(), large.pop()
            prob[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        return cls(prob, alias)

    def sample(self, u: _F64) -> _I64:
        """Map uniforms in [0, 1) to indices; the fractional part acts as the second uniform."""
        x = u * self.prob.size
        j = np.minimum(x.astype(np.int64), self.prob.size - 1)
        return np.where(x - j < self.prob[j], j, self.alias[j])


@dataclass(frozen=True)
class _Catalog:
    """Per-seed entities shared by all days (so ids mean the same thing every day)."""

    adv: _Alias
    adv_ids: npt.NDArray[np.int32]
    adv_ctr: _F64  # multiplier on the click rate
    adv_cvr: _F64  # multiplier on the purchase rate
    adv_bid: _F64  # median bid
    pub: _Alias
    pub_ids: npt.NDArray[np.int32]


def _catalog(seed: int) -> _Catalog:
    rng = np.random.default_rng([seed, 0])
    # Ids are scattered so the most popular advertiser is not simply id 1.
    adv_ids = rng.choice(np.arange(1_000, 100_000, dtype=np.int32), N_ADVERTISERS, replace=False)
    pub_ids = rng.choice(np.arange(100_000, 1_000_000, dtype=np.int32), N_PUBLISHERS, replace=False)
    return _Catalog(
        adv=_Alias.of(np.arange(1, N_ADVERTISERS + 1) ** -1.0),
        adv_ids=adv_ids,
        adv_ctr=np.clip(rng.lognormal(0.0, 0.5, N_ADVERTISERS), 0.2, 5.0),
        adv_cvr=np.clip(rng.lognormal(0.0, 0.5, N_ADVERTISERS), 0.2, 5.0),
        adv_bid=rng.lognormal(np.log(1.2), 0.3, N_ADVERTISERS),
        pub=_Alias.of(np.arange(1, N_PUBLISHERS + 1) ** -0.95),
        pub_ids=pub_ids,
    )


_COUNTRY: Final = _Alias.of(_COUNTRY_WEIGHTS)


def rows_per_day(rows: int, start: dt.date, days: int) -> list[int]:
    """Split ``rows`` over the days by weekday weight (largest remainder, exact sum)."""
    if rows < 0 or days < 1:
        raise ValueError(f"need rows >= 0 and days >= 1, got rows={rows}, days={days}")
    w = np.array([_WEEKDAY_WEIGHTS[(start + dt.timedelta(d)).weekday()] for d in range(days)])
    quota = rows * w / w.sum()
    counts = np.floor(quota).astype(np.int64)
    # Stable ordering makes tie-breaking (e.g. equal weekday weights) deterministic.
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: rows - int(counts.sum())]] += 1
    return [int(c) for c in counts]


def _lognormal_us(rng: np.random.Generator, n: int, median_s: float, sigma: float, cap_s: float) -> _I64:
    # exp(normal) is notably faster than Generator.lognormal; +1 keeps delays strictly positive.
    secs = np.minimum(np.exp(rng.standard_normal(n) * sigma) * median_s, cap_s)
    return (secs * _US_PER_SECOND).astype(np.int64) + 1


# Two ASCII hex digits per byte value, as one little-endian uint16 each.
_HEX_PAIRS: Final = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype=np.uint16)
_COUNTRY_CODES: Final = np.frombuffer("".join(COUNTRIES).encode(), dtype=np.uint16)
_TYPE_VALUES: Final = pa.array(EVENT_TYPES, pa.utf8())


def _uuid4_text(rng: np.random.Generator, n: int) -> pa.FixedSizeBinaryArray:
    """``n`` random RFC 4122 version-4 UUIDs in canonical 36-character form."""
    buf = pa.allocate_buffer(36 * n)
    out = np.frombuffer(buf, dtype=np.uint8).reshape(n, 36)
    out[:, [8, 13, 18, 23]] = ord("-")
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        raw = rng.integers(0, 2**64, size=(hi - lo, 2), dtype=np.uint64).view(np.uint8)
        raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
        raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
        hexed = _HEX_PAIRS[raw].view(np.uint8)  # (rows, 32)
        for src, dst, width in ((0, 0, 8), (8, 9, 4), (12, 14, 4), (16, 19, 4), (20, 24, 12)):
            out[lo:hi, dst : dst + width] = hexed[:, src : src + width]
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(36), n, [None, buf])


# Offsets for strings that all have the same byte width are a plain ramp;
# sharing one read-only ramp per width saves rebuilding it for every batch.
_RAMPS: Final = {w: np.arange(0, w * (_BATCH_ROWS + 1), w, dtype=np.int32) for w in (2, 36)}
for _ramp in _RAMPS.values():
    _ramp.flags.writeable = False


def _fixed_width_utf8(n: int, width: int, data: pa.Buffer | npt.NDArray[np.generic]) -> pa.Array:
    buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(_RAMPS[width][: n + 1]), buf)


def _empty(n: int, dtype: type[_T]) -> npt.NDArray[_T]:
    """An uninitialised array in Arrow's memory pool rather than numpy's malloc.

    The pool keeps freed memory for reuse, while glibc returns large blocks to
    the kernel, which then page-faults fresh zeroed pages in for every batch of
    every day; in profiles that system time rivalled the generation itself.
    """
    return np.frombuffer(pa.allocate_buffer(n * np.dtype(dtype).itemsize), dtype=dtype)


def _take(values: npt.NDArray[_T], index: npt.NDArray[np.integer[Any]]) -> npt.NDArray[_T]:
    return np.take(values, index, out=_empty(index.size, values.dtype.type))


def _generate_day(day: dt.date, n_rows: int, seed: int, cat: _Catalog) -> pa.Table:
    if n_rows == 0:
        return EVENTS_SCHEMA.empty_table()
    rng = np.random.default_rng([seed, day.toordinal()])

    # 1. Draw auctions (advertiser + funnel depth) until the day's quota is met.
    #    One uniform per auction decides the depth via nested thresholds, which
    #    yields exactly the conditional funnel rates.
    adv_parts: list[_I64] = []
    k_parts: list[_I64] = []
    have = 0
    while have < n_rows:
        m = int((n_rows - have) / _MEAN_EVENTS_PER_AUCTION * 1.02) + 64
        adv = cat.adv.sample(rng.random(m))
        u = rng.random(m)
        t_click = _P_IMPRESSION * np.minimum(_P_CLICK * cat.adv_ctr[adv], 1.0)
        t_buy = t_click * np.minimum(_P_PURCHASE * cat.adv_cvr[adv], 1.0)
        k = 1 + (u < _P_IMPRESSION).astype(np.int64) + (u < t_click) + (u < t_buy)
        adv_parts.append(adv)
        k_parts.append(k)
        have += int(k.sum())
    adv = np.concatenate(adv_parts)
    k = np.concatenate(k_parts)
    cum = np.cumsum(k)
    n_auc = int(np.searchsorted(cum, n_rows, side="left")) + 1
    adv, k = adv[:n_auc], k[:n_auc]
    k[-1] -= int(cum[n_auc - 1]) - n_rows  # trim the last auction's tail

    # 2. Serve times come out already sorted (normalised exponential spacings are
    #    sorted uniforms), mapped through the inverse CDF of the hourly profile.
    #    Later events are only seconds/minutes behind, so the concatenated event
    #    blocks below are nearly sorted and a stable (run-aware) sort is cheap.
    spacing = np.cumsum(rng.standard_exponential(n_auc + 1))
    hour_cdf = np.concatenate([[0.0], np.cumsum(_HOURLY_WEIGHTS) / _HOURLY_WEIGHTS.sum()])
    t0 = np.interp(spacing[:-1] / spacing[-1], hour_cdf, np.arange(25) * float(_US_PER_HOUR)).astype(np.int64)

    imp = np.flatnonzero(k >= 2)
    d1 = _lognormal_us(rng, imp.size, 0.8, 0.8, 60.0)
    clk_in_imp = np.flatnonzero(k[imp] >= 3)
    clk = imp[clk_in_imp]
    d2 = _lognormal_us(rng, clk.size, 15.0, 1.0, 1_800.0)
    buy_in_clk = np.flatnonzero(k[clk] >= 4)
    buy = clk[buy_in_clk]
    d3 = _lognormal_us(rng, buy.size, 240.0, 1.0, 7_200.0)

    # Keep whole auctions inside the day: pull late serves back so the last
    # event still lands before midnight.
    span = np.zeros(n_auc, dtype=np.int64)
    span[imp] = d1
    span[clk] += d2
    span[buy] += d3
    t0 = np.minimum(t0, _US_PER_DAY - 1 - span)
    t1 = t0[imp] + d1
    t2 = t1[clk_in_imp] + d2
    t3 = t2[buy_in_clk] + d3

    # 3. Per-auction attributes (prices too: each auction has at most one
    #    impression and one purchase, so a per-auction value is per-event).
    bid = np.round(cat.adv_bid[adv] * np.exp(rng.standard_normal(n_auc) * 0.35), 4)
    total = np.round(np.exp(rng.standard_normal(n_auc) * 0.8) * 60.0, 2)
    adv_id = cat.adv_ids[adv]
    pub_id = cat.pub_ids[cat.pub.sample(rng.random(n_auc))]
    # Bounded power law over user ranks via inverse CDF (a handful of heavy
    # users, a long tail); ranks map bijectively onto scattered ids.
    a = 0.35  # 1 - zipf exponent
    rank = ((N_USERS**a - 1.0) * rng.random(n_auc) + 1.0) ** (1.0 / a)
    user = (rank.astype(np.int64) * 2_654_435_761) % 2_147_483_647
    # Country is a pure function of the user, so a user never changes country.
    h = (user.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(11)
    country = _COUNTRY_CODES[_COUNTRY.sample(h / float(1 << 53))]
    uuids = _uuid4_text(rng, n_auc)

    # 4. Sort rows by time and gather every column in that order, batch by batch.
    #    Auctions are numbered in serve order, so these gathers are near-sequential.
    n_rows_all = n_auc + imp.size + clk.size + buy.size
    ts_all = np.concatenate([t0, t1, t2, t3], out=_empty(n_rows_all, np.int64))
    ts_all += (day - _EPOCH).days * _US_PER_DAY
    # int32 halves the traffic of the row-level index (a day never nears 2**31 auctions).
    auc_all = np.concatenate(
        [np.arange(n_auc), imp, clk, buy], out=_empty(n_rows_all, np.int32), casting="same_kind"
    )
    typ_all = np.repeat(np.arange(4, dtype=np.int8), [n_auc, imp.size, clk.size, buy.size])
    order = np.argsort(ts_all, kind="stable")
    batches: list[pa.RecordBatch] = []
    for lo in range(0, order.size, _BATCH_ROWS):
        sel = order[lo : lo + _BATCH_ROWS]
        auc = _take(auc_all, sel)
        typ = _take(typ_all, sel)
        n = sel.size
        batches.append(
            pa.RecordBatch.from_arrays(
                [
                    pa.array(_take(ts_all, sel).view("datetime64[us]")),
                    _TYPE_VALUES.take(pa.array(typ)),
                    _fixed_width_utf8(n, 36, uuids.take(pa.array(auc)).buffers()[1]),
                    pa.array(_take(adv_id, auc)),
                    pa.array(_take(pub_id, auc)),
                    pa.array(_take(bid, auc), mask=typ != 1),
                    pa.array(_take(user, auc)),
                    pa.array(_take(total, auc), mask=typ != 3),
                    _fixed_width_utf8(n, 2, _take(country, auc)),
                ],
                schema=EVENTS_SCHEMA,
            )
        )
    return pa.Table.from_batches(batches, schema=EVENTS_SCHEMA)


def _plan(rows: int, start: dt.date, days: int) -> list[tuple[dt.date, int]]:
    return [(start + dt.timedelta(days=i), n) for i, n in enumerate(rows_per_day(rows, start, days))]


def generate_days(rows: int, start: dt.date, days: int, seed: int = 42) -> Iterator[tuple[dt.date, pa.Table]]:
    """Yield ``(day, table)`` for each day in order; tables are sorted by ``ts``.

    The ``rows`` events are spread over the days by weekday weight; each day is
    generated lazily, when the caller asks for it.
    """
    cat = _catalog(seed)
    for day, n in _plan(rows, start, days):
        yield day, _generate_day(day, n, seed, cat)


@dataclass(frozen=True)
class GenerateStats:
    rows: int
    files: int
    bytes: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def day_path(root: pathlib.Path, day: dt.date) -> pathlib.Path:
    """Hive-style location of one day's file."""
    return root / f"day={day.isoformat()}" / "part-0.parquet"


def generate_to_hive(
    root: pathlib.Path,
    rows: int,
    start: dt.date,
    days: int,
    seed: int = 42,
    progress: bool = True,
    write_day: Callable[[dt.date, pa.Table], int] | None = None,
    table_config: TableConfig | None = None,
) -> GenerateStats:
    """Write ``root/day=YYYY-MM-DD/part-0.parquet`` for each day.

    Days are generated and written by a small thread pool, one day per task.
    numpy and the Parquet writer both release the GIL, and writing costs more
    than generating, so whole-day tasks keep every core busy where a
    generate-ahead pipeline would leave the generator idle waiting on the
    writer.  Memory stays bounded by ``workers`` days.

    ``write_day(day, table) -> bytes`` replaces the default Hive writer (e.g. to
    route old days elsewhere); ``table_config``: the configured table whose Parquet options the
    default writer uses (tiers.parquet).  It runs on the worker threads, so it may be
    called concurrently and not in date order.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    began = time.perf_counter()
    cat = _catalog(seed)
    plan = _plan(rows, start, days)

    def run(day: dt.date, n: int) -> tuple[int, int]:
        table = _generate_day(day, n, seed, cat)
        if write_day is not None:
            return table.num_rows, write_day(day, table)
        return table.num_rows, write_file(table, day_path(root, day), write_options(table_config, table.num_rows))

    workers = max(1, min(_MAX_WORKERS, len(os.sched_getaffinity(0)), len(plan)))
    files = written = done = 0
    bar = Progress(
        TextColumn("[bold]generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeRemainingColumn(),
        disable=not progress,
    )
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tierflight-gen")
    try:
        with bar:
            task = bar.add_task("generate", total=rows)
            for fut in as_completed([pool.submit(run, day, n) for day, n in plan]):
                n_rows, n_bytes = fut.result()
                files += 1
                written += n_bytes
                done += n_rows
                bar.update(task, completed=done)
    finally:
        # On failure, don't start the remaining days; running ones still finish.
        pool.shutdown(wait=True, cancel_futures=True)
    return GenerateStats(rows=done, files=files, bytes=written, seconds=time.perf_counter() - began)
