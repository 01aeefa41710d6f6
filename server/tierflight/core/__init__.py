"""The lowest layer: errors, typed configuration, logging, SQL and time helpers, statement and name types.

Nothing here imports another tierflight package (see the layers contract in pyproject.toml)."""
