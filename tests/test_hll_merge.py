"""The numpy HLL merge against DataSketches' own union fed one sketch at a time: equal floats.

``union_estimate`` is the reference (the implementation rollup queries used before); every
test compares ``merge_estimate`` with it exactly, and checks which path the list took so the
fast paths are really exercised (a fast path that always fell back would pass vacuously).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import datasketches
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tierflight.rollups.hll_merge as hm
from tierflight.rollups.hll import merge_estimate
from tierflight.rollups.hll_merge import MIN_FAST_SKETCHES, union_estimate
from tierflight.rollups.sketches import SketchBuilder

HLL4, HLL8 = datasketches.tgt_hll_type.HLL_4, datasketches.tgt_hll_type.HLL_8
Lists = list[list[bytes | None] | None]


@pytest.fixture(autouse=True, scope="module")
def fast_path_for_small_calls() -> Iterator[None]:
    """These tests check the numpy merge on small inputs: the whole-call threshold under which
    every list takes the reference loop (a cost choice, tested on its own below) is lifted."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hm, "MIN_FAST_CALL_SKETCHES", 0)
        yield


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """How many lists took each path: reference loop, coupon fast path, register fast path, and
    the loop over coupon sketches whose union went to registers in order."""
    seen: Counter[str] = Counter()

    def counting(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            seen[name] += 1
            return f(*args)

        return call

    monkeypatch.setattr(hm, "union_estimate", counting("reference", hm.union_estimate))
    monkeypatch.setattr(hm, "_coupon_estimate", counting("coupons", hm._coupon_estimate))
    monkeypatch.setattr(hm, "_register_estimate", counting("registers", hm._register_estimate))
    monkeypatch.setattr(hm, "_coupon_union", counting("in_order", hm._coupon_union))
    yield seen


def _sketch(values: range | list[int], lg_k: int = 12, tgt: datasketches.tgt_hll_type = HLL4) -> datasketches.hll_sketch:
    s = datasketches.hll_sketch(lg_k, tgt)
    for v in values:
        s.update(v)
    return s


def _blob(s: datasketches.hll_sketch, compact: bool = True) -> bytes:
    return bytes(s.serialize_compact() if compact else s.serialize_updatable())


def _unioned(sketches: list[datasketches.hll_sketch], lg_k: int, tgt: datasketches.tgt_hll_type = HLL4) -> bytes:
    """A union result, as compaction stores it (out of order once two HLL sketches met)."""
    u = datasketches.hll_union(lg_k)
    for s in sketches:
        u.update(s)
    return bytes(u.get_result(tgt).serialize_compact())


def _check(lists: Lists, list_type: pa.DataType | None = None) -> list[float | None]:
    arr = pa.array(lists, list_type or pa.list_(pa.binary()))
    got = merge_estimate(arr).to_pylist()
    want = [None if blobs is None else union_estimate(blobs) for blobs in lists]
    assert got == want  # exactly: the same float DataSketches' union gives
    return got


def test_edge_lists(paths: Counter[str]) -> None:
    one = _blob(_sketch(range(5000)))
    empty = _blob(_sketch([]))
    got = _check([None, [], [None], [None, None], [one], [empty], [empty] * 9, [None, one, None], [empty, None] * 8])
    assert got[:4] == [None, None, 0.0, 0.0]
    assert got[6] == 0.0 and paths["coupons"] == 2  # empty sketches only: a union that saw nothing


def test_tiny_sketches_stay_coupons(paths: Counter[str]) -> None:
    rng = random.Random(3)
    # One or a few users a row (a per-minute rollup of a rare key): LIST sketches, overlapping.
    lists: Lists = [
        [_blob(_sketch([rng.randrange(60) for _ in range(rng.randrange(1, 7))]), rng.random() < 0.8) for _ in range(n)]
        for n in (8, 20, 100, 400)
    ]
    _check(lists)
    assert paths["coupons"] == 4 and paths["reference"] == 0


def test_set_sketches_up_to_and_past_promotion(paths: Counter[str]) -> None:
    # lg_k 12 holds at most 384 coupons; 40 sketches of 100 values from a pool decide it (at 385
    # the union turns to registers on the last coupon, after which it updates its HIP estimate).
    for pool in (300, 384, 385, 450, 2000):
        rng = random.Random(pool)
        row: list[bytes | None] = [_blob(_sketch(rng.sample(range(pool), min(pool, 100)))) for _ in range(40)]
        row[::9] = [None, _blob(_sketch([]))] * 2 + [None]  # NULLs and empty sketches anywhere
        lists: Lists = [row]
        _check(lists)
    assert paths["coupons"] == 2 and paths["in_order"] == 3  # past the limit the union went in order


def test_mid_size_set_mode(paths: Counter[str]) -> None:
    rng = random.Random(5)
    lists: Lists = [
        [_blob(_sketch(rng.sample(range(10**6), rng.randrange(8, 300)), lg_k), compact) for _ in range(10)]
        for lg_k in (8, 10, 12)
        for compact in (True, False)
    ]
    _check(lists)


@pytest.mark.parametrize("tgt", [HLL4, HLL8])
@pytest.mark.parametrize("compact", [True, False])
def test_hll_mode_sketches(paths: Counter[str], tgt: datasketches.tgt_hll_type, compact: bool) -> None:
    rng = random.Random(7)
    # Out-of-order union results (as compaction stores them) and in-order sketches mixed.
    lists: Lists = []
    for lg_k in (4, 7, 10, 12):
        row: list[bytes | None] = []
        for _ in range(12):
            base = rng.randrange(10**9)
            s = _sketch(range(base, base + rng.choice([500, 3000, 40_000])), lg_k, tgt)
            row.append(_blob(s, compact) if rng.random() < 0.5 else _unioned([s, _sketch([base], lg_k)], lg_k, tgt))
        lists.append(row)
    _check(lists)
    assert paths["registers"] == 4


def test_hll4_exceptions_and_cur_min(paths: Counter[str]) -> None:
    # lg_k 12 with 20k values: a few empty registers (cur_min 0) and registers >= 15 kept as
    # exceptions; lg_k 5 with 100k values: cur_min well above 0.
    sketches = [_sketch(range(i * 10**6, i * 10**6 + 20_000)) for i in range(10)]
    assert any(int.from_bytes(_blob(s)[36:40], "little") for s in sketches)
    small_k = [_sketch(range(i * 10**6, i * 10**6 + 100_000), 5) for i in range(10)]
    assert all(_blob(s)[6] > 0 for s in small_k)
    _check([[_blob(s, c) for s in sketches for c in (True, False)], [_blob(s, c) for s in small_k for c in (True, False)]])
    assert paths["registers"] == 2


def test_one_hll_sketch_among_coupons(paths: Counter[str]) -> None:
    coupons = [_blob(_sketch(range(i * 7, i * 7 + 5))) for i in range(20)]
    in_order = _blob(_sketch(range(100_000, 103_000)))
    out_of_order = _unioned([_sketch(range(100_000, 103_000)), _sketch(range(200_000, 201_000))], 12)
    _check([[in_order, *coupons], [*coupons, in_order], [out_of_order, *coupons], [*coupons, out_of_order]])
    # The in-order one's estimate is its HIP sum, updated coupon by coupon: the reference loop.
    assert paths["reference"] == 2 and paths["registers"] == 2
    # Unless the coupons before it already turned the union into registers (2,000 coupons
    # hit more than the 384 registers a coupon set may): then it is merged out of order.
    many = [_blob(_sketch(range(i * 1000, i * 1000 + 20))) for i in range(100)]
    _check([[*many, in_order], [*many, in_order, *coupons], [in_order, *many], [*many[:5], in_order, *many[5:]]])
    assert paths["registers"] == 4 and paths["reference"] == 4


def test_mixed_lg_k_and_unparsed_blobs_fall_back(paths: Counter[str]) -> None:
    mixed = [_blob(_sketch(range(i * 1000, i * 1000 + 800), 10 + i % 3)) for i in range(10)]
    hll6 = [_blob(_sketch(range(i * 1000, i * 1000 + 800), 10, datasketches.tgt_hll_type.HLL_6)) for i in range(10)]
    _check([mixed, hll6])
    assert paths["reference"] == 2


def test_rollup_states_from_the_sketch_builder(paths: Counter[str]) -> None:
    rng = np.random.default_rng(17)
    groups = 400
    for lg_k in (10, 12):
        builder = SketchBuilder(groups, lg_k, HLL4)
        # Zipf-like group sizes: most groups tiny (coupons), some large (registers).
        size = np.minimum(rng.zipf(1.3, groups), 50_000)
        group = np.repeat(np.arange(groups), size)
        builder.add(group, rng.integers(0, 200_000, len(group)))
        blobs: list[bytes | None] = list(builder.sketches())
        blobs[::37] = [None] * len(blobs[::37])
        _check([blobs[i : i + n] for i, n in zip(range(0, groups, 40), [40, 7, 40, 100, 40, 40, 40, 40, 40, 40], strict=True)])
    assert paths["registers"] > 0 and paths["coupons"] + paths["registers"] > paths["reference"]


def test_arrow_layouts() -> None:
    blobs = [_blob(_sketch(range(i * 100, i * 100 + 700))) for i in range(30)]
    lists: Lists = [blobs[:10], None, blobs[10:], [None, *blobs[5:20]]]
    want = _check(lists)
    _check(lists, pa.large_list(pa.large_binary()))
    arr = pa.array([[], *lists, blobs], pa.list_(pa.binary()))
    assert merge_estimate(arr.slice(1, 4)).to_pylist() == want  # offsets not starting at 0
    chunked = pa.chunked_array([arr.slice(1, 2), arr.slice(3, 2)])
    assert merge_estimate(chunked).to_pylist() == want


def test_corrupt_blobs_raise_as_before() -> None:
    good = [_blob(_sketch(range(i * 100, i * 100 + 700))) for i in range(10)]
    for bad in (b"", b"\x0a\x01\x07", good[0][:60], b"\x02\x01\x07\x0c\x03\x08\xff\x08"):
        with pytest.raises(Exception) as theirs:
            union_estimate([*good, bad])
        with pytest.raises(type(theirs.value)):
            merge_estimate(pa.array([[*good, bad]], pa.list_(pa.binary())))


@st.composite
def _lists(draw: st.DrawFn) -> Lists:
    lg_k = draw(st.sampled_from([4, 8, 11]))
    out: Lists = []
    for _ in range(draw(st.integers(1, 4))):
        row: list[bytes | None] = []
        for _ in range(draw(st.integers(0, 3 * MIN_FAST_SKETCHES))):
            kind = draw(st.sampled_from(["null", "tiny", "small", "large", "union"]))
            if kind == "null":
                row.append(None)
                continue
            base = draw(st.integers(0, 2000))
            n = {"tiny": 3, "small": 60, "large": 3000, "union": 3000}[kind]
            tgt = draw(st.sampled_from([HLL4, HLL8]))
            s = _sketch(range(base, base + draw(st.integers(0, n))), lg_k, tgt)
            if kind == "union":
                row.append(_unioned([s, _sketch(range(base, base + 50), lg_k)], lg_k, tgt))
            else:
                row.append(_blob(s, draw(st.booleans())))
        out.append(row)
    return out


@settings(max_examples=60, deadline=None)
@given(_lists())
def test_random_lists_match_the_union(lists: Lists) -> None:
    _check(lists)


def test_small_calls_take_the_reference_loop_and_large_ones_the_merge(
    paths: Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hm, "MIN_FAST_CALL_SKETCHES", 40)
    sketches = [_blob(_sketch(range(i * 100, i * 100 + 3000), 10)) for i in range(10)]
    small = [sketches[:9], sketches[1:10], None, []]  # 18 sketches in the call
    assert _check(small)[2:] == [None, None]
    assert paths["reference"] == 4 and paths["registers"] == 0  # every list, NULL and empty too
    paths.clear()
    _check([sketches] * 4 + [None])  # 40 sketches: merged
    assert paths["registers"] == 4 and paths["reference"] == 0
