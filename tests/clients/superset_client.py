"""Run by test_superset.py with the .venv-superset interpreter (Superset 6.1, SQLAlchemy 1.4).

Superset's own code generates every statement: a SqlaTable over ``tierflight://HOST:PORT``
(columns reflected through the dialect), queried through ``SqlaTable.query`` with the query
objects a time-series chart (one per time grain) and a table chart send. No web server: a
Flask app context over a throwaway SQLite metadata database.

Usage: python superset_client.py HOST PORT WORKDIR; prints one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

SINCE, UNTIL = "2024-10-01T00:00:00", "2024-10-15T00:00:00"


def configure(workdir: Path) -> None:
    config = workdir / "superset_config.py"
    config.write_text(
        "SECRET_KEY = 'tierflight-test-only-secret-key-0123456789'\n"
        f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{workdir / 'superset.db'}'\n"
        "WTF_CSRF_ENABLED = False\n"
        # Superset's metastore cache (the default of the filter-state caches) does not start
        # with this flask-caching; nothing here needs a cache anyway.
        + "".join(
            f"{name} = {{'CACHE_TYPE': 'NullCache', 'CACHE_DEFAULT_TIMEOUT': 1}}\n"
            for name in ("CACHE_CONFIG", "DATA_CACHE_CONFIG", "THUMBNAIL_CACHE_CONFIG",
                         "FILTER_STATE_CACHE_CONFIG", "EXPLORE_FORM_DATA_CACHE_CONFIG")
        )
    )
    os.environ["SUPERSET_CONFIG_PATH"] = str(config)
    logging.disable(logging.WARNING)


def axis(grain: str | None) -> dict[str, Any]:
    """The x-axis column a time-series chart sends (GENERIC_CHART_AXES, Superset's default)."""
    return {"label": "ts", "sqlExpression": "ts", "columnType": "BASE_AXIS", "timeGrain": grain, "expressionType": "SQL"}


def metrics() -> list[dict[str, Any]]:
    return [
        {"expressionType": "SQL", "sqlExpression": "COUNT(*)", "label": "n"},
        {"expressionType": "SIMPLE", "column": {"column_name": "bid_price"}, "aggregate": "SUM", "label": "bids"},
    ]


def time_filter() -> dict[str, Any]:
    return {"col": "ts", "op": "TEMPORAL_RANGE", "val": f"{SINCE} : {UNTIL}"}


def rows(result: Any) -> list[list[Any]]:
    frame = result.df
    return [[v.isoformat() if hasattr(v, "isoformat") else v for v in row] for row in frame.itertuples(index=False)]


def main() -> None:
    host, port, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    configure(workdir)
    from superset.app import SupersetApp, create_app
    from superset.initialization import SupersetAppInitializer

    # No web server: the UI's and the API's views (a second or two of Flask-AppBuilder
    # registrations) would serve no request. And the metadata tables are created below from
    # the models, with no migration revision: Superset's sync of its configuration to them
    # loads all ~340 migration scripts only to find that out and skip.
    SupersetAppInitializer.init_views = lambda self: None
    SupersetApp.sync_config_to_db = lambda self: None
    app = create_app()
    out: dict[str, Any] = {}
    with app.app_context():
        from flask_appbuilder import Model
        from superset.connectors.sqla.models import SqlaTable
        from superset.constants import TimeGrain
        from superset.db_engine_specs import get_engine_spec
        from superset.extensions import db
        from superset.models.core import Database

        # The metadata tables straight from the models (no migrations: seconds, not a minute).
        Model.metadata.create_all(db.engine)
        database = Database(database_name="tierflight", sqlalchemy_uri=f"tierflight://{host}:{port}")
        db.session.add(database)
        db.session.commit()
        out["engine_spec"] = database.db_engine_spec.__name__
        out["spec_by_backend"] = get_engine_spec("tierflight").__name__
        from superset.sql.parse import SQLGLOT_DIALECTS

        out["sqlglot_dialect"] = str(SQLGLOT_DIALECTS.get("tierflight"))
        out["grains"] = sorted(g for g in database.db_engine_spec.get_time_grain_expressions() if g)
        out["superset_grains"] = sorted(g.value for g in TimeGrain)
        out["schemas"] = sorted(database.get_all_schema_names())
        out["tables"] = sorted(t[0] for t in database.get_all_table_names_in_schema(None, "main"))

        table = SqlaTable(table_name="events", schema="main", database=database)
        db.session.add(table)
        table.fetch_metadata()
        table.main_dttm_col = "ts"
        db.session.commit()
        out["columns"] = {c.column_name: [c.type, bool(c.is_dttm)] for c in table.columns}

        out["timeseries"] = {}
        for grain in TimeGrain:
            query = {
                "columns": [axis(grain.value)],
                "metrics": metrics(),
                "filter": [time_filter(), {"col": "type", "op": "==", "val": "impression"}],
                "is_timeseries": False,
                # What the ECharts time-series chart sends without a sort: its first metric,
                # descending (the frontend orders by the x-axis after the query).
                "orderby": [[metrics()[0], False]],
                "row_limit": 50000,
                "extras": {},
            }
            result = table.query(query)
            out["timeseries"][grain.value] = {
                "status": str(result.status),
                "error": result.error_message,
                "sql": result.query,
                "rows": rows(result),
            }

        table_chart = {
            "columns": ["country", "type"],
            "metrics": metrics(),
            "filter": [
                time_filter(),
                {"col": "type", "op": "IN", "val": ["impression", "click"]},
                {"col": "advertiser_id", "op": ">", "val": 100},
                {"col": "country", "op": "IS NOT NULL"},
            ],
            "is_timeseries": False,
            "orderby": [[metrics()[0], False]],
            "row_limit": 20,
            "extras": {"where": "publisher_id <> 3"},
        }
        result = table.query(table_chart)
        out["table"] = {"status": str(result.status), "error": result.error_message, "sql": result.query, "rows": rows(result)}

    # The same dialect under SQLAlchemy 1.4 and pandas 2.1 (Superset's pins), without Superset,
    # and found through its entry point (no import of tierflight_client here).
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(f"tierflight://{host}:{port}")
    out["sqlalchemy_version"] = sa.__version__
    out["read_sql"] = pd.read_sql(
        sa.text("SELECT type, count(*) AS n FROM events WHERE type = :t AND day >= :d GROUP BY type"),
        engine,
        params={"t": "click", "d": dt.date(2024, 10, 1)},
    ).to_dict("records")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
