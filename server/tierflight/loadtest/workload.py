"""Workload files: ``*.sql`` statements separated by ``;``, each preceded by ``-- name: NAME``.

::

    -- Data: any other comment is ignored
    -- name: revenue_per_day
    SELECT day, sum(bid_price) FROM events WHERE type = 'impression' GROUP BY day;

A small scanner rather than ``str.split(";")``: a ``;`` inside a string literal, a quoted
identifier or a comment does not end a statement. The last statement may omit its ``;``.
Errors name the line, since workload files are written by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NAME_LINE = re.compile(r"--\s*name:\s*(?P<name>.*?)\s*$")
VALID_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class WorkloadError(ValueError):
    """The workload file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str
    line: int  # where the statement's text starts (1-based)


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
            if match and not text[line_start:i].strip():
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
    return statements


def load_workload(path: str | Path) -> list[Statement]:
    """Parse the workload file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"cannot read workload {path}: {exc.strerror or exc}") from None
    return parse_workload(text, str(path))
