"""``tierflight serve --workers N``: one front process, N worker processes.

One Python process is bound by the GIL on the statement path, and pyarrow's Flight server
cannot share a port between processes (it turns SO_REUSEPORT off). So the front owns the
public port and authentication and forwards each call to a worker over a Unix socket in a
private directory; workers trust the identity the front sends (no one else can connect).

- Worker 0 is the **primary**: it takes ingest, replays and flushes the WAL, runs
  maintenance and writes rollup snapshots, exactly like a single-process server.
- Workers 1..N-1 are **followers** over the same data dir: they serve statements from what
  the primary published (files, tier boundary, rollup snapshots) and never write.
- A statement goes to the primary, or to a follower whose data state (see
  ``App.data_state``) equals the primary's while the primary has no unflushed hot rows, so
  every worker that answers gives the answer the primary would. A write (an ingest into
  any table) makes the followers ineligible before it is forwarded, and again before its
  acknowledgement goes back (a poll during the write may have compared states from before
  the primary applied it); a poll after that re-admits them once the rows are flushed and
  the followers have loaded what the flush published.
- Tickets and prepared-statement handles carry the index of the worker that issued them,
  so a statement's later calls (DoGet, DoPut of parameters, close, cancel) reach it.

See :mod:`tierflight.workers.front` (the proxy) and :mod:`tierflight.workers.supervisor`
(starting, watching and stopping the processes).
"""
