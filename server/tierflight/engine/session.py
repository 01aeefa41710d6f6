"""Who is asking, as SQL sees it: ``current_user`` and its synonyms answer the Flight user.

DuckDB defines ``current_user``, ``session_user``, ``current_role`` and ``user`` as macros that
return ``'duckdb'``. Each statement runs on a cursor of its own (a DuckDB connection), and a
temporary macro of the same name takes precedence over the built-in one for every spelling
(bare keyword, call, quoted, ``main.``-qualified), while a real column of that name still
wins as before: so the cursor of a statement that mentions one of them gets temporary macros
returning its user (``anonymous`` when authentication is off). Only DuckDB's own
``system.main.current_user()``, named in full, still says ``duckdb``.

Such a statement's answer depends on who asks, so it is never reused across statements
(router.reusable).
"""

from __future__ import annotations

import re

import duckdb

from tierflight.core.sql import SESSION_USER_FUNCTIONS, quote_ident, quote_literal

# A cheap, deliberately loose test on the SQL text (a column or string named "user" also
# matches): a false match costs one CREATE TEMP MACRO (under a millisecond), a miss would
# answer "duckdb".
_MENTION = re.compile(r"\b(?:" + "|".join(SESSION_USER_FUNCTIONS) + r")\b", re.IGNORECASE)


def mentions_session_user(sql: str) -> bool:
    return _MENTION.search(sql) is not None


def set_session_user(cursor: duckdb.DuckDBPyConnection, user: str) -> None:
    """Make the session-user functions of ``cursor`` (one statement's connection) return ``user``."""
    value = quote_literal(user)
    cursor.execute(
        "; ".join(
            f"CREATE OR REPLACE TEMP MACRO {quote_ident(name)}() AS {value}"
            for name in SESSION_USER_FUNCTIONS
        )
    )
