"""Run by test_flightsql_dbapi.py with the .venv-dbapi interpreter (flightsql-dbapi, SQLAlchemy 1.4).

Usage: python flightsql_dbapi_client.py HOST PORT TAG; prints one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import warnings
from typing import Any

import flightsql.sqlalchemy  # noqa: F401  (registers the datafusion+flightsql dialect)
import pandas as pd
import sqlalchemy as sa
from flightsql import FlightSQLClient, connect


def main() -> None:
    host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    out: dict[str, Any] = {}

    engine = sa.create_engine(f"datafusion+flightsql://{host}:{port}?insecure=true")
    inspector = sa.inspect(engine)
    out["schemas"] = sorted(inspector.get_schema_names())
    out["tables"] = sorted(inspector.get_table_names())
    out["system_tables"] = sorted(inspector.get_table_names(schema="system"))
    out["has_events"] = inspector.has_table("events")
    out["columns"] = [[c["name"], str(c["type"]), c["nullable"]] for c in inspector.get_columns("events")]

    with engine.connect() as conn:
        events = sa.Table("events", sa.MetaData(), autoload_with=conn)
        query = (
            sa.select(events.c.type, sa.func.count().label("n"))
            .where(events.c.bid_price > 0.5)
            .group_by(events.c.type)
            .order_by(events.c.type)
        )
        out["core_select"] = [list(r) for r in conn.execute(query)]

    # The dialect's prepared-statement mode sends bound parameters as dense unions.
    prepared = sa.create_engine(
        f"datafusion+flightsql://{host}:{port}?insecure=true&feature-sqlalchemy-prepared-statements=on"
    )
    with prepared.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*) FROM events WHERE type = :t AND advertiser_id > :a"),
            {"t": "click", "a": 50000},
        )
        out["sqlalchemy_params"] = [list(r) for r in rows]
        # flightsql-dbapi binds int, float, str, bytes and bool only: a date is refused in
        # the client (before anything reaches the server); its ISO text binds and compares.
        (first_day,) = conn.execute(sa.text("SELECT min(day) FROM events")).fetchone()
        day = dt.date.fromisoformat(str(first_day)[:10]) + dt.timedelta(days=3)
        out["day"] = day.isoformat()
        try:
            conn.execute(sa.text("SELECT count(*) FROM events WHERE day >= :d"), {"d": day})
            out["date_param_error"] = None
        except Exception as exc:
            out["date_param_error"] = f"{type(exc).__name__}: {exc}"
        rows = conn.execute(sa.text("SELECT count(*) FROM events WHERE day >= :d"), {"d": day.isoformat()})
        out["iso_date_param"] = [list(r) for r in rows]

    # Without the flag the dialect renders each value itself, and a text() statement's
    # values are not known when it is compiled: the server receives `type = NULL`.
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT 'literal-{tag}' AS tag, count(*) FROM events WHERE type = :t"), {"t": "click"}
        )
        out["literal_binds"] = [list(r) for r in rows]

    dbapi = connect(FlightSQLClient(host=host, port=port, insecure=True))
    with warnings.catch_warnings():
        # pandas 2.2+ only knows SQLAlchemy 2; a plain DB-API connection works with a warning.
        warnings.simplefilter("ignore", UserWarning)
        frame = pd.read_sql("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type", dbapi)
    out["read_sql"] = frame.to_dict("records")
    out["read_sql_dtypes"] = {k: str(v) for k, v in frame.dtypes.items()}

    cur = dbapi.cursor()
    cur.execute(f"SELECT '{tag}-plain' AS tag, count(*) AS n FROM events WHERE type = 'purchase'")
    out["plain"] = [list(r) for r in cur.fetchall()]
    cur.execute(
        f"SELECT '{tag}-params' AS tag, count(*) AS n FROM events WHERE type = ? AND bid_price > ?",
        ["impression", 0.25],
    )
    out["dbapi_params"] = [list(r) for r in cur.fetchall()]
    out["description"] = [d[0] for d in cur.description]

    try:
        cur.execute("SELECT * FROM no_such_table")
        out["error"] = None
    except Exception as exc:  # the server's message must reach the client
        out["error"] = f"{type(exc).__name__}: {exc}"

    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
