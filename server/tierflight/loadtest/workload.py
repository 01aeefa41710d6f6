"""Workload files: ``*.sql`` statements separated by ``;``, each preceded by ``-- name: NAME``.

::

    -- Data: any other comment is ignored
    -- name: revenue_per_day
    SELECT day, sum(bid_price) FROM events WHERE type = 'impression' GROUP BY day;

A small scanner rather than ``str.split(";")``: a ``;`` inside a string literal, a quoted
identifier or a comment does not end a statement. The last statement may omit its ``;``.
Errors name the line, since workload files are written by hand.

``-- vary: NAME = ...`` lines (outside statements) declare value pools that statements name
as ``{NAME}``, filled per call (see :mod:`.vary`); a file without them is sent as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tierflight.loadtest.vary import VARY_LINE, VARY_PREFIX, Pool, Template, VaryError, parse_pool, template

NAME_LINE = re.compile(r"--\s*name:\s*(?P<name>.*?)\s*$")
VALID_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class WorkloadError(ValueError):
    """The workload file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str
    line: int  # where the statement's text starts (1-based)
    template: Template | None = None  # placeholders filled per call (-- vary: pools)


def _quoted_end(text: str, start: int, quote: str) -> int:
    """Index just past the literal opened at ``start`` ('' or "" inside it escape the quote)."""
    i = start + 1
    while True:
        j = text.find(quote, i)
        if j < 0:
            return -1
        if text.startswith(quote * 2, j):
            i = j + 2
            continue
        return j + 1


def parse_workload(text: str, source: str = "<workload>") -> list[Statement]:
    """The statements of a workload file, in file order."""
    statements: list[Statement] = []
    pools: dict[str, Pool] = {}
    seen: dict[str, int] = {}
    name: str | None = None
    name_line = 0
    body: list[str] = []
    body_line = 0
    i, line, line_start = 0, 1, 0

    def fail(message: str, at: int) -> WorkloadError:
        return WorkloadError(f"{source}, line {at}: {message}")

    def finish() -> None:
        nonlocal name, body, body_line
        sql = "".join(body).strip()
        if name is None:
            raise fail("statement without a '-- name: NAME' line before it", body_line)
        if not sql:
            raise fail(f"statement {name!r} is empty", name_line)
        statements.append(Statement(name, sql, body_line))
        name, body, body_line = None, [], 0

    while i < len(text):
        ch = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            comment = text[i:end]
            match = NAME_LINE.match(comment)
            outside = not "".join(body).strip()
            if VARY_PREFIX.match(comment) and not text[line_start:i].strip():
                if not outside:
                    raise fail("'-- vary:' inside a statement: declare pools between statements", line)
                vary = VARY_LINE.match(comment)
                if vary is None:
                    raise fail("expected '-- vary: NAME = VALUES'", line)
                if vary.group("name") in pools:
                    raise fail(f"pool {vary.group('name')!r} is declared twice", line)
                try:
                    pools[vary.group("name")] = parse_pool(vary.group("name"), vary.group("spec"))
                except VaryError as exc:
                    raise fail(str(exc), line) from None
            elif match and not text[line_start:i].strip():
                if "".join(body).strip():
                    raise fail(f"statement {name!r} is not ended by ';' before the next '-- name:'", line)
                if name is not None:
                    raise fail(f"'-- name: {name}' is followed by another name line, not a statement", line)
                new = match.group("name")
                if not VALID_NAME.match(new):
                    raise fail(f"bad statement name {new!r}: use letters, digits, '_', '.', '-'", line)
                if new in seen:
                    raise fail(f"statement name {new!r} is used twice (first on line {seen[new]})", line)
                seen[new], name, name_line, body = line, new, line, []
            elif "".join(body).strip():
                body.append(comment)  # a comment inside a statement stays part of it
            i = end
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise fail("unterminated /* comment", line)
            chunk = text[i : end + 2]
            if "".join(body).strip():
                body.append(chunk)
            line += chunk.count("\n")
            if "\n" in chunk:
                line_start = i + chunk.rfind("\n") + 1
            i = end + 2
            continue
        if ch in ("'", '"'):
            end = _quoted_end(text, i, ch)
            if end < 0:
                raise fail(f"unterminated {'string' if ch == chr(39) else 'quoted identifier'}", line)
            chunk = text[i:end]
        elif ch == ";":
            if "".join(body).strip() or name is not None:
                finish()
            i += 1
            continue
        else:
            chunk = ch
        if not body_line and not chunk.isspace():
            body_line = line
            if name is None:
                raise fail("statement without a '-- name: NAME' line before it", line)
        body.append(chunk)
        if "\n" in chunk:
            line += chunk.count("\n")
            line_start = i + chunk.rfind("\n") + 1
        i += len(chunk)
    if "".join(body).strip() or name is not None:
        finish()
    if not statements:
        raise WorkloadError(f"{source}: no statements (each needs a '-- name: NAME' line and a ';')")
    if not pools:
        return statements
    out = []
    for st in statements:

        def bad(message: str, st: Statement = st) -> WorkloadError:
            return fail(f"statement {st.name!r}: {message}", st.line)

        out.append(Statement(st.name, st.sql, st.line, template(st.sql, pools, bad)))
    return out


def load_workload(path: str | Path) -> list[Statement]:
    """Parse the workload file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload {path}: {exc.strerror or exc}") from None
    return parse_workload(text, str(path))
