"""HyperLogLog states for whole columns of 64-bit integers, compatible with DataSketches.

DataSketches' Python binding takes one value per ``update`` call; looping over every
(group, value) pair was about 40% of a rollup build and the largest part of an ingest
batch's states. For an integer, DataSketches hashes the value's 8 little-endian bytes
with MurmurHash3 x64-128 (seed 9001); the register is the low ``lg_k`` bits of the first
64-bit half, and its value the leading zeros of the second half plus one, capped at 63.
That is computed here with numpy for whole batches, reduced to registers per group, and
handed back to DataSketches as a serialized HLL_8 image marked out of order (so it carries
no HIP accumulator and estimates with the composite estimator, as any union does). Every
estimate and merge still runs in DataSketches, and the registers equal those the
value-by-value path sets (tested).

Groups with few distinct values would still be in DataSketches' exact "coupon" mode;
those are built value by value from the pairs kept for them, so small counts stay exact.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import datasketches
import numpy as np
import numpy.typing as npt

SEED = 9001
_C1 = np.uint64(0x87C37B91114253D5)
_C2 = np.uint64(0x4CF5AD432745937F)
_F1 = np.uint64(0xFF51AFD7ED558CCD)
_F2 = np.uint64(0xC4CEB9FE1A85EC53)
_U33 = np.uint64(33)
_U31 = np.uint64(31)
# DataSketches keeps a sketch in exact coupon mode until it holds more than 3k/32 coupons. A
# group with more non-empty registers than that has at least as many distinct values, so it
# is in HLL mode; any other group is built value by value from the pairs kept for it.
_PROMOTION_FRACTION = (3, 32)
# Kept pairs are deduplicated once there are this many (a low-cardinality column repeats
# the same few values on every row).
_DEDUPLICATE_AT = 1 << 22
_HLL_MODE_HLL8 = 2 | (2 << 2)  # current mode HLL, target type HLL_8
_OUT_OF_ORDER = 16


def _fmix(k: npt.NDArray[np.uint64], tmp: npt.NDArray[np.uint64]) -> None:
    np.right_shift(k, _U33, out=tmp)
    k ^= tmp
    k *= _F1
    np.right_shift(k, _U33, out=tmp)
    k ^= tmp
    k *= _F2
    np.right_shift(k, _U33, out=tmp)
    k ^= tmp


def murmur3_int64(
    values: npt.NDArray[np.int64], seed: int = SEED
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """MurmurHash3 x64-128 of each value's 8 bytes: the two 64-bit halves."""
    k = values.astype("<i8", copy=True).view(np.uint64)
    tmp = np.empty_like(k)
    # An 8-byte key has no 16-byte block, only the tail mixed into h1; h1 and h2 start at
    # the seed and both take the length (8) before the final mix.
    k *= _C1
    np.right_shift(k, _U33, out=tmp)
    k <<= _U31
    k |= tmp
    k *= _C2
    start = np.uint64(seed ^ 8)
    h1 = k
    h1 ^= np.uint64(seed)
    h1 ^= np.uint64(8)
    h1 += start
    h2 = h1 + start
    _fmix(h1, tmp)
    _fmix(h2, tmp)
    h1 += h2
    h2 += h1
    return h1, h2


def register_values(h2: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Leading zeros + 1 (at most 63) of each hash half. The top 24 bits convert to float32
    exactly, and its exponent field is their floor(log2): far cheaper than a 64-bit
    conversion, which numpy does element by element."""
    top = (h2 >> np.uint64(40)).astype(np.int32)
    exponent = (top.astype(np.float32).view(np.int32) >> 23).astype(np.uint8)
    values = np.uint8(151) - exponent  # 63 - 40 - (exponent - 127) leading zeros, plus one
    for i in np.flatnonzero(top == 0).tolist():  # top 24 bits all zero: one hash in 2**24
        values[i] = min(64 - int(h2[i]).bit_length(), 62) + 1
    return values


_INVERSE_POWERS = np.ldexp(1.0, -np.arange(64))
_HEADER = struct.Struct("<BBBBBBBBdddii")


def _header(registers: npt.NDArray[np.uint8], lg_k: int) -> bytes:
    """The preamble of an HLL-mode HLL_8 sketch holding ``registers``."""
    counts = np.bincount(registers, minlength=64)
    return _HEADER.pack(
        10,  # preamble ints of an HLL-mode sketch
        1,  # serialization version
        7,  # HLL family
        lg_k,
        0,
        _OUT_OF_ORDER,
        0,  # current minimum register value (HLL_8 keeps 0)
        _HLL_MODE_HLL8,
        0.0,  # HIP accumulator: unused once out of order
        float(counts[:32] @ _INVERSE_POWERS[:32]),
        float(counts[32:] @ _INVERSE_POWERS[32:]),
        int(counts[0]),
        0,  # aux entries: HLL_8 has none
    )


def sketch_of(values: Iterable[Any], lg_k: int, target: datasketches.tgt_hll_type) -> bytes:
    """A serialized compact sketch of ``values``, updated one by one by DataSketches."""
    sketch = datasketches.hll_sketch(lg_k, target)
    update = sketch.update
    for v in values:
        update(v)
    return bytes(sketch.serialize_compact())


class SketchBuilder:
    """HyperLogLog states of ``groups`` groups, fed (group index, value) batches."""

    def __init__(self, groups: int, lg_k: int, target: datasketches.tgt_hll_type) -> None:
        self.groups = groups
        self.lg_k = lg_k
        self.k = 1 << lg_k
        self.target = target
        self.registers = np.zeros(groups * self.k, np.uint8)
        self.coupon_limit = self.k * _PROMOTION_FRACTION[0] // _PROMOTION_FRACTION[1]
        self.filled = np.zeros(groups, np.int64)
        self._kept: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        self._kept_rows = 0

    def add(self, group: npt.NDArray[np.int64], values: npt.NDArray[np.int64]) -> None:
        if len(group) == 0:
            return
        h1, h2 = murmur3_int64(values)
        slot = group * self.k + (h1 & np.uint64(self.k - 1)).astype(np.int64)
        np.maximum.at(self.registers, slot, register_values(h2))
        touched = np.flatnonzero(np.bincount(group, minlength=self.groups))
        self.filled[touched] = np.count_nonzero(self.registers.reshape(self.groups, self.k)[touched], axis=1)
        # A group's filled count only grows: a group still below the limit after this batch
        # was below it after every earlier one, so all of its pairs are kept.
        keep = self.filled[group] <= self.coupon_limit
        if keep.any():
            self._kept.append((group[keep], values[keep]))
            self._kept_rows += int(keep.sum())
        if self._kept_rows >= _DEDUPLICATE_AT:
            self._compact_kept()

    def _compact_kept(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The distinct kept pairs of groups still below the limit, sorted by group."""
        if not self._kept:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        group = np.concatenate([g for g, _ in self._kept])
        values = np.concatenate([v for _, v in self._kept])
        small = self.filled[group] <= self.coupon_limit
        group, values = group[small], values[small]
        order = np.lexsort((values, group))
        group, values = group[order], values[order]
        first = np.ones(len(group), bool)
        first[1:] = (group[1:] != group[:-1]) | (values[1:] != values[:-1])
        group, values = group[first], values[first]
        self._kept, self._kept_rows = [(group, values)], len(group)
        return group, values

    def sketches(self) -> list[bytes]:
        """One serialized compact sketch per group (an empty sketch for a group with no values)."""
        regs = self.registers.reshape(self.groups, self.k)
        group, values = self._compact_kept()
        bounds = np.flatnonzero(np.diff(group)) + 1
        by_group = {
            int(g[0]): v.tolist() for g, v in zip(np.split(group, bounds), np.split(values, bounds), strict=True) if len(g)
        }
        out: list[bytes] = []
        for g in range(self.groups):
            if self.filled[g] <= self.coupon_limit:
                out.append(sketch_of(by_group.get(g, ()), self.lg_k, self.target))
                continue
            union = datasketches.hll_union(self.lg_k)
            union.update(datasketches.hll_sketch.deserialize(_header(regs[g], self.lg_k) + regs[g].tobytes()))
            out.append(bytes(union.get_result(self.target).serialize_compact()))
        return out
