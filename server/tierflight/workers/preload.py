"""Imported once by the worker fork server (see supervisor.py), before it forks any worker.

Everything a worker imports is imported here (but the small ``tierflight.cli`` module, a
layer above the workers, whose entry each worker imports when it starts; its library typer
is here), so the interpreter's objects and the libraries' heap are built once and shared copy-on-write by every worker instead of being
built again in each (about 130 MB of heap per worker). ``gc.freeze()`` moves them out of
the collector's reach: a collection would otherwise write to every object's header and copy
the pages it touches. Nothing here may start a thread or open a connection: a fork copies
only the calling thread.
"""

from __future__ import annotations

import gc

import duckdb  # noqa: F401
import pyarrow.flight  # noqa: F401
import pyiceberg.catalog.sql  # noqa: F401
import typer  # noqa: F401 - the CLI's library (the CLI itself is a layer above)

import tierflight.app
import tierflight.protocol.auth
import tierflight.protocol.server
import tierflight.protocol.tickets
import tierflight.workers.direct
import tierflight.workers.trust  # noqa: F401

gc.freeze()
