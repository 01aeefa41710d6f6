"""The :class:`Connection`: tierflight on top of the ADBC Flight SQL driver.

Statements run through ``cursor.adbc_execute_partitions`` + ``adbc_read_partition`` rather
than ``cursor.execute``: the RPCs are the same (prepare, GetFlightInfo, DoGet), but the
partitions are the serialized FlightInfos, and tierflight puts the route it chose (tier,
rollup, parts, rejected candidates) into their ``app_metadata``. That is how every query
also yields its route without a second round trip.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from tierflight_client.errors import TierflightClientError, from_adbc_error

if TYPE_CHECKING:
    import pandas
    import polars

IngestMode = Literal["append", "create", "replace", "create_append"]

# ADBC Flight SQL driver options (adbc_driver_flightsql.DatabaseOptions), spelled out so the
# module imports without the driver until connect() is called.
_AUTHORIZATION_HEADER = "adbc.flight.sql.authorization_header"
_TLS_ROOT_CERTS = "adbc.flight.sql.client_option.tls_root_certs"
_TLS_SKIP_VERIFY = "adbc.flight.sql.client_option.tls_skip_verify"
_TIMEOUTS = (
    "adbc.flight.sql.rpc.timeout_seconds.fetch",
    "adbc.flight.sql.rpc.timeout_seconds.query",
    "adbc.flight.sql.rpc.timeout_seconds.update",
)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Driver exceptions leave as :class:`TierflightClientError` (the original as ``__cause__``)."""
    import adbc_driver_manager

    try:
        yield
    except TierflightClientError:
        raise
    except adbc_driver_manager.Error as exc:
        raise from_adbc_error(exc) from exc


def _pem(tls_root_certs: str | Path) -> str:
    # Accept the PEM text itself or a path to it; the driver wants the text.
    if isinstance(tls_root_certs, str) and "-----BEGIN" in tls_root_certs:
        return tls_root_certs
    return Path(tls_root_certs).read_text()


def _route_of(partitions: Sequence[bytes]) -> dict[str, Any]:
    import pyarrow.flight as flight

    for partition in partitions:
        metadata = flight.FlightInfo.deserialize(partition).app_metadata
        if metadata:
            route: dict[str, Any] = json.loads(metadata)
            return route
    return {}


def adbc_db_kwargs(
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls_root_certs: str | Path | None = None,
    tls_skip_verify: bool = False,
    timeout: float | None = None,
) -> dict[str, str]:
    """The ADBC Flight SQL database options for these credentials, TLS settings and timeout
    (shared by :func:`connect` and the SQLAlchemy dialect)."""
    if token is not None and (user is not None or password is not None):
        raise ValueError("give either user/password or token, not both")
    if (user is None) != (password is None):
        raise ValueError("user and password go together")
    db_kwargs: dict[str, str] = {}
    if user is not None and password is not None:
        db_kwargs["username"] = user
        db_kwargs["password"] = password
    if token is not None:
        db_kwargs[_AUTHORIZATION_HEADER] = f"Bearer {token}"
    if tls_root_certs is not None:
        db_kwargs[_TLS_ROOT_CERTS] = _pem(tls_root_certs)
    if tls_skip_verify:
        db_kwargs[_TLS_SKIP_VERIFY] = "true"
    if timeout is not None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        db_kwargs.update(dict.fromkeys(_TIMEOUTS, str(float(timeout))))
    return db_kwargs


def connect(
    uri: str,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tls_root_certs: str | Path | None = None,
    tls_skip_verify: bool = False,
    timeout: float | None = None,
) -> Connection:
    """Open a connection to a tierflight server.

    ``uri`` is ``grpc://host:port`` or ``grpc+tls://host:port``. Authenticate with ``user`` and
    ``password`` (basic auth, exchanged for a bearer token) or a static bearer ``token``.
    ``tls_root_certs`` is the CA certificate (PEM text or a file) for ``grpc+tls``;
    ``tls_skip_verify`` disables certificate checks (testing only). ``timeout`` (seconds)
    bounds every RPC on the client side.
    """
    import adbc_driver_flightsql.dbapi as fsql

    db_kwargs = adbc_db_kwargs(user, password, token, tls_root_certs, tls_skip_verify, timeout)
    with _translated():
        conn = fsql.connect(uri, db_kwargs=db_kwargs, autocommit=True)
    return Connection(conn, uri)


class Connection:
    """One connection to a tierflight server. Not thread-safe: use one per thread.

    Every method raises a :class:`~tierflight_client.errors.TierflightClientError` subclass
    on failure. After :meth:`query` (and its variants), :attr:`last_route` holds the route
    the server chose for that statement.
    """

    def __init__(self, dbapi_connection: Any, uri: str) -> None:
        self._conn = dbapi_connection
        self._closed = False
        self.uri = uri
        self.last_route: dict[str, Any] | None = None

    @property
    def dbapi(self) -> Any:
        """The underlying ADBC DB-API connection (``adbc_driver_flightsql.dbapi.Connection``)."""
        return self._conn

    # -- statements -------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """Run ``sql`` (with ``?`` placeholders bound to ``params``) and return the result."""
        with _translated(), self._conn.cursor() as cur:
            partitions, schema = cur.adbc_execute_partitions(sql, params)
            self.last_route = _route_of(partitions)
            tables = []
            for partition in partitions:
                cur.adbc_read_partition(partition)
                tables.append(cur.fetch_arrow_table())
        if not tables:
            return schema.empty_table()
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def query_polars(self, sql: str, params: Sequence[Any] | None = None) -> polars.DataFrame:
        """:meth:`query` as a polars DataFrame (needs polars: ``pip install 'tierflight-client[polars]'``)."""
        try:
            import polars as pl
        except ImportError:
            raise ImportError(
                "query_polars needs polars, which is not installed: pip install 'tierflight-client[polars]' "
                "(or use query() for Arrow)"
            ) from None

        frame = pl.from_arrow(self.query(sql, params))
        assert isinstance(frame, pl.DataFrame)  # a Table always converts to a DataFrame
        return frame

    def query_pandas(self, sql: str, params: Sequence[Any] | None = None) -> pandas.DataFrame:
        """:meth:`query` as a pandas DataFrame (needs pandas: ``pip install 'tierflight-client[pandas]'``)."""
        try:
            import pandas  # noqa: F401 - only checking that it is there
        except ImportError:
            raise ImportError(
                "query_pandas needs pandas, which is not installed: pip install 'tierflight-client[pandas]' "
                "(or use query() for Arrow, query_polars() for polars)"
            ) from None
        return self.query(sql, params).to_pandas()

    def explain(self, sql: str) -> pa.Table:
        """The route table of ``EXPLAIN ROUTE <sql>``: tier, source, estimated_rows, reason."""
        return self.query(f"EXPLAIN ROUTE {sql}")

    def route(self, sql: str, params: Sequence[Any] | None = None) -> dict[str, Any]:
        """The route the server takes for ``sql``: ``{"tier", "rollup", "parts", "rejected"}``.

        The server decides the route when it runs the statement, so this runs it; the rows
        are streamed and dropped, never held. Use :meth:`query` and :attr:`last_route` to get
        both, or :meth:`explain` for the route alone as a table.
        """
        with _translated(), self._conn.cursor() as cur:
            partitions, _ = cur.adbc_execute_partitions(sql, params)
            route = _route_of(partitions)
            for partition in partitions:
                # Fetching the result releases the server's execution now rather than at its expiry.
                cur.adbc_read_partition(partition)
                for _ in cur.fetch_record_batch():
                    pass
        self.last_route = route
        return route

    # -- metadata and ingest ------------------------------------------------------------------

    def tables(self) -> list[str]:
        """Table names as a query spells them: ``events``, ``system.rollups``, ..."""
        with _translated():
            objects = self._conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names: list[str] = []
        for catalog in objects:
            for schema in catalog["catalog_db_schemas"] or []:
                prefix = "" if schema["db_schema_name"] in ("", "main", None) else f"{schema['db_schema_name']}."
                names.extend(prefix + t["table_name"] for t in schema["db_schema_tables"] or [])
        return sorted(names)

    def ingest(self, table: str, data: Any, mode: IngestMode = "append") -> int:
        """Append ``data`` (pyarrow Table/RecordBatch/RecordBatchReader, polars or pandas
        DataFrame) to ``table``; returns the number of rows the server acknowledged."""
        arrow = _arrow(data)
        if isinstance(arrow, pa.Table | pa.RecordBatch) and arrow.num_rows == 0:
            # The driver sends nothing at all for a stream without batches (not even the
            # schema), which the server cannot answer; one empty batch carries the schema,
            # so the server checks the column types and acknowledges 0 rows.
            empty = pa.RecordBatch.from_pylist([], schema=arrow.schema)
            arrow = pa.RecordBatchReader.from_batches(arrow.schema, [empty])
        with _translated(), self._conn.cursor() as cur:
            rows = cur.adbc_ingest(table, arrow, mode=mode)
        return int(rows)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with _translated():
            self._conn.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<tierflight_client.Connection {self.uri}{' (closed)' if self._closed else ''}>"


def _arrow(data: Any) -> pa.Table | pa.RecordBatch | pa.RecordBatchReader:
    if isinstance(data, pa.Table | pa.RecordBatch | pa.RecordBatchReader):
        return data
    if hasattr(data, "to_arrow") and type(data).__module__.startswith("polars"):
        table: pa.Table = data.to_arrow()
        return table
    if type(data).__module__.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise TypeError(f"cannot ingest a {type(data).__name__}: give a pyarrow Table, or a polars/pandas DataFrame")
