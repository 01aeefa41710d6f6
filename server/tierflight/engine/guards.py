"""Caps on functions that build one huge value in a single call.

``repeat('x', 2000000000)`` is one 2 GB allocation (``range(150000000)``, a list, took the
server to 13.7 GB), filled before DuckDB next looks at an
interrupt, and its memory is not counted by ``memory_limit``: the memory ceiling (see
engine.monitor) can only stop the statement after the fact. These functions are shadowed by
macros of the same name (a macro in ``main`` is found before the built-in) that refuse a
result past MAX_BUILT_VALUE and call the built-in otherwise. The built-in stays reachable
by its qualified name (``system.main.repeat``), so such calls are refused.
"""

from __future__ import annotations

from sqlglot import exp

from tierflight.core.errors import StatementRefused

# Per value (characters, bytes or list elements). A chunk of 2048 rows can still build 2048
# of them in one call: 1 Mi keeps that within a few GB; no analytics value needs more.
MAX_BUILT_VALUE = 1 << 20
GUARDED = frozenset({"repeat", "lpad", "rpad", "range", "generate_series", "list_resize", "array_resize"})
_BUILTIN_SCHEMAS = frozenset({"system", "pg_catalog", "information_schema", "temp"})


def _refuse(name: str, size: str) -> str:
    return (
        f"CASE WHEN {size} > {MAX_BUILT_VALUE} THEN error('{name}() would build a value of ' || ({size}) || "
        f"' characters (or bytes, or elements); the server allows at most {MAX_BUILT_VALUE}') END"
    )


def _capped(name: str, size: str, n: str) -> str:
    return f"coalesce({_refuse(name, size)}, {n})"


def _series(name: str) -> str:
    # The list forms over integers; the table functions of the same names are other catalog
    # entries, untouched. Timestamp series (with an INTERVAL step) go to the built-in as they are.
    step = "CASE WHEN s = 0 THEN 1 ELSE s END"
    return (
        f"CREATE OR REPLACE MACRO {name}"
        f"(a BIGINT) AS system.main.{name}({_capped(name, 'a', 'a')}),"
        f"(a BIGINT, b BIGINT) AS system.main.{name}(a, {_capped(name, 'b - a', 'b')}),"
        f"(a BIGINT, b BIGINT, s BIGINT) AS system.main.{name}(a, {_capped(name, f'(b - a) // ({step})', 'b')}, s),"
        f"(a, b, s) AS system.main.{name}(a, b, s)"
    )


def _resize(name: str) -> str:
    return (
        f"CREATE OR REPLACE MACRO {name}"
        f"(l, n) AS system.main.{name}(l, {_capped(name, 'n', 'n')}),"
        f"(l, n, v) AS system.main.{name}(l, {_capped(name, 'n', 'n')}, v)"
    )


# error() has no type of its own in a CASE: coalesce(CASE ... error ... END, n) keeps n's.
MACROS: tuple[str, ...] = (
    "CREATE OR REPLACE MACRO repeat"
    f"(s BLOB, n) AS system.main.repeat(s, {_capped('repeat', 'octet_length(s) * greatest(n, 0)', 'n')}),"
    f"(s, n) AS system.main.repeat(s, {_capped('repeat', 'length(s) * greatest(n, 0)', 'n')})",
    *(
        f"CREATE OR REPLACE MACRO {pad}(s, n, f) AS system.main.{pad}(s, {_capped(pad, 'n', 'n')}, f)"
        for pad in ("lpad", "rpad")
    ),
    _series("range"),
    _series("generate_series"),
    _resize("list_resize"),
    _resize("array_resize"),
)


def check_builtin_bypass(tree: exp.Expr) -> None:
    """Refuse ``system.main.repeat(...)`` and the like: the unguarded built-ins."""
    for dot in tree.find_all(exp.Dot):
        func = dot.expression
        if not isinstance(func, exp.Func):
            continue
        name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
        if name not in GUARDED:
            continue
        parts = (
            [i.name.lower() for i in dot.this.find_all(exp.Identifier)]
            if isinstance(dot.this, exp.Dot | exp.Identifier)
            else []
        )
        if _BUILTIN_SCHEMAS.intersection(parts):
            raise StatementRefused(f"{name}() may not be called by a qualified name; call {name}(...)")
