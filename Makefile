# The README's two commands: `make demo` (the end-to-end job) and `make test` (the suite).
# Both bootstrap .venv on a fresh machine with the exact tested set (constraints.txt; setup.cfg
# itself declares ranges): torch and torchvision first (their wheels lie on local disk), then this
# project in editable mode with every extra and the test tools (`.[dev]`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# albumentations would otherwise query the package index at import.
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup demo test test-fast bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq -c constraints.txt torch torchvision
	$(BIN)/pip install -qq -c constraints.txt -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python -m examples.digits.demo demo-output

test: setup
	$(BIN)/python -m pytest -q

# The suite less the tests marked slow (setup.cfg names what they do): about a minute.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks.run

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache
