# The two commands a user needs: `make run` (install everything and serve on SQLite)
# and `make test` (the whole suite, SQLite and Postgres). Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LISTEN ?= 127.0.0.1:50051
DATABASE_URL ?= sqlite:///var/ledger.db

.PHONY: setup proto proto-check client client-check run test lint fmt clean bench chaos

setup: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e clients/python -e '.[dev]'
	touch $(STAMP)

# Regenerate the ledger.v1 stubs (+ .pyi) into clients/python/src/ledger from protos/.
proto: $(STAMP)
	PATH=$(BIN):$$PATH $(PY) scripts/gen_protos.py

# Fail when the committed stubs differ from what protos/ generates.
proto-check: $(STAMP)
	PATH=$(BIN):$$PATH $(PY) scripts/gen_protos.py --check

# Write the blocking client (ledger_client/_sync/client.py) from the asyncio one.
client: $(STAMP)
	$(PY) scripts/gen_sync_client.py

# Fail when the committed blocking client differs from what the asyncio one gives.
client-check: $(STAMP)
	$(PY) scripts/gen_sync_client.py --check

run: proto
	mkdir -p var
	$(BIN)/ledger-server serve --dev --listen $(LISTEN) --database-url $(DATABASE_URL)

test: $(STAMP)
	PATH=$(BIN):$$PATH $(PY) -m pytest $(PYTEST_ARGS)

# The benchmark (bench/README.md): a few minutes, loopback only; results in bench/results/.
# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS=--quick`.
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e clients/python -e '.[dev,bench]'
	$(PY) -m bench.run $(BENCH_ARGS)

# The fault suite (README "Fault testing"): first the fuzzer with CHAOS_FUZZ_EXAMPLES random
# requests per RPC and database (the normal suite runs 25 fixed ones), then the bank test:
# SQLite, then Postgres with two servers; kill -9, SIGTERM, SIGSTOP and Postgres restarts.
# About 10 minutes, loopback only; summary in chaos/results/latest.json, logs in var/chaos/.
# Exit 1 on any anomaly. CHAOS_ARGS passes options through to the bank test, e.g.
# `make chaos CHAOS_ARGS="--backend postgres --seconds 300"`.
CHAOS_FUZZ_EXAMPLES ?= 200
chaos: $(STAMP)
	LEDGER_FUZZ_EXAMPLES=$(CHAOS_FUZZ_EXAMPLES) PATH=$(BIN):$$PATH $(PY) -m pytest tests/test_fuzz.py -q
	timeout -s INT 1800 $(PY) -m chaos.bank --pg-restart --seconds 75 --ops 100000 --fault-interval 3 \
		--attempt-timeout 2 --call-budget 8 \
		--workdir var/chaos --json chaos/results/latest.json $(CHAOS_ARGS)

lint: proto-check client-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
