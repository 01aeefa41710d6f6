"""Varying statements: ``-- vary:`` value pools and ``{name}`` placeholders filled per call.

A workload that repeats fixed texts mostly measures the server's result and plan caches; real
dashboards change a filter on every click. A workload file may declare value pools::

    -- vary: advertiser = (SELECT DISTINCT advertiser_id FROM events)
    -- vary: country = 'US', 'GB', 'DE', 'JP'
    -- vary: day = DATE '2024-01-01' .. DATE '2024-12-31'
    -- vary: span = 1..30

and its statements name them in braces: ``{day}``, ``{day+6}``, ``{day+span}``, ``{advertiser}``.
Each call draws one value per pool it names (so ``{day}`` and ``{day+span}`` in one statement
share the same day), from the client's own seeded generator. Offsets (a number, or an integer
pool) apply to integer and date pools (dates: days). A pool is a list of literals, an integer
or date range ``LO..HI`` (both ends included), or a parenthesised query whose first column's
values are fetched from the server once before the run.

Two ways to send a filled statement (:class:`ParameterMode`): ``literal`` puts the values into
the text (a new text per value set: the server's caches do not help), ``bind`` sends one text
with ``?`` placeholders, prepared once per client, and binds the values per call (Flight SQL
DoPut of the parameters before each execution).

Braces are placeholders only outside string literals and quoted identifiers, and only in a
file that declares pools: any other workload's text is sent as written.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Value = int | float | str | dt.date | dt.datetime

VARY_LINE = re.compile(r"--\s*vary:\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<spec>.*?)\s*$")
VARY_PREFIX = re.compile(r"--\s*vary:")
PLACEHOLDER = re.compile(r"\{(?P<pool>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sign>[+-])(?P<offset>\d+|[A-Za-z_][A-Za-z0-9_]*))?\}")
MAX_POOL_VALUES = 100_000  # a query pool's values are held by every worker process
MAX_RANGE = 10**12
_DATE = r"DATE\s*'(\d{4}-\d{2}-\d{2})'"
_INT_RANGE = re.compile(r"^(-?\d+)\s*\.\.\s*(-?\d+)$")
_DATE_RANGE = re.compile(rf"^{_DATE}\s*\.\.\s*{_DATE}$", re.IGNORECASE)
_LITERAL = re.compile(
    rf"\s*(?:(?P<date>{_DATE})|TIMESTAMP\s*'(?P<ts>[^']*)'|'(?P<str>(?:[^']|'')*)'|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))\s*(?:,|$)",
    re.IGNORECASE,
)


class ParameterMode(enum.StrEnum):
    LITERAL = "literal"  # the values written into the text: a new text per call
    BIND = "bind"  # one text with ? placeholders, prepared once, values bound per call


class VaryError(ValueError):
    """A pool or placeholder is malformed; the message says which and why."""


@dataclass(frozen=True)
class Pool:
    """Values to draw from: a list, an integer or date range (``lo``/``hi``), or a query."""

    name: str
    values: tuple[Value, ...] = ()
    lo: int | dt.date | None = None
    hi: int | dt.date | None = None
    query: str | None = None

    @property
    def size(self) -> int:
        if isinstance(self.lo, dt.date) and isinstance(self.hi, dt.date):
            return (self.hi - self.lo).days + 1
        if isinstance(self.lo, int) and isinstance(self.hi, int):
            return self.hi - self.lo + 1
        return len(self.values)

    def draw(self, rng: random.Random) -> Value:
        if self.lo is not None:
            k = rng.randrange(self.size)
            return self.lo + dt.timedelta(days=k) if isinstance(self.lo, dt.date) else self.lo + k
        if not self.values:
            raise VaryError(f"pool {self.name!r} has no values (a query pool is resolved before the run)")
        return self.values[rng.randrange(len(self.values))]

    def resolved(self, values: Sequence[Value]) -> Pool:
        """A query pool with the values its query returned."""
        if not values:
            raise VaryError(f"pool {self.name!r}: its query returned no values")
        return Pool(self.name, tuple(values[:MAX_POOL_VALUES]))


def _strip_comment(spec: str) -> str:
    """``spec`` without a trailing ``-- comment`` (a ``--`` inside a quoted literal stays)."""
    quote: str | None = None
    for i, ch in enumerate(spec):
        if quote is not None:
            quote = None if ch == quote else quote  # '' inside a literal: closed and reopened
        elif ch in ("'", '"'):
            quote = ch
        elif spec.startswith("--", i):
            return spec[:i].rstrip()
    return spec


def parse_pool(name: str, spec: str) -> Pool:
    """The pool of one ``-- vary: NAME = SPEC`` line (a trailing ``-- comment`` is ignored)."""
    spec = _strip_comment(spec)
    if spec.startswith("(") and spec.endswith(")"):
        query = spec[1:-1].strip()
        if not query:
            raise VaryError(f"pool {name!r}: empty query")
        return Pool(name, query=query)
    if m := _INT_RANGE.match(spec):
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo or hi - lo > MAX_RANGE:
            raise VaryError(f"pool {name!r}: range {lo}..{hi} is empty or too large")
        return Pool(name, lo=lo, hi=hi)
    if m := _DATE_RANGE.match(spec):
        try:
            dlo, dhi = dt.date.fromisoformat(m.group(1)), dt.date.fromisoformat(m.group(2))
        except ValueError as exc:
            raise VaryError(f"pool {name!r}: {exc}") from None
        if dhi < dlo:
            raise VaryError(f"pool {name!r}: date range ends before it starts")
        return Pool(name, lo=dlo, hi=dhi)
    values: list[Value] = []
    pos = 0
    while pos < len(spec):
        m = _LITERAL.match(spec, pos)
        if m is None or m.end() == pos:
            raise VaryError(
                f"pool {name!r}: cannot read {spec[pos:][:40]!r}; expected LO..HI, DATE 'a' .. DATE 'b', "
                "a comma-separated list of literals, or (SELECT ...)"
            )
        values.append(_literal_value(m))
        pos = m.end()
    if not values:
        raise VaryError(f"pool {name!r} has no values")
    return Pool(name, tuple(values))


def _literal_value(m: re.Match[str]) -> Value:
    try:
        if m.group("date"):
            return dt.date.fromisoformat(m.group(2))
        if m.group("ts") is not None:
            return dt.datetime.fromisoformat(m.group("ts"))
    except ValueError as exc:
        raise VaryError(str(exc)) from None
    if m.group("str") is not None:
        return m.group("str").replace("''", "'")
    num = m.group("num")
    return float(num) if any(c in num for c in ".eE") else int(num)


def sql_literal(value: Value) -> str:
    """``value`` written as a DuckDB literal."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


@dataclass(frozen=True)
class Slot:
    """One ``{pool}``, ``{pool+3}`` or ``{pool+other}`` in a statement."""

    pool: str
    sign: int = 1
    offset: int = 0
    offset_pool: str | None = None


@dataclass(frozen=True)
class Template:
    """A statement's text split around its slots: ``parts[0] slot[0] parts[1] ... parts[-1]``."""

    parts: tuple[str, ...]
    slots: tuple[Slot, ...]
    pools: tuple[Pool, ...]  # every pool the slots name (offsets included)

    def draw(self, rng: random.Random) -> tuple[Value, ...]:
        """One value per slot, each pool drawn once for the call."""
        drawn = {p.name: p.draw(rng) for p in self.pools}
        out: list[Value] = []
        for slot in self.slots:
            base = drawn[slot.pool]
            if slot.offset_pool is None and not slot.offset:
                out.append(base)
                continue
            step = slot.sign * (int(drawn[slot.offset_pool]) if slot.offset_pool else slot.offset)  # type: ignore[arg-type]
            if isinstance(base, dt.date) and not isinstance(base, dt.datetime):
                out.append(base + dt.timedelta(days=step))
            elif isinstance(base, int):
                out.append(base + step)
            else:
                raise VaryError(f"pool {slot.pool!r}: an offset needs integer or date values, got {base!r}")
        return tuple(out)

    def literal(self, values: Sequence[Value]) -> str:
        return self._join([sql_literal(v) for v in values])

    @property
    def placeholders(self) -> str:
        """The text with a ``?`` per slot (bind mode)."""
        return self._join(["?"] * len(self.slots))

    def _join(self, fills: Sequence[str]) -> str:
        out = [self.parts[0]]
        for fill, part in zip(fills, self.parts[1:], strict=True):
            out += [fill, part]
        return "".join(out)

    def with_pools(self, pools: dict[str, Pool]) -> Template:
        return Template(self.parts, self.slots, tuple(pools.get(p.name, p) for p in self.pools))


def _outside_quotes(sql: str) -> list[tuple[int, int]]:
    """Spans of ``sql`` outside string literals, quoted identifiers and comments."""
    spans: list[tuple[int, int]] = []
    i = start = 0
    while i < len(sql):
        ch = sql[i]
        end = -1
        if ch in ("'", '"'):
            j = i + 1
            while True:
                k = sql.find(ch, j)
                if k < 0 or not sql.startswith(ch * 2, k):
                    end = len(sql) if k < 0 else k + 1
                    break
                j = k + 2
        elif sql.startswith("--", i):
            k = sql.find("\n", i)
            end = len(sql) if k < 0 else k
        elif sql.startswith("/*", i):
            k = sql.find("*/", i + 2)
            end = len(sql) if k < 0 else k + 2
        if end >= 0:
            spans.append((start, i))
            i = start = end
        else:
            i += 1
    spans.append((start, len(sql)))
    return spans


def template(sql: str, pools: dict[str, Pool], fail: Callable[[str], Exception]) -> Template | None:
    """The template of ``sql`` over ``pools``, or None when it names none."""
    parts: list[str] = []
    slots: list[Slot] = []
    used: dict[str, Pool] = {}
    last = 0
    for lo, hi in _outside_quotes(sql):
        for m in PLACEHOLDER.finditer(sql, lo, hi):
            name, offset = m.group("pool"), m.group("offset")
            if name not in pools:
                raise fail(f"placeholder {m.group(0)} names no pool (declare it: '-- vary: {name} = ...')")
            slot = Slot(name, -1 if m.group("sign") == "-" else 1)
            if offset is not None:
                if offset.isdigit():
                    slot = Slot(name, slot.sign, int(offset))
                elif offset not in pools:
                    raise fail(f"placeholder {m.group(0)}: offset {offset!r} names no pool")
                else:
                    slot = Slot(name, slot.sign, 0, offset)
                    used[offset] = pools[offset]
            used[name] = pools[name]
            parts.append(sql[last : m.start()])
            slots.append(slot)
            last = m.end()
    if not slots:
        return None
    parts.append(sql[last:])
    return Template(tuple(parts), tuple(slots), tuple(used.values()))


def value_key(index: int, values: Sequence[Value]) -> int:
    """A process-independent 64-bit key of one value set of statement ``index`` (Python's
    ``hash`` of a str differs per process), to count repeats across worker processes."""
    digest = hashlib.blake2b(f"{index}\x00{values!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def client_rng(seed: int, client: int) -> random.Random:
    """Client ``client``'s generator: the same seed and client number draw the same values."""
    return random.Random(f"tierflight-loadtest:{seed}:{client}")
