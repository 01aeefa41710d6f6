"""End-to-end basics through the ADBC driver against the in-process server."""

from __future__ import annotations

from typing import Any


def test_select_one(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 AS x")
        assert cur.fetchall() == [(1,)]


def test_events_count_matches_flat(conn: Any, flat: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type")
        assert cur.fetchall() == flat.execute("SELECT type, count(*) FROM events GROUP BY type ORDER BY type").fetchall()
