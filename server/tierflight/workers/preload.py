"""Imported once by the worker fork server (see supervisor.py), before it forks any worker.

Everything a worker imports is imported here, so the interpreter's objects and the
libraries' heap are built once and shared copy-on-write by every worker instead of being
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

import tierflight.app
import tierflight.cli
import tierflight.protocol.auth
import tierflight.protocol.server
import tierflight.protocol.tickets
import tierflight.workers.direct
import tierflight.workers.trust  # noqa: F401

gc.freeze()
