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

Coupon sketches whose union passes the coupon-set limit turn into registers *in order*: from
then on the union's estimate is a HIP sum updated coupon by coupon, in each set's hash-table
order, which numpy cannot reproduce cheaply. Those lists run DataSketches' loop over the
parsed blobs (``_coupon_union``: no slower than the reference). Everything else (mixed lg_k,
HLL_6, a single in-order HLL sketch whose HIP sum goes on the same way, anything that does not
parse as expected) and every short list goes through ``union_estimate``.

All lists of one call are planned together (per-list sums of per-blob flags) and merged in
batches bounded by ``_CHUNK_BYTES``, so a call's numpy work does not grow with its list count.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import datasketches
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view

from tierflight.rollups.sketches import _header

# Byte offsets and values of the serialized format (DataSketches hll/include/HllUtil.hpp).
_LG_K_BYTE = 3
_PRE_LIST, _PRE_SET, _PRE_HLL = 2, 3, 10
_MODE_LIST, _MODE_SET, _MODE_HLL = 0, 1, 2
_TGT_HLL4, _TGT_HLL8 = 0, 2
_EMPTY_FLAG, _COMPACT_FLAG, _OUT_OF_ORDER_FLAG = 4, 8, 16
_HLL_ARRAY_START = 40
_LG_INIT_SET_SIZE = 5
_LE_U32 = np.dtype("<u4")

# Below this many sketches a list goes through the reference loop: its few DataSketches
# calls cost less than the list's share of the merge's numpy calls (measured at 8: ~1.3x
# faster merged, bench/hll_merge.py's shapes at lg_k 10).
MIN_FAST_SKETCHES = 8
# Below this many sketches in one call every list goes through the reference loop: the merge
# has a fixed cost per call (parsing and planning in a few dozen numpy calls) that the
# reference loop's per-sketch cost only exceeds past several hundred sketches.
MIN_FAST_CALL_SKETCHES = 512
# Bytes decoded at once (a chunk of register arrays, a batch of merged registers).
_CHUNK_BYTES = 1 << 23


class Kind(IntEnum):
    """What a blob was parsed as (kept in a numpy int8 array)."""

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


def _rows(data: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    """``width`` bytes from each position, one row each (positions already bounds-checked)."""
    if len(pos) == 0:
        return np.empty((0, width), np.uint8)
    # Row gathers over a sliding-window view copy each row with one memcpy-like loop.
    rows: npt.NDArray[np.uint8] = sliding_window_view(data, width)[pos]
    return rows


def _u32(data: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
    """Little-endian uint32 at each byte position (positions already bounds-checked)."""
    out = np.empty(len(pos), np.uint32)
    # Four zero-copy uint32 views of the buffer, one per byte alignment.
    for shift in range(4):
        at = (pos & 3) == shift
        if at.any():
            words = (len(data) - shift) // 4
            out[at] = data[shift : shift + 4 * words].view(_LE_U32)[(pos[at] - shift) >> 2]
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
        else:  # a compact set is read back coupon by coupon: below the limit it stays a set
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

    def blobs(self, lo: int, hi: int) -> list[bytes | None]:
        out: list[bytes | None] = self.values.slice(lo, hi - lo).to_pylist()
        return out

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
        h = _rows(self.data, s, 8)
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
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """The non-empty uint32s (coupons, or HLL_4 exceptions) of ``count[i]`` slots from ``pos[i]``,
    and the ``i`` each came from."""
    words = _u32(data, _ranges(pos, count))
    owner = np.repeat(np.arange(len(count)), count)
    keep = words != 0
    return words[keep], owner[keep]


def _spans(lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every index of the ranges lo[i]:hi[i], concatenated, and the ``i`` each belongs to."""
    n = hi - lo
    owner = np.repeat(np.arange(len(lo)), n)
    return np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()), dtype=np.int64), owner


def _segment_max(
    values: npt.NDArray[np.uint8], owner: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """Row-wise max of each run of rows with one owner (rows come grouped by owner)."""
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    out = np.empty((len(starts), values.shape[1]), np.uint8)
    # One max per run: numpy's maximum.reduceat along rows is ~10x slower than max(axis=0).
    for j, (s, e) in enumerate(zip(starts.tolist(), [*starts[1:].tolist(), len(values)], strict=True)):
        values[s:e].max(axis=0, out=out[j])
    return owner[starts], out


class Path(IntEnum):
    """How a list's estimate is computed (kept in a numpy int8 array)."""

    REFERENCE = 0
    COUPONS = 1
    REGISTERS = 2


def _plan(blobs: _Blobs, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64]]:
    """Each list's path and lg_k, from per-blob flags summed over the list's range."""

    def per_list(flags: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
        total = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
        out: npt.NDArray[np.int64] = total[hi] - total[lo]
        return out

    valid = blobs.valid
    hll = valid & ((blobs.kind == Kind.HLL4) | (blobs.kind == Kind.HLL8))
    n = per_list(valid)
    lg_sum, lg_squares = per_list(valid * blobs.lg_k), per_list(valid * blobs.lg_k**2)
    n_hll, n_ooo = per_list(hll), per_list(hll & blobs.out_of_order)
    usable = (
        (n >= MIN_FAST_SKETCHES)
        & (per_list(valid & (blobs.kind == Kind.OTHER)) == 0)
        & (lg_squares * n == lg_sum * lg_sum)  # every lg_k equal
        & (per_list(valid & blobs.empty_hll) == 0)
    )
    path = np.full(len(lo), Path.REFERENCE, np.int8)
    path[usable & (n_hll == 0)] = Path.COUPONS
    path[usable & ((n_hll >= 2) | ((n_hll == 1) & (n_ooo == 1)))] = Path.REGISTERS
    lg_k = lg_sum // np.maximum(n, 1)
    # One HLL sketch in order: if the coupons before it already turned the union into
    # registers, it is merged into them (out of order from then on); if not, the union copies
    # it and its HIP sum goes on coupon by coupon (the reference loop).
    lone = np.flatnonzero(usable & (n_hll == 1) & (n_ooo == 0))
    if len(lone):
        seen = np.concatenate([[0], np.cumsum(hll, dtype=np.int64)])
        at = np.searchsorted(seen, seen[lo[lone]] + 1) - 1  # the list's HLL blob
        past, _, _ = _filled_past_limit(blobs, lo[lone], at, lg_k[lone])
        path[lone[past]] = Path.REGISTERS
    return path, lg_k


def _filled_past_limit(
    blobs: _Blobs, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64], lg_k: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    """Whether the coupons of blobs lo[i]:hi[i] hit more registers than a coupon set holds (then
    they are more distinct coupons, too), and those coupons with their ``i``."""
    idx, owner = _spans(lo, hi)
    keep = blobs.valid[idx]
    idx, owner = idx[keep], owner[keep]
    coupons, which = _words(blobs.data, blobs.coupon_pos[idx], blobs.coupon_count[idx])
    owner = owner[which]
    k = np.int64(1) << lg_k
    if len(lo) == 0 or int(k.sum()) > _CHUNK_BYTES:
        return np.zeros(len(lo), bool), coupons, owner
    base = np.cumsum(k) - k
    hit = np.bincount(base[owner] + (coupons & (k[owner] - 1).astype(np.uint32)), minlength=int(k.sum())) > 0
    filled = np.add.reduceat(hit, base, dtype=np.int64)
    return filled > np.array([_coupon_threshold(g) for g in lg_k.tolist()], np.int64), coupons, owner


def _coupon_lists(
    blobs: _Blobs, lists: npt.NDArray[np.int64], lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64],
    lg_k: npt.NDArray[np.int64], out: npt.NDArray[np.float64], in_order: list[int],
) -> None:
    """Lists of coupon sketches only: exact while their distinct coupons stay a coupon set."""
    if len(lists) == 0:
        return
    # Most lists past the limit show it within their first few times the limit's coupons:
    # counting the registers those hit spares reading and sorting all the others.
    limit = np.array([_coupon_threshold(g) for g in lg_k[lists].tolist()], np.int64)
    total = np.concatenate([[0], np.cumsum(blobs.coupon_count * blobs.valid)])
    cut = np.minimum(np.searchsorted(total, total[lo[lists]] + 4 * limit), hi[lists])
    partial = cut < hi[lists]
    past, _, _ = _filled_past_limit(blobs, lo[lists[partial]], cut[partial], lg_k[lists[partial]])
    early = np.zeros(len(lists), bool)
    early[np.flatnonzero(partial)[past]] = True
    in_order.extend(lists[early].tolist())
    lists = lists[~early]
    past, coupons, owner = _filled_past_limit(blobs, lo[lists], hi[lists], lg_k[lists])
    in_order.extend(lists[past].tolist())
    keep = ~past[owner]
    coupons, owner = coupons[keep], owner[keep]
    keys = np.sort((owner.astype(np.uint64) << np.uint64(32)) | coupons.astype(np.uint64))
    if len(keys):  # np.unique hashes, several times slower here
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    bounds = np.searchsorted((keys >> np.uint64(32)).astype(np.int64), np.arange(len(lists) + 1))
    for j, i in enumerate(lists.tolist()):
        if past[j]:
            continue
        distinct = keys[bounds[j] : bounds[j + 1]].astype(np.uint32)
        if len(distinct) > _coupon_threshold(int(lg_k[i])):
            in_order.append(i)  # the union turned to registers in order: its HIP sum is order-bound
        else:
            out[i] = _coupon_estimate(distinct, int(lg_k[i]))


def _register_lists(
    blobs: _Blobs, lists: npt.NDArray[np.int64], lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64],
    lg_k: int, out: npt.NDArray[np.float64],
) -> None:
    """Lists of one lg_k that end out of order: merged registers, then one DataSketches estimate."""
    k = 1 << lg_k
    per_batch = max(1, _CHUNK_BYTES // k)
    for first in range(0, len(lists), per_batch):
        batch = lists[first : first + per_batch]
        registers = np.zeros((len(batch), k), np.uint8)
        idx, owner = _spans(lo[batch], hi[batch])
        keep = blobs.valid[idx]
        idx, owner = idx[keep], owner[keep]
        kind = blobs.kind[idx]
        for array_kind in (Kind.HLL4, Kind.HLL8):
            rows = kind == array_kind
            _fold_arrays(registers, blobs, idx[rows], owner[rows], array_kind)
        coupons, which = _words(blobs.data, blobs.coupon_pos[idx], blobs.coupon_count[idx])
        _fold(registers, coupons, owner[which])
        aux, which = _words(blobs.data, blobs.aux_pos[idx], blobs.aux_count[idx])
        _fold(registers, aux, owner[which])
        for j, i in enumerate(batch.tolist()):
            out[i] = _register_estimate(registers[j], lg_k)


def _fold(registers: npt.NDArray[np.uint8], pairs: npt.NDArray[np.uint32], owner: npt.NDArray[np.int64]) -> None:
    """Raise registers to (slot, value) pairs: a coupon's low 26 bits are its slot, the rest its value."""
    if len(pairs):
        k = registers.shape[1]
        slot = owner * k + (pairs & np.uint32(k - 1)).astype(np.int64)
        np.maximum.at(registers.reshape(-1), slot, (pairs >> np.uint32(26)).astype(np.uint8))


def _fold_arrays(
    registers: npt.NDArray[np.uint8], blobs: _Blobs, sel: npt.NDArray[np.int64], owner: npt.NDArray[np.int64],
    kind: int,
) -> None:
    """Raise registers to those of the HLL_4 or HLL_8 blobs ``sel`` (exceptions not included)."""
    k = registers.shape[1]
    width = k // 2 if kind == Kind.HLL4 else k
    step = max(1, _CHUNK_BYTES // width)
    for first in range(0, len(sel), step):
        part, who = sel[first : first + step], owner[first : first + step]
        block = _rows(blobs.data, blobs.start[part] + _HLL_ARRAY_START, width)
        if kind == Kind.HLL8:
            ids, top = _segment_max(block, who)
            registers[ids] = np.maximum(registers[ids], top)
            continue
        # A nibble holds value - cur_min (15: see the exceptions). Where cur_min is 0 the
        # largest byte has the largest high nibble; elsewhere both nibbles are decoded.
        cur_min = blobs.cur_min[part]
        plain = cur_min == 0
        if plain.all():
            ids, top = _segment_max(block, who)
            _, low = _segment_max(block & np.uint8(15), who)
            high = top >> np.uint8(4)
        else:
            shift = cur_min[:, None]
            ids, high = _segment_max((block >> np.uint8(4)) + shift, who)
            _, low = _segment_max((block & np.uint8(15)) + shift, who)
        registers[ids, 1::2] = np.maximum(registers[ids, 1::2], high)
        registers[ids, 0::2] = np.maximum(registers[ids, 0::2], low)


def _coupon_union(blobs: _Blobs, lo: int, hi: int, lg_k: int) -> float:
    """``union_estimate`` of a list of parsed coupon sketches of one lg_k, fed only the
    non-empty ones (the union skips an empty sketch)."""
    keep = lo + np.flatnonzero(blobs.valid[lo:hi] & (blobs.coupon_count[lo:hi] > 0))
    union = datasketches.hll_union(lg_k)
    update, deserialize = union.update, datasketches.hll_sketch.deserialize
    for blob in blobs.values.take(pa.array(keep)).to_pylist():
        update(deserialize(blob))
    return float(union.get_result().get_estimate())


def merge_lists(lists: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """For each list of serialized sketches: the estimate of their union (NULL if none)."""
    if isinstance(lists, pa.ChunkedArray):
        return pa.chunked_array([merge_lists(c) for c in lists.chunks], pa.float64())
    n = len(lists)
    out = np.zeros(n, np.float64)
    null = lists.is_null().to_numpy(zero_copy_only=False) if lists.null_count else np.zeros(n, bool)
    offsets = np.asarray(lists.offsets, np.int64)
    lo, hi = offsets[:-1], offsets[1:]
    null |= lo == hi  # an empty list: NULL, as for a NULL list
    if int((hi - lo)[~null].sum()) < MIN_FAST_CALL_SKETCHES:
        return pa.array([union_estimate(blobs) for blobs in lists.to_pylist()], pa.float64())
    blobs = _Blobs(lists.values)
    path, lg_k = _plan(blobs, lo, hi)
    path[null] = Path.REFERENCE
    in_order: list[int] = []
    _coupon_lists(blobs, np.flatnonzero(path == Path.COUPONS), lo, hi, lg_k, out, in_order)
    for i in in_order:
        out[i] = _coupon_union(blobs, int(lo[i]), int(hi[i]), int(lg_k[i]))
    registers = np.flatnonzero(path == Path.REGISTERS)
    for one_lg_k in np.unique(lg_k[registers]).tolist():
        _register_lists(blobs, registers[lg_k[registers] == one_lg_k], lo, hi, one_lg_k, out, )
    for i in np.flatnonzero((path == Path.REFERENCE) & ~null).tolist():
        est = union_estimate(blobs.blobs(int(lo[i]), int(hi[i])))
        if est is None:
            null[i] = True
        else:
            out[i] = est
    return pa.array(out, pa.float64(), mask=null)
