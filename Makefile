# The two commands of the README: `make demo` and `make test`, on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-all bench lint clean compose-test

$(BIN)/tuner: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU wheel of torch (constraints-cpu.txt); the package itself accepts any torch >= 2.4.
	$(BIN)/python -m pip install --quiet -c constraints-cpu.txt -e ".[dev]"
	touch $(BIN)/tuner

setup: $(BIN)/tuner

demo: setup
	$(BIN)/tuner demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow" --durations=25

test-all: setup
	$(BIN)/python -m pytest -q --durations=25

bench: setup
	$(BIN)/python benchmarks/bench_overhead.py

lint: setup
	$(BIN)/ruff check tuner workers search_spaces tests benchmarks
	$(BIN)/mypy

# The compose deployment built and run with podman (deploy/smoke.sh; deploy/README.md).
compose-test: setup
	TUNER_PYTHON=$(abspath $(BIN))/python deploy/smoke.sh

clean:
	rm -rf $(VENV) .tuner
