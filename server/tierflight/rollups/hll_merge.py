"""The union estimate of a list of serialized DataSketches HLL sketches, merged with numpy.

``union_estimate`` is the reference: a ``datasketches.hll_union`` (lg_k the largest of the
inputs) fed every sketch, and its ``get_result().get_estimate()``. Feeding it one sketch at a
time from Python costs a few microseconds per sketch, which was most of a rollup query's time.
``ListMerger`` reads the same blobs straight from Arrow buffers and returns the very same
float without that loop, in the cases where the union's final state is provably a function
of what numpy can compute (DataSketches 5.2, hll/include/HllUnion-internal.hpp):

* Coupon sketches only (LIST/SET), all of one lg_k, whose distinct coupons stay at or below
  the count at which the union's own coupon set would turn into registers: the union holds
  exactly those coupons, and a coupon set's estimate depends on its count alone. The
  estimate is read from one coupon sketch built from the distinct coupons.
* At least two HLL-mode sketches, or one marked out of order: the union ends out of order
  (merging registers into registers sets the flag; a copied out-of-order sketch keeps it),
  so it estimates with the composite estimator. ``get_result()`` converts the union to
  HLL_4 by replaying its registers, which recomputes every estimator input from the register
  values alone. The estimate is read from one out-of-order HLL_8 sketch of the merged
  registers (the max of every register and every coupon folded in), which takes that path.

Everything else (mixed lg_k, HLL_6, a single in-order HLL sketch whose HIP estimate depends on
update order, coupons that would have been promoted to registers in order, anything that does
not parse as expected) and every short list goes through ``union_estimate``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import datasketches
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from tierflight.rollups.sketches import _header

# Byte offsets and values of the serialized format (DataSketches hll/include/HllUtil.hpp).
_LG_K_BYTE = 3
_PRE_LIST, _PRE_SET, _PRE_HLL = 2, 3, 10
_MODE_LIST, _MODE_SET, _MODE_HLL = 0, 1, 2
_TGT_HLL4, _TGT_HLL8 = 0, 2
_EMPTY_FLAG, _COMPACT_FLAG, _OUT_OF_ORDER_FLAG = 4, 8, 16
_HLL_ARRAY_START = 40
_LG_INIT_SET_SIZE = 5
_LOW26 = (1 << 26) - 1

# Below this many sketches a list costs less through the reference loop than through the
# fixed numpy overhead of the merge (about 30 microseconds a list).
MIN_FAST_SKETCHES = 8
# Rows of HLL registers decoded at once: bounds the copy of one chunk to a few MB.
_CHUNK_BYTES = 1 << 23


class Kind:
    """What a blob was parsed as (small ints kept in a numpy array)."""

    OTHER = 0  # anything the fast path does not handle: the list takes the reference loop
    LIST = 1
    SET = 2
    HLL4 = 3
    HLL8 = 4


def union_estimate(blobs: Sequence[bytes | None]) -> float | None:
    """The reference: DataSketches' union of the sketches, one by one (NULL if none)."""
    if not blobs:
        return None
    present = [b for b in blobs if b is not None]
    if not present:
        return 0.0  # as approx_count_distinct of only NULLs
    # The union keeps as many registers as the sketches have (rollups choose lg_k).
    union = datasketches.hll_union(max(b[_LG_K_BYTE] for b in present))
    for blob in present:
        union.update(datasketches.hll_sketch.deserialize(blob))
    return float(union.get_result().get_estimate())


def _u32(data: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
    """Little-endian uint32 at each byte position (positions already bounds-checked)."""
    out = data[pos].astype(np.uint32)
    for i in (1, 2, 3):
        out |= data[pos + i].astype(np.uint32) << np.uint32(8 * i)
    return out


def _ranges(start: npt.NDArray[np.int64], count: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Byte positions of ``count[i]`` consecutive uint32s from ``start[i]``, concatenated."""
    total = int(count.sum())
    if total == 0:
        return np.empty(0, np.int64)
    before = np.cumsum(count) - count
    return np.repeat(start - 4 * before, count) + 4 * np.arange(total, dtype=np.int64)


def _coupon_threshold(lg_k: int) -> int:
    """The most coupons a union of lg_k holds before it turns them into registers."""
    if lg_k < 8:
        return 7  # a LIST of 8 coupons is promoted straight to HLL below lg_k 8
    return 3 << (lg_k - 5)  # a SET at its largest (k/8 slots) promotes above 3/4 full


def _coupon_estimate(coupons: npt.NDArray[np.uint32], lg_k: int) -> float:
    """DataSketches' estimate of a union holding exactly these distinct coupons."""
    union = datasketches.hll_union(lg_k)
    if len(coupons):
        body = coupons.astype("<u4").tobytes()
        if len(coupons) < 8:
            head = bytes([_PRE_LIST, 1, 7, lg_k, 3, _COMPACT_FLAG, len(coupons), _MODE_LIST | _TGT_HLL8 << 2])
        else:  # lg_arr 0: DataSketches sizes the set for the count
            head = bytes([_PRE_SET, 1, 7, lg_k, 0, _COMPACT_FLAG, 0, _MODE_SET | _TGT_HLL8 << 2])
            head += struct.pack("<I", len(coupons))
        union.update(datasketches.hll_sketch.deserialize(head + body))
    return float(union.get_result().get_estimate())


def _register_estimate(registers: npt.NDArray[np.uint8], lg_k: int) -> float:
    """DataSketches' estimate of an out-of-order union holding these registers."""
    union = datasketches.hll_union(lg_k)
    union.update(datasketches.hll_sketch.deserialize(_header(registers, lg_k) + registers.tobytes()))
    return float(union.get_result().get_estimate())


class _Blobs:
    """The binary child of a list array: every blob's bytes, bounds and parsed header."""

    def __init__(self, values: pa.Array) -> None:
        if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
            values = values.cast(pa.large_binary())
        self.values = values
        n = len(values)
        buffers = values.buffers()
        width = np.int32 if pa.types.is_binary(values.type) else np.int64
        offsets: npt.NDArray[np.int64] = np.frombuffer(buffers[1], width)[values.offset : values.offset + n + 1].astype(
            np.int64
        )
        self.data: npt.NDArray[np.uint8] = (
            np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
        )
        self.start = offsets[:-1]
        self.length = offsets[1:] - offsets[:-1]
        self.valid: npt.NDArray[np.bool_] = (
            ~values.is_null().to_numpy(zero_copy_only=False) if values.null_count else np.ones(n, bool)
        )
        self._parse()

    def blob(self, i: int) -> bytes | None:
        if not self.valid[i]:
            return None
        s = int(self.start[i])
        return self.data[s : s + int(self.length[i])].tobytes()

    def _parse(self) -> None:
        n = len(self.start)
        self.kind = np.zeros(n, np.int8)
        self.lg_k = np.zeros(n, np.int64)
        self.cur_min = np.zeros(n, np.uint8)
        self.out_of_order = np.zeros(n, bool)
        self.empty_hll = np.zeros(n, bool)
        self.coupon_pos = np.zeros(n, np.int64)  # byte position of the first coupon
        self.coupon_count = np.zeros(n, np.int64)  # uint32 slots to read from there
        self.aux_pos = np.zeros(n, np.int64)
        self.aux_count = np.zeros(n, np.int64)
        ok = self.valid & (self.length >= 8)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return
        s, length = self.start[idx], self.length[idx]
        h: npt.NDArray[np.uint8] = self.data[s[:, None] + np.arange(8)]
        pre, lg_arr, flags, mode = h[:, 0], h[:, 4], h[:, 5], h[:, 7]
        lg_k: npt.NDArray[np.int64] = h[:, 3].astype(np.int64)
        good = (h[:, 1] == 1) & (h[:, 2] == 7) & (lg_k >= 4) & (lg_k <= 21) & (mode >> 4 == 0)
        cur_mode, tgt = mode & 3, (mode >> 2) & 3
        self.lg_k[idx] = lg_k
        k = np.int64(1) << lg_k

        # LIST: the first byte-6 coupons (an empty-flagged list must count none).
        is_list = good & (pre == _PRE_LIST) & (cur_mode == _MODE_LIST)
        count: npt.NDArray[np.int64] = h[:, 6].astype(np.int64)
        is_list &= ((flags & _EMPTY_FLAG) == 0) | (count == 0)
        is_list &= length >= 8 + 4 * count
        self._set(idx, is_list, Kind.LIST, s + 8, count)

        # SET: compact sets list their coupons, updatable ones the whole hash table.
        is_set = good & (pre == _PRE_SET) & (cur_mode == _MODE_SET) & (lg_k > 7) & (length >= 12)
        set_count = np.zeros(len(idx), np.int64)
        set_count[is_set] = _u32(self.data, s[is_set] + 8)
        compact = (flags & _COMPACT_FLAG) != 0
        table: npt.NDArray[np.int64] = np.int64(1) << np.minimum(lg_arr, 26).astype(np.int64)
        slots: npt.NDArray[np.int64] = np.where(compact, set_count, table)
        is_set &= (compact | (lg_arr >= _LG_INIT_SET_SIZE)) & (length >= 12 + 4 * slots)
        self._set(idx, is_set, Kind.SET, s + 12, slots)

        # HLL: HLL_4 (with its exceptions after the nibbles) or HLL_8.
        is_hll = good & (pre == _PRE_HLL) & (cur_mode == _MODE_HLL) & (length >= _HLL_ARRAY_START)
        hll4, hll8 = is_hll & (tgt == _TGT_HLL4), is_hll & (tgt == _TGT_HLL8)
        array_bytes: npt.NDArray[np.int64] = np.where(hll4, k // 2, k)
        hll4 &= length >= _HLL_ARRAY_START + array_bytes
        hll8 &= length >= _HLL_ARRAY_START + array_bytes
        at_min = np.zeros(len(idx), np.int64)
        aux = np.zeros(len(idx), np.int64)
        either = hll4 | hll8
        at_min[either] = _u32(self.data, s[either] + 32)
        aux[hll4] = _u32(self.data, s[hll4] + 36)
        aux_slots: npt.NDArray[np.int64] = np.where(compact, aux, np.where(aux > 0, table, 0))
        aux_pos = s + _HLL_ARRAY_START + array_bytes
        hll4 &= length >= _HLL_ARRAY_START + array_bytes + 4 * aux_slots
        hll8 &= aux == 0
        self._set(idx, hll4, Kind.HLL4, aux_pos, np.zeros(len(idx), np.int64))
        self._set(idx, hll8, Kind.HLL8, aux_pos, np.zeros(len(idx), np.int64))
        self.aux_pos[idx[hll4]] = aux_pos[hll4]
        self.aux_count[idx[hll4]] = aux_slots[hll4]
        hll = hll4 | hll8
        self.cur_min[idx[hll]] = h[hll, 6]
        self.out_of_order[idx[hll]] = (flags[hll] & _OUT_OF_ORDER_FLAG) != 0
        # The union skips a sketch it deems empty; the fast path does not model that.
        self.empty_hll[idx[hll]] = (h[hll, 6] == 0) & (at_min[hll] == k[hll])

    def _set(
        self,
        idx: npt.NDArray[np.int64],
        mask: npt.NDArray[np.bool_],
        kind: int,
        pos: npt.NDArray[np.int64],
        count: npt.NDArray[np.int64],
    ) -> None:
        sel = idx[mask]
        self.kind[sel] = kind
        self.coupon_pos[sel] = pos[mask]
        self.coupon_count[sel] = count[mask]


def _words(
    data: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], count: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint32]:
    """The non-empty uint32s (coupons, or HLL_4 exceptions) of ``count[i]`` slots from ``pos[i]``."""
    words = _u32(data, _ranges(pos, count))
    out: npt.NDArray[np.uint32] = words[words != 0]
    return out


def _fold(registers: npt.NDArray[np.uint8], pairs: npt.NDArray[np.uint32]) -> None:
    """Raise registers to (slot, value) pairs: a coupon's low 26 bits are its slot, the rest its value."""
    if len(pairs):
        slot = (pairs & np.uint32(len(registers) - 1)).astype(np.int64)
        np.maximum.at(registers, slot, (pairs >> np.uint32(26)).astype(np.uint8))


def _fold_arrays(registers: npt.NDArray[np.uint8], blobs: _Blobs, sel: npt.NDArray[np.int64], kind: int) -> None:
    """Raise registers to those of the HLL_4 or HLL_8 blobs ``sel`` (exceptions not included)."""
    k = len(registers)
    width = k // 2 if kind == Kind.HLL4 else k
    rows = max(1, _CHUNK_BYTES // width)
    for lo in range(0, len(sel), rows):
        part = sel[lo : lo + rows]
        # Arrow copies the register arrays side by side; each is exactly `width` bytes.
        arrays = pc.binary_slice(blobs.values.take(pa.array(part)), _HLL_ARRAY_START, _HLL_ARRAY_START + width)
        buffers = arrays.buffers()
        first = int(np.frombuffer(buffers[1], np.int32 if pa.types.is_binary(arrays.type) else np.int64)[arrays.offset])
        block = np.frombuffer(buffers[2], np.uint8, len(part) * width, first).reshape(len(part), width)
        if kind == Kind.HLL8:
            np.maximum(registers, block.max(axis=0), out=registers)
            continue
        cur_min = blobs.cur_min[part]
        low, high = block & np.uint8(15), block >> np.uint8(4)
        if cur_min.any():  # a nibble holds value - cur_min; 15 stands for an exception
            low += cur_min[:, None]
            high += cur_min[:, None]
        np.maximum(registers[0::2], low.max(axis=0), out=registers[0::2])
        np.maximum(registers[1::2], high.max(axis=0), out=registers[1::2])


def list_estimate(blobs: _Blobs, lo: int, hi: int) -> float | None:
    """The union estimate of blobs ``lo:hi`` (one list), equal to ``union_estimate``'s."""
    if hi == lo:
        return None
    sel = lo + np.flatnonzero(blobs.valid[lo:hi])
    if len(sel) < MIN_FAST_SKETCHES:
        return union_estimate([blobs.blob(i) for i in range(lo, hi)])
    kind, lg_ks = blobs.kind[sel], blobs.lg_k[sel]
    lg_k = int(lg_ks[0])
    hll = (kind == Kind.HLL4) | (kind == Kind.HLL8)
    n_hll = int(hll.sum())
    if (
        (kind == Kind.OTHER).any()
        or (lg_ks != lg_k).any()
        or blobs.empty_hll[sel].any()
        or (n_hll == 1 and not blobs.out_of_order[sel][hll].all())
    ):
        return union_estimate([blobs.blob(i) for i in range(lo, hi)])
    coupons = _words(blobs.data, blobs.coupon_pos[sel[~hll]], blobs.coupon_count[sel[~hll]])
    if n_hll == 0:
        distinct = np.unique(coupons)
        if len(distinct) > _coupon_threshold(lg_k):  # the union went to registers, in order
            return union_estimate([blobs.blob(i) for i in range(lo, hi)])
        return _coupon_estimate(distinct, lg_k)
    registers = np.zeros(1 << lg_k, np.uint8)
    for array_kind in (Kind.HLL4, Kind.HLL8):
        part = sel[kind == array_kind]
        if len(part):
            _fold_arrays(registers, blobs, part, array_kind)
    hll4 = sel[kind == Kind.HLL4]
    _fold(registers, _words(blobs.data, blobs.aux_pos[hll4], blobs.aux_count[hll4]))
    _fold(registers, coupons)
    return _register_estimate(registers, lg_k)


def merge_lists(lists: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """For each list of serialized sketches: the estimate of their union (NULL if none)."""
    if isinstance(lists, pa.ChunkedArray):
        return pa.chunked_array([merge_lists(c) for c in lists.chunks], pa.float64())
    n = len(lists)
    out = np.zeros(n, np.float64)
    null = lists.is_null().to_numpy(zero_copy_only=False) if lists.null_count else np.zeros(n, bool)
    offsets = np.asarray(lists.offsets, np.int64)
    blobs = _Blobs(lists.values)
    for i in range(n):
        if null[i]:
            continue
        est = list_estimate(blobs, int(offsets[i]), int(offsets[i + 1]))
        if est is None:
            null[i] = True
        else:
            out[i] = est
    return pa.array(out, pa.float64(), mask=null)
