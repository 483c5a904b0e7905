# The two commands of the README: `make demo` and `make test`. Both build .venv/ first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/raysys demo

test: $(STAMP)
	$(VENV)/bin/ruff check raysys jobs tests benchmarks experiments
	$(VENV)/bin/python -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check raysys jobs tests benchmarks experiments

clean:
	rm -rf $(VENV) raysys-demo
