"""Statement texts that differ only in literal values: one function check serves them all.

A dashboard sends the same statement with other values (another country, another week), and
DuckDB's parse of each new text for the function check cost more than the rest of planning.
What the check looks at (function names, table functions, tables, SHOW) cannot change when
only a literal's value does, *provided DuckDB reads that literal as a literal in both texts*.

So a text's **shape** is its bytes with each literal masked (strings ``'...'`` and unsigned
decimal numbers, found by a conservative scan), and a shape is remembered only after DuckDB's
own parse of a text of that shape proved every masked span to be exactly one constant: a
``VALUE_CONSTANT`` at the span's offset and length, or a typed literal (``DATE '...'``: a cast
ending where the span ends, its keyword right before it). Another text of the same shape then
has the same bytes around its spans, and each of its spans is again a plain literal, so
DuckDB's lexer reaches each span in the same state (outside any comment, string or quoted
name) and leaves it the same way: the parse differs only in constant values.

Literal contents that could change a lexer state they did not start in are not masked at
all (quotes other than doubled ones, backslashes, ``$``, comment markers, line breaks): such
a text's shape keeps them as they are, so it only matches itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A string literal whose content cannot end or open a comment, a quoted name, a dollar quote
# or an escape string, even for a lexer that is (wrongly) inside one of those; not right after
# a word character (E'..', X'..', B'..' and names are something else).
_STRING = rb"(?<![\w'\x80-\xff])'(?:[^'\\$\"\n\r*/-]|''|\*(?!/)|/(?!\*)|-(?!-))*'(?!')"
# An unsigned decimal number standing alone (not part of a name, a parameter ``$1`` or 1e5).
_NUMBER = rb"(?<![\w.$\x80-\xff])\d+(?:\.\d+)?(?![\w.\x80-\xff])"
# What the scan steps over so that no span starts inside it; a disagreement with DuckDB here
# only makes a text unverifiable, never unsafe (see the module docstring).
_SKIP = rb"--[^\n]*|/\*.*?\*/|\"(?:[^\"]|\"\")*\""
_TOKENS = re.compile(
    rb"(?P<skip>" + _SKIP + rb")|(?P<s>" + _STRING + rb")|(?P<n>" + _NUMBER + rb")", re.DOTALL
)

_UNKNOWN_LOCATION = 18446744073709551615  # DuckDB's "no query location" (uint64 max)
_ALIAS = rb'"alias":"(?:[^"\\]|\\.)*"'
_CONSTANT_AT = re.compile(
    rb'"type":"VALUE_CONSTANT",' + _ALIAS + rb',"query_location":(\d+),"query_location_length":(\d+)'
)
_TYPED_LITERAL_AT = re.compile(
    rb'"type":"OPERATOR_CAST",' + _ALIAS + rb',"query_location":(\d+),"query_location_length":(\d+),'
    rb'"child":\{"class":"CONSTANT","type":"VALUE_CONSTANT",'
    + _ALIAS
    + rb',"query_location":'
    + str(_UNKNOWN_LOCATION).encode()
    + rb","
)
_TYPE_KEYWORD = re.compile(rb"[A-Za-z_]+\s+")

# Texts longer than this are not shaped (their shapes would hold a lot of text each).
MAX_SHAPED_BYTES = 16 << 10


@dataclass(frozen=True)
class LiteralShape:
    key: tuple[tuple[bytes, ...], bytes]  # the bytes between spans, and each span's kind (s/n)
    spans: tuple[tuple[int, int], ...]  # byte offsets [start, end) of the masked literals
    text: bytes  # the UTF-8 text (DuckDB's query locations are byte offsets)


def literal_shape(sql: str) -> LiteralShape | None:
    """``sql``'s shape, or None if it is too long to keep."""
    text = sql.encode("utf-8", "surrogatepass")
    if len(text) > MAX_SHAPED_BYTES:
        return None
    fixed: list[bytes] = []
    kinds = bytearray()
    spans: list[tuple[int, int]] = []
    at = 0
    for m in _TOKENS.finditer(text):
        kind = m.lastgroup
        if kind == "skip":
            continue
        start, end = m.span()
        fixed.append(text[at:start])
        kinds += b"s" if kind == "s" else b"n"
        spans.append((start, end))
        at = end
    fixed.append(text[at:])
    return LiteralShape((tuple(fixed), bytes(kinds)), tuple(spans), text)


def spans_are_constants(shape: LiteralShape, parse_json: bytes) -> bool:
    """Whether DuckDB's parse (``json_serialize_sql`` output) reads every span of ``shape`` as
    exactly one literal."""
    constants = {(int(m.group(1)), int(m.group(2))) for m in _CONSTANT_AT.finditer(parse_json)}
    typed_ends: dict[int, int] = {}  # where a typed literal ends -> where its keyword starts
    for m in _TYPED_LITERAL_AT.finditer(parse_json):
        start, length = int(m.group(1)), int(m.group(2))
        typed_ends[start + length] = start
    for start, end in shape.spans:
        if (start, end - start) in constants:
            continue
        keyword = typed_ends.get(end)
        if keyword is None or keyword >= start:
            return False
        # Only a type name and blanks between the cast's start and the span: the span is the
        # typed literal's string token itself.
        if _TYPE_KEYWORD.fullmatch(shape.text, keyword, start) is None:
            return False
    return True
