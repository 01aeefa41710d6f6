"""Vectorised HyperLogLog states against DataSketches' own value-by-value updates."""

from __future__ import annotations

import datasketches
import numpy as np
import pytest

from tierflight.rollups.definition import HLL_LG_K, HLL_TYPE
from tierflight.rollups.sketches import SketchBuilder, murmur3_int64, register_values

HLL8 = datasketches.tgt_hll_type.HLL_8


def _registers(blob: bytes) -> bytes | None:
    """The HLL_8 register array of a sketch, or None while it is still in coupon mode."""
    union = datasketches.hll_union(HLL_LG_K)
    union.update(datasketches.hll_sketch.deserialize(blob))
    image = bytes(union.get_result(HLL8).serialize_updatable())
    return image[40:] if image[7] & 3 == 2 else None


def _by_value(values: list[int]) -> datasketches.hll_sketch:
    sketch = datasketches.hll_sketch(HLL_LG_K, HLL_TYPE)
    for v in values:
        sketch.update(v)
    return sketch


def test_hash_and_register_values_match_datasketches() -> None:
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 20_000), np.array([0, 1, -1, 2**63 - 1, -(2**63)])])
    h1, h2 = murmur3_int64(values)
    slots = (h1 & np.uint64((1 << HLL_LG_K) - 1)).astype(np.int64)
    regs = np.zeros(1 << HLL_LG_K, np.uint8)
    np.maximum.at(regs, slots, register_values(h2))
    assert _registers(bytes(_by_value(values.tolist()).serialize_compact())) == regs.tobytes()


def test_register_value_is_leading_zeros_plus_one_for_every_width() -> None:
    # One value per possible bit length, including hashes whose top 24 bits are zero.
    h = np.array([0, *(1 << b for b in range(64)), *((1 << b) - 1 for b in range(2, 64))], dtype=np.uint64)
    expected = [min(64 - int(x).bit_length(), 62) + 1 for x in h.tolist()]
    assert register_values(h).tolist() == expected


def test_builder_equals_value_by_value_per_group() -> None:
    rng = np.random.default_rng(3)
    sizes = [0, 1, 7, 300, 600, 2_500, 20_000, 50_000]
    group = np.concatenate([np.full(n, i, np.int64) for i, n in enumerate(sizes)])
    values = rng.integers(0, 10**9, len(group))
    values[: len(values) // 3] %= 97  # duplicates, spread over the groups
    order = rng.permutation(len(group))
    group, values = group[order], values[order]
    builder = SketchBuilder(len(sizes), HLL_LG_K, HLL_TYPE)
    for start in range(0, len(group), 9_999):  # several batches, as a build streams them
        builder.add(group[start : start + 9_999], values[start : start + 9_999])
    blobs = builder.sketches()
    assert len(blobs) == len(sizes)
    for i, blob in enumerate(blobs):
        expected = _by_value(values[group == i].tolist())
        got = datasketches.hll_sketch.deserialize(blob)
        assert got.lg_config_k == HLL_LG_K
        assert got.is_empty() == expected.is_empty()
        mine, theirs = _registers(blob), _registers(bytes(expected.serialize_compact()))
        assert mine == theirs, f"group {i} ({sizes[i]} rows): registers differ"
        if theirs is None:  # coupon mode: the same exact small count
            assert got.get_estimate() == pytest.approx(expected.get_estimate(), rel=1e-9)
        else:  # HLL mode: the composite estimate a union of the value-by-value sketch gives
            merged = datasketches.hll_union(HLL_LG_K)
            merged.update(got)
            merged.update(expected)  # the same registers: merging adds nothing
            assert merged.get_estimate() == pytest.approx(got.get_estimate(), rel=1e-12)
            n = len(np.unique(values[group == i]))
            assert abs(got.get_estimate() - n) <= abs(datasketches.hll_sketch.get_rel_err(True, True, HLL_LG_K, 3)) * n


def test_builder_states_merge_with_value_by_value_states() -> None:
    # Ingest merges built states with batches' states: shared values must not count twice.
    rng = np.random.default_rng(5)
    values = rng.integers(0, 10**12, 40_000)
    builder = SketchBuilder(1, HLL_LG_K, HLL_TYPE)
    builder.add(np.zeros(30_000, np.int64), values[:30_000])
    union = datasketches.hll_union(HLL_LG_K)
    union.update(datasketches.hll_sketch.deserialize(builder.sketches()[0]))
    union.update(_by_value(values[10_000:].tolist()))
    err = abs(datasketches.hll_sketch.get_rel_err(True, True, HLL_LG_K, 3))
    assert abs(union.get_estimate() - 40_000) <= err * 40_000


def test_low_cardinality_groups_stay_exact_across_deduplication(monkeypatch: pytest.MonkeyPatch) -> None:
    from tierflight.rollups import sketches

    monkeypatch.setattr(sketches, "_DEDUPLICATE_AT", 5_000)
    rng = np.random.default_rng(8)
    group = rng.integers(0, 3, 60_000)
    values = np.where(group == 2, rng.integers(0, 10**9, 60_000), rng.integers(0, 40, 60_000))
    builder = SketchBuilder(3, HLL_LG_K, HLL_TYPE)
    for start in range(0, len(group), 4_000):
        builder.add(group[start : start + 4_000], values[start : start + 4_000])
    assert builder._kept_rows < 60_000  # deduplicated on the way
    for i, blob in enumerate(builder.sketches()):
        expected = _by_value(values[group == i].tolist())
        assert _registers(blob) == _registers(bytes(expected.serialize_compact()))
        if i < 2:
            assert datasketches.hll_sketch.deserialize(blob).get_estimate() == pytest.approx(
                expected.get_estimate(), rel=1e-9
            )
