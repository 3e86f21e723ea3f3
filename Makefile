# Silta: `make demo` and `make test` are the quick start (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
SILTA := $(VENV)/bin/silta
CONFIG ?= config/demo.toml
PYTHON ?= python3
# Test files run on this many processes (each starts its own servers on free ports);
# a file stays on one process, so its module fixtures are shared. 0: in this process.
TEST_WORKERS ?= 2
# Arrow's default allocator is 2-4x slower on these machines (SERVICES.md).
export ARROW_DEFAULT_MEMORY_POOL := system

.PHONY: install demo test check lint typecheck layers schema bench bench-predict bench-drift bench-tui bench-soak clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=24'
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf var/lake var/state var/onprem  # the demo starts from nothing each time
	$(SILTA) demo init --config $(CONFIG)
	$(SILTA) agent run --once --config $(CONFIG)
	@echo
	$(SILTA) tables list --config $(CONFIG)
	@echo; echo "== a later month arrives, and it has drifted =="
	$(SILTA) demo drift --config $(CONFIG)
	$(SILTA) agent run --once --config $(CONFIG)
	@echo
	$(SILTA) alerts list --config $(CONFIG)
	$(SILTA) models show occupation_coder --config $(CONFIG)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

layers: install
	$(VENV)/bin/lint-imports

check: lint typecheck layers

test: check
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

schema: install
	$(SILTA) config schema > config/schema.json

bench: install
	$(PY) bench/sync_throughput.py $(BENCH_ARGS)

bench-predict: install
	$(PY) bench/predict_throughput.py $(BENCH_ARGS)

bench-drift: install
	$(PY) bench/drift.py $(BENCH_ARGS)

bench-soak: install
	$(PY) bench/soak.py $(BENCH_ARGS)

bench-tui: install
	$(PY) bench/tui_start.py $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
