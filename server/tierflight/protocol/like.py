"""Flight SQL filter patterns (SQL LIKE) matched in linear time.

FlightSql.proto defines the catalog, db_schema and table name filter patterns of GetDbSchemas
and GetTables: ``%`` matches any substring (empty included), ``_`` any one character. The
escape tierflight advertises in SqlInfo (SQL_SEARCH_STRING_ESCAPE) is a backslash: ``\\x``
matches ``x`` literally, and a backslash that ends the pattern matches a backslash.

Translating the pattern to one regex (``%`` → ``.*``) backtracks: ``%%%…%Z`` against a name
without ``Z`` tries every way of splitting the name among the ``.*`` and took seconds to minutes,
holding the GIL the whole time. Here the pattern is split at its ``%`` into segments of fixed
length (literal characters and ``_``); the first segment is anchored at the start, the last at
the end, and each middle one is found at its leftmost position after the previous one, which
is the classic greedy wildcard match: no backtracking, each segment searched once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from tierflight.core.errors import InvalidArgument

# Identifiers are short; a longer pattern is an attack or a mistake.
MAX_PATTERN_CHARS = 1024


@dataclass(frozen=True)
class LikePattern:
    """A compiled filter pattern: the ``%``-free segments between its ``%``."""

    segments: tuple[re.Pattern[str], ...]
    lengths: tuple[int, ...]
    # No ``%`` at all: the single segment must cover the whole value.
    exact: bool

    def matches(self, value: str) -> bool:
        segs, lens = self.segments, self.lengths
        if self.exact:
            return len(value) == lens[0] and segs[0].match(value) is not None
        # Anchored first and last segments; they must not overlap.
        end = len(value) - lens[-1]
        if end < lens[0] or segs[0].match(value) is None or segs[-1].match(value, end) is None:
            return False
        pos = lens[0]
        for seg, n in zip(segs[1:-1], lens[1:-1], strict=True):
            found = seg.search(value, pos, end)
            if found is None:
                return False
            pos = found.start() + n
        return True


def _segment(tokens: list[str | None]) -> re.Pattern[str]:
    # A fixed-length regex (no quantifiers, no alternation): matching it cannot backtrack.
    return re.compile("".join("." if t is None else re.escape(t) for t in tokens), re.DOTALL)


@lru_cache(maxsize=256)
def compile_like(pattern: str) -> LikePattern:
    """Compile ``pattern`` (at most :data:`MAX_PATTERN_CHARS` characters: see :func:`check_length`)."""
    segments: list[list[str | None]] = [[]]  # None stands for ``_``
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            segments[-1].append(pattern[i + 1])
            i += 2
            continue
        if ch == "%":
            segments.append([])  # consecutive % give empty segments, which match anywhere
        else:
            segments[-1].append(None if ch == "_" else ch)
        i += 1
    return LikePattern(
        segments=tuple(_segment(s) for s in segments),
        lengths=tuple(len(s) for s in segments),
        exact=len(segments) == 1,
    )


def check_length(field: str, pattern: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(
            f"{field} is {len(pattern)} characters long; filter patterns of at most {MAX_PATTERN_CHARS} are accepted"
        )


def like(pattern: str | None, value: str, field: str = "filter pattern") -> bool:
    """Whether ``value`` matches the filter ``pattern`` (None: no filter, everything matches)."""
    if pattern is None:
        return True
    check_length(field, pattern)
    return compile_like(pattern).matches(value)
