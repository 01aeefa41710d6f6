# Everything runs from .venv, created on first use; only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DBAPI_VENV := .venv-dbapi
CONFIG ?= conf/tierflight.toml

.PHONY: install serve test test-fast bench lint clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tierflight needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# flightsql-dbapi pins SQLAlchemy<2 and ships its own copy of the Flight SQL protobuf package,
# so it lives in its own venv and talks to a subprocess server.
$(DBAPI_VENV)/.installed:
	test -x $(DBAPI_VENV)/bin/python || $(PYTHON) -m venv $(DBAPI_VENV)
	$(DBAPI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DBAPI_VENV)/bin/python -m pip install --quiet 'flightsql-dbapi==0.2.2' 'pandas>=2' 'sqlalchemy<2'
	touch $@

serve: $(STAMP)
	$(BIN)/tierflight --config $(CONFIG) serve

test: $(STAMP) $(DBAPI_VENV)/.installed
	TIERFLIGHT_DBAPI_PYTHON=$(abspath $(DBAPI_VENV))/bin/python $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The tests that need no server, data set or subprocess (rules, rewrites, config): under a
# minute. conftest's --fast selects them and fails any that starts a process or takes over 5 s.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q --fast $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check server client tests bench
	$(BIN)/mypy

proto: $(STAMP)
	cd server && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. tierflight/protocol/flightsql.proto tierflight/protocol/flight_actions.proto

clean:
	rm -rf $(VENV) $(DBAPI_VENV) build *.egg-info
