# Everything runs from .venv, created on first use; only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DBAPI_VENV := .venv-dbapi
SUPERSET_VENV := .venv-superset
CONFIG ?= conf/tierflight.toml

.PHONY: install serve test test-fast bench lint clean proto superset-venv

# The client is its own distribution (./client, tierflight-client); the server depends on it by
# name, so both go in one pip run, the client from its folder.
$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tierflight needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./client -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# flightsql-dbapi pins SQLAlchemy<2 and ships its own copy of the Flight SQL protobuf package,
# so it lives in its own venv and talks to a subprocess server.
$(DBAPI_VENV)/.installed:
	test -x $(DBAPI_VENV)/bin/python || $(PYTHON) -m venv $(DBAPI_VENV)
	$(DBAPI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DBAPI_VENV)/bin/python -m pip install --quiet 'flightsql-dbapi==0.2.2' 'pandas>=2' 'sqlalchemy<2'
	touch $@

# Superset 6.1 pins SQLAlchemy 1.4, pandas 2.1 and pyarrow 18: its own venv, with the client
# (dialect and engine spec, found through entry points) installed from ./client. Two gaps in
# apache-superset 6.1's own requirements are filled here: it imports cachetools without
# requiring it, and its metastore cache does not start with flask-caching 2.4+.
$(SUPERSET_VENV)/.installed: client/pyproject.toml
	test -x $(SUPERSET_VENV)/bin/python || $(PYTHON) -m venv $(SUPERSET_VENV)
	$(SUPERSET_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SUPERSET_VENV)/bin/python -m pip install --quiet 'apache-superset==6.1.*' 'cachetools>=5' 'flask-caching<2.4' -e './client[superset]'
	touch $@

superset-venv: $(SUPERSET_VENV)/.installed

serve: $(STAMP)
	$(BIN)/tierflight --config $(CONFIG) serve

test: $(STAMP) $(DBAPI_VENV)/.installed $(SUPERSET_VENV)/.installed
	TIERFLIGHT_DBAPI_PYTHON=$(abspath $(DBAPI_VENV))/bin/python \
	TIERFLIGHT_SUPERSET_PYTHON=$(abspath $(SUPERSET_VENV))/bin/python \
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The tests that need no server, data set or subprocess (rules, rewrites, config): under a
# minute. conftest's --fast selects them and fails any that starts a process or takes over 5 s.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q --fast $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# lint-imports checks the layers contract in pyproject.toml ([tool.importlinter]): each
# package imports only from the layers below it (docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check server client tests bench
	$(BIN)/mypy
	PYTHONPATH=server:client $(BIN)/lint-imports

proto: $(STAMP)
	cd server && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. tierflight/protocol/flightsql.proto tierflight/protocol/flight_actions.proto

clean:
	rm -rf $(VENV) $(DBAPI_VENV) $(SUPERSET_VENV) build *.egg-info client/build client/*.egg-info
