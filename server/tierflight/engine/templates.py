"""Parsed statements reused for texts that differ only in literal values.

Parsing is most of the sandbox check of a new statement text, and dashboards send the same
statement with other values. A text whose literal shape (engine.literal_shapes) was parsed
before gets a copy of that parse with its own literal values put in: the literal nodes are
found by their positions in the text (sqlglot keeps each literal's start and end), so values
land where the text has them even when the tree orders nodes differently from the text (a
CTE is parsed first but attached last).

A parse is kept as a template only when every literal node of the tree is exactly one masked
span of the text (same position, same value) and every span is one literal node: then the
parser read each literal as an opaque value, and a text of the same shape parses to the same
tree with other values. A parse in which the parser looked into a literal (``INTERVAL '1
day'`` becomes a number and a unit) or made one up fails that test and is never reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from tierflight.core.lru import LRU
from tierflight.engine.literal_shapes import LiteralShape
from tierflight.router.outputs import SPELLING, named_aggregate
from tierflight.router.trees import faithful_copy

# Literal values that render back as they were written, with no character that could reach
# out of a string (quotes, backslashes, dollar quotes, comment markers, line breaks): a text
# whose values are all such has the same generated-text shape as its template's.
_UNSAFE = ("'", "\\", "$", '"', "\n", "\r", "--", "/*", "*/")


@dataclass(frozen=True)
class Template:
    tree: exp.Expr  # never handed out: each statement gets a copy
    # For each literal node in find_all order: the index of the span that holds its value.
    slots: tuple[int, ...]
    parameter_count: int


def _value(shape: LiteralShape, span: int) -> tuple[str, bool]:
    """The literal value of span ``span`` and whether it is a string (else a number)."""
    start, end = shape.spans[span]
    text = shape.text[start:end].decode("ascii")
    if text.startswith("'"):
        return text[1:-1].replace("''", "'"), True
    return text, False


def template_of(tree: exp.Expr, shape: LiteralShape, parameter_count: int) -> Template | None:
    """``tree`` as a template for texts of ``shape``, or None if its literals are not exactly
    the shape's spans (see the module docstring). ASCII texts only: sqlglot's positions count
    characters and the shape's count bytes."""
    by_start = {start: i for i, (start, _) in enumerate(shape.spans)}
    slots: list[int] = []
    for node in tree.find_all(exp.Literal):
        meta = node.meta
        span = by_start.get(meta.get("start", -1)) if meta else None
        if span is None or meta.get("end") != shape.spans[span][1] - 1:
            return None
        value, is_string = _value(shape, span)
        if node.is_string != is_string or node.this != value:
            return None
        slots.append(span)
    if sorted(slots) != list(range(len(shape.spans))):
        return None
    for each in tree.walk():
        # Positions of this text's tokens are wrong for the next text: a copy does not carry
        # them. An aggregate's name is read off the text (router.outputs: DuckDB names its
        # column as written), and is written the same in every text of the shape: kept as such.
        notes = each._meta
        each._meta = None
        if notes and named_aggregate(each) and "start" in notes and "end" in notes:
            each._meta = {SPELLING: shape.text[notes["start"] : notes["end"] + 1].decode("ascii")}
    return Template(tree, tuple(slots), parameter_count)


def instantiate(template: Template, shape: LiteralShape) -> exp.Expr:
    """A tree for a text of the template's shape: a copy with that text's values."""
    tree = faithful_copy(template.tree)
    for node, span in zip(tree.find_all(exp.Literal), template.slots, strict=True):
        node.set("this", _value(shape, span)[0])
    return tree


def plain_values(shape: LiteralShape) -> bool:
    """Whether every literal of the text renders back as a plain span (see _UNSAFE)."""
    return not any(
        any(bad in shape.text[start:end][1:-1].decode("ascii") for bad in _UNSAFE)
        for start, end in shape.spans
    )


# Dashboard statements are short; a long one (a big IN list) would keep a big tree per shape.
MAX_TEMPLATE_BYTES = 4 << 10
TEMPLATES: LRU[tuple[object, ...], Template] = LRU(512)
