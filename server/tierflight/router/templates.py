"""One rewrite per statement shape: a dashboard's new texts differ only in their constants.

A dashboard sends the same statement with another country, another day range, another top-N:
each text is new, so the rewrite cache (by text) misses, and rewriting and generating the SQL
cost most of the plan. But the rewrite of a statement onto a rollup reads most of its
constants only to copy them: those are **holes** of the statement's **shape**, and one
rewrite, kept as text with the holes cut out, serves every statement of that shape.

The holes (``statement_shape``) are the constants compared with in a WHERE conjunct already in
normalise_predicate's form (``col = c``, ``col <> c``, ``col < c`` ..., ``col BETWEEN c AND
d``, ``col IN (c, ...)``) or in a HAVING conjunct, and the LIMIT and OFFSET numbers; each
constant a literal, a cast of one (``DATE '...'``) or arithmetic on two numbers (``5 /
1000.0``, either may be a cast of one). The shape's key is the whole tree with each hole
replaced by its **class**: string or number, integer or not (SQL generation of a division
asks), whether it reads as a date or timestamp (facts.range_subject, and so the ``grain``
rule, asks). What else reads a hole's value, and why a filled template is the rewrite:

* the time range (retention, estimates, bucket bounds) is each statement's own, computed per
  plan; the bucket bounds are added per plan (``fold_bounds`` over what each kept conjunct
  implies: for one with holes, read off the statement's own constants);
* ``time_predicate`` and ``coarse_time_predicate`` (alignment) read the constants of a
  comparison of the time column, or of a grain finer than the rollup's
  (``dimensions.reads_constants``): for that rollup the values of those holes are **pinned**,
  part of the key (``Variant``);
* a filtered rollup drops the conjuncts spelled as its filter (compared by text, as the
  ``filter`` rule does): which conjuncts those are is part of the key too;
* the other statement rules (``SHAPE_RULES``) read the facts, which depend on holes only
  through their class;
* everything else (rewrite_clause, keep_names, the rules' messages) never reads such a
  constant: it copies it, and SQL generation writes a literal the same wherever it stands.
  A template is built from a shape's second statement (one that never comes again costs no
  template): its real rewrite with the holes swapped for markers, then kept only when filling
  it with that statement's own constants gives exactly the SQL its full rewrite generates.

Output names are part of the key (they come from the text: ``avg`` and ``mean`` parse alike);
statements whose names DuckDB must bind, subqueries routed alone and splits are rewritten in
full as before.
"""

from __future__ import annotations

import functools
import secrets
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlglot import exp
from sqlglot.generator import Generator

from tierflight.core.grains import literal_datetime
from tierflight.core.statement import DIALECT
from tierflight.rollups.definition import StorageGroup
from tierflight.router.dimensions import (
    Sides,
    bounds_bucket,
    bucket_range,
    bucket_type,
    constant_sides,
    fold_bounds,
    implied_sides,
    reads_constants,
)
from tierflight.router.facts import Target
from tierflight.router.outputs import SPELLING, output_names
from tierflight.router.rules import Candidate
from tierflight.router.split import slice_bounds
from tierflight.router.trees import canonical, conjuncts, filter_key, normalise_predicate

_LITERAL_ARGS = frozenset({"this", "is_string"})
_COMPARED = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div)
# Notes on where a node stood in its text, and an aggregate's spelling there (outputs.SPELLING:
# what its output is named, which the key holds as the statement's names): not the tree.
_POSITIONS = frozenset({"line", "col", "start", "end", SPELLING})
_PLAIN = (str, int, float, Enum)  # argument values a key holds as they are (bool is an int)
_SCALARS = frozenset({str, bool, int, float})
# Tokens of a shape's key at most: a dashboard statement has a few hundred; the router keeps
# up to a few thousand keys, so a hostile statement must not make each one large.
MAX_TOKENS = 2048
_TOKEN = secrets.token_hex(6)  # markers no statement can contain by chance


class Untemplated(Enum):
    """A shape (onto one rollup) without a template: seen once so far (one statement of a
    shape that never comes again costs no template), or refused (its rewrite cannot be cut
    into a template: every statement of it is rewritten in full)."""

    SEEN = "seen"
    REFUSED = "refused"


class ShapeKey:
    """The key of a shape: its tokens, hashed once (a plan looks it up per candidate)."""

    __slots__ = ("_hash", "tokens")

    def __init__(self, tokens: tuple[Any, ...]) -> None:
        self.tokens = tokens
        self._hash = hash(tokens)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShapeKey) and self._hash == other._hash and self.tokens == other.tokens


@dataclass(frozen=True)
class StatementShape:
    """A statement's tree with its holes taken out: ``key`` equal for two statements that
    differ only in the values of their holes (of the same classes). Only the key is kept
    across statements (the rest refers to this statement's tree)."""

    key: ShapeKey
    holes: tuple[exp.Literal, ...]  # the statement's own literals, in hole order
    # Where each hole is: ("limit",) / ("offset",), or ("where" / "having", conjunct index,
    # operand index, literal index in the operand).
    places: tuple[tuple[Any, ...], ...]
    conjuncts: tuple[exp.Expr, ...]  # the statement's WHERE conjuncts
    holed: frozenset[int]  # indexes of the conjuncts with holes

    _dropped: dict[str, frozenset[int]] = field(default_factory=dict, compare=False)

    @functools.cached_property
    def texts(self) -> tuple[str, ...]:
        """Each hole's literal as generated SQL writes it."""
        generator = _generator()
        # A fresh literal: the statement's may carry comments, which the rewrite's copy drops.
        return tuple(generator.sql(exp.Literal(this=h.this, is_string=h.is_string)) for h in self.holes)

    def dropped(self, flt: str) -> frozenset[int]:
        """The conjuncts a rollup with filter ``flt`` drops: those spelled as the filter, as
        rewrite._where and the ``filter`` rule compare them."""
        found = self._dropped.get(flt)
        if found is None:
            key = filter_key(flt)
            found = frozenset(k for k, p in enumerate(self.conjuncts) if canonical(normalise_predicate(p)) == key)
            self._dropped[flt] = found
        return found


def _operands(pred: exp.Expr) -> list[exp.Expr]:
    """The constants a normal WHERE conjunct compares with (where holes may be)."""
    if isinstance(pred, _COMPARED):
        return [pred.expression]
    if isinstance(pred, exp.Between):
        return [pred.args["low"], pred.args["high"]]
    if isinstance(pred, exp.In) and not any(pred.args.get(k) for k in ("query", "unnest", "field")):
        return list(pred.expressions)
    return []


def _literals(operand: exp.Expr | None) -> list[exp.Literal]:
    """The literals an operand is made of, when it is nothing else: a literal (``'DE'``,
    ``77``), a cast of one (``DATE '2024-03-01'``), or arithmetic on two numbers (``5 / 1000.0``:
    its SQL depends on them only through their class, integer or not)."""
    if isinstance(operand, exp.Cast):
        operand = operand.this
    if isinstance(operand, exp.Literal):
        return [operand] if set(operand.args) <= _LITERAL_ARGS else []
    if isinstance(operand, _ARITHMETIC):
        # A side may be a cast of its number too: a bound parameter is one (``CAST(8271 AS
        # BIGINT) / 1000.0``), and the cast's type is part of the key like any node.
        sides = [_number(operand.this), _number(operand.expression)]
        return [x for x in sides if x is not None] if all(x is not None for x in sides) else []
    return []


def _number(side: exp.Expr | None) -> exp.Literal | None:
    """A number literal, or the number literal a cast reads."""
    if isinstance(side, exp.Cast):
        side = side.this
    if isinstance(side, exp.Literal) and not side.is_string and set(side.args) <= _LITERAL_ARGS:
        return side
    return None


def statement_shape(tree: exp.Select) -> StatementShape | None:
    """The shape of an aggregate statement over one table (None: a tree it cannot key)."""
    holes: list[exp.Literal] = []
    places: list[tuple[Any, ...]] = []
    for clause in ("limit", "offset"):
        node = tree.args.get(clause)
        value = _number(node.args.get("expression")) if node is not None else None
        if value is not None:  # a number, or a cast of one (a bound parameter)
            holes.append(value)
            places.append((clause,))
    found = conjuncts(tree.args.get("where"))
    holed: set[int] = set()
    for k, pred in enumerate(found):
        if normalise_predicate(pred) is not pred:
            continue  # normalise copies it: its constants are not the statement's nodes
        for j, operand in enumerate(_operands(pred)):
            for m, literal in enumerate(_literals(operand)):
                holes.append(literal)
                places.append(("where", k, j, m))
                holed.add(k)
    having = tree.args.get("having")
    for k, pred in enumerate(conjuncts(having.this) if having is not None else []):
        # HAVING is rewritten clause by clause (rewrite_clause): its comparisons stay as
        # written, only the aggregates and grouped expressions in them change.
        for j, operand in enumerate(_operands(pred)):
            for m, literal in enumerate(_literals(operand)):
                holes.append(literal)
                places.append(("having", k, j, m))
    tokens = _tokens(tree, {id(h) for h in holes})
    if tokens is None:
        return None
    return StatementShape(ShapeKey(tokens), tuple(holes), tuple(places), tuple(found), frozenset(holed))


def _tokens(tree: exp.Expr, holes: set[int]) -> tuple[Any, ...] | None:
    """The tree in pre-order, flat: each node as its class then its arguments, each tagged
    and of a fixed length for its tag (an expression child's tokens come after all of them,
    in order), a hole as its class only; so two trees with the same tokens are the same tree.
    None for a tree too large to keep as a key (kept keys are bounded: MAX_TOKENS each) or
    with an argument that cannot be one. Asked of every new text: written for speed."""
    out: list[Any] = []
    extend, append = out.extend, out.append
    stack: list[exp.Expr] = [tree]
    pop, push = stack.pop, stack.append
    while stack:
        if len(out) > MAX_TOKENS:
            return None
        node = pop()
        # Comments and the parser's notes (not token positions) reach the rewrite's SQL
        # through faithful copies (measures.py, a pinned time bound): part of the key.
        if node.comments:
            extend(("C", tuple(node.comments)))
        if node._meta and not _POSITIONS.issuperset(node._meta):
            notes = tuple(sorted((k, v) for k, v in node._meta.items() if k not in _POSITIONS))
            if any(not (isinstance(v, _PLAIN) or v is None) for _, v in notes):
                return None
            extend(("M", notes))
        if id(node) in holes:
            assert isinstance(node, exp.Literal)
            extend(("?", node.is_string, node.is_int, literal_datetime(node) is None))
            continue
        append(node.__class__)
        children: list[exp.Expr] = []
        for key, value in node.args.items():
            kind = type(value)
            if kind is list:
                extend(("L", key, len(value)))
                for v in value:
                    if isinstance(v, exp.Expr):
                        append("e")
                        children.append(v)
                    elif v is None or isinstance(v, _PLAIN):
                        extend(("v", type(v), v))
                    else:
                        return None
            elif isinstance(value, exp.Expr):
                extend(("E", key))
                children.append(value)
            elif value is None or kind in _SCALARS or isinstance(value, _PLAIN):
                extend(("S", key, kind, value))
            else:
                return None
        for child in reversed(children):
            push(child)
    return tuple(out)


_local = threading.local()


def _generator() -> Generator:
    """A DuckDB SQL generator for this thread (generators keep state while they write)."""
    generator: Generator | None = getattr(_local, "generator", None)
    if generator is None:
        generator = DIALECT.generator()
        _local.generator = generator
    return generator


@dataclass(frozen=True)
class RewriteTemplate:
    """A rewrite's SQL with its holes cut out: ``pieces[0] hole[order[0]] pieces[1] ...``,
    the bucket bounds going in at piece ``bounds_at`` (after ``joiner``)."""

    pieces: tuple[str, ...]
    order: tuple[int, ...]  # which hole fills each gap (-1: the bucket bounds)
    joiner: str  # " WHERE " or " AND ": what precedes the bounds, when there are any
    grain: str | None
    fixed: tuple[Sides, ...]  # what the conjuncts without holes imply of the bucket column
    bounding: tuple[int, ...]  # conjuncts with holes on the bare bucket column

    def fill(self, c: Candidate, shape: StatementShape) -> str:
        bounds = ""
        if self.grain is not None:
            dated = bucket_type(self.grain) == "DATE"
            sides = [*self.fixed, *((constant_sides(shape.conjuncts[k], dated), isinstance(shape.conjuncts[k], exp.LT)) for k in self.bounding)]
            lo, hi = fold_bounds(sides, self.grain, *slice_bounds(self.grain, c.target.time_range))
            extra = bucket_range(self.grain, lo, hi)
            if extra:
                generator = _generator()
                bounds = self.joiner + " AND ".join(generator.sql(e) for e in extra)
        texts = shape.texts
        out = [self.pieces[0]]
        for index, piece in zip(self.order, self.pieces[1:], strict=True):
            out.append(bounds if index < 0 else texts[index])
            out.append(piece)
        return "".join(out)


@dataclass(frozen=True)
class Variant:
    """What decides a rewrite onto one rollup besides the statement's shape: the conjuncts
    that are the rollup's filter (dropped: compared by their text) and the values of the
    holes the rewrite reads (those of ``dimensions.reads_constants`` conjuncts), pinned."""

    dropped: frozenset[int]
    pinned: tuple[tuple[int, str, bool], ...]  # (hole, its text, a string?)

    def pins(self, hole: int) -> bool:
        return any(p[0] == hole for p in self.pinned)


def variant(c: Candidate, shape: StatementShape, reading: frozenset[int]) -> Variant:
    """The statement's variant for ``c``'s rollup; ``reading``: the conjuncts with holes that
    the rewrite onto it reads the constants of (``reading_conjuncts``, by shape)."""
    dropped = shape.dropped(c.group.filter) if c.group.filter else frozenset()
    pinned = tuple(
        (i, hole.this, hole.is_string)
        for i, (place, hole) in enumerate(zip(shape.places, shape.holes, strict=True))
        if place[0] == "where" and place[1] in reading and place[1] not in dropped
    )
    return Variant(dropped, pinned)


def reading_conjuncts(c: Candidate, shape: StatementShape) -> frozenset[int]:
    """The conjuncts with holes whose constants the rewrite onto ``c``'s rollup reads: a
    comparison of the time column, or of a grain finer than the rollup's."""
    info, group = c.target.info, c.group
    return frozenset(k for k in shape.holed if reads_constants(shape.conjuncts[k], info, group))


def build(
    select: exp.Select, kept: list[exp.Expr], group: StorageGroup, shape: StatementShape, variant: Variant
) -> RewriteTemplate | Untemplated:
    """The template of a statement's rewrite: ``select`` (its rewrite without WHERE, names
    kept; changed here) and ``kept``, its rewritten WHERE conjuncts, one per conjunct not
    dropped as the rollup's filter."""
    survivors = [k for k in range(len(shape.conjuncts)) if k not in variant.dropped]
    if len(kept) != len(survivors) or (len(kept) == 1 and isinstance(kept[0], exp.Connector)):
        # and_ parenthesises a lone OR only when bounds join it: its text would vary.
        return Untemplated.REFUSED
    at_kept = {k: i for i, k in enumerate(survivors)}
    markers: list[tuple[str, int]] = []  # (marker, hole)
    for i, (place, hole) in enumerate(zip(shape.places, shape.holes, strict=True)):
        if place[0] in ("where", "having"):
            if place[0] == "where" and (place[1] in variant.dropped or variant.pins(i)):
                continue  # not in the rewrite, or in it with the value the key holds
            if place[0] == "where":
                pred: exp.Expr | None = kept[at_kept[place[1]]]
            else:
                having = select.args.get("having")
                clauses = conjuncts(having.this) if having is not None else []
                pred = clauses[place[1]] if place[1] < len(clauses) else None
            operands = _operands(pred) if pred is not None else []
            literals = _literals(operands[place[2]]) if place[2] < len(operands) else []
            copied = literals[place[3]] if place[3] < len(literals) else None
        else:
            clause = select.args.get(place[0])
            copied = _number(clause.args.get("expression")) if clause is not None else None
        if copied is None or copied.this != hole.this or copied.is_string != hole.is_string:
            return Untemplated.REFUSED  # not copied as it was: not a hole of this rewrite
        marker = f"tfhole{_TOKEN}x{i:04d}" if hole.is_string else f"9{int(_TOKEN, 16):015d}{i:04d}"
        copied.replace(exp.Literal(this=marker, is_string=hole.is_string))
        markers.append((marker, i))
    fixed: list[Sides] = []
    bounding: list[int] = []
    grain = group.grain
    if grain is not None:
        dated = bucket_type(grain) == "DATE"
        pinned = {shape.places[p[0]][1] for p in variant.pinned}
        for k, pred in zip(survivors, kept, strict=True):
            if k not in shape.holed or k in pinned:
                fixed += [(implied_sides(p, grain, dated), isinstance(p, exp.LT)) for p in conjuncts(pred)]
            elif conjuncts(pred) != [pred]:
                return Untemplated.REFUSED
            elif bounds_bucket(pred, grain):
                bounding.append(k)
    end = f"tfbounds{_TOKEN}"
    select.set("where", exp.Where(this=exp.and_(*kept, exp.var(end), copy=False)))
    text = select.sql(dialect=DIALECT, copy=False)
    found = sorted((text.find(m), i, m) for m, i in [*markers, (end, -1)])
    if any(text.count(m) != 1 for _, _, m in found):
        return Untemplated.REFUSED
    pieces: list[str] = []
    order: list[int] = []
    joiner = ""
    at = 0
    for position, i, marker in found:
        piece = text[at:position]
        quoted = i >= 0 and shape.holes[i].is_string
        if i < 0:
            joiner = next((j for j in (" AND ", " WHERE ") if piece.endswith(j)), "")
            if not joiner:
                return Untemplated.REFUSED
            piece = piece[: -len(joiner)]
        elif quoted:
            # The marker's quotes are the literal's own: its generated text replaces them.
            if not (piece.endswith("'") and text[position + len(marker) : position + len(marker) + 1] == "'"):
                return Untemplated.REFUSED
            piece = piece[:-1]
        pieces.append(piece)
        order.append(i)
        at = position + len(marker) + (1 if quoted else 0)
    pieces.append(text[at:])
    return RewriteTemplate(tuple(pieces), tuple(order), joiner, grain, tuple(fixed), tuple(bounding))


class TargetShape:
    """What the templates ask of one plan's statement, computed on first use (a plan whose
    every candidate is answered from the rewrite cache never needs it)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    @functools.cached_property
    def shape(self) -> StatementShape | None:
        return statement_shape(self.target.tree) if self.target.names is None else None

    @functools.cached_property
    def names(self) -> tuple[str, ...] | None:
        names = output_names(self.target.tree, self.target.info, self.target.sql)
        return None if names is None else tuple(names)
