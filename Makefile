# Entry points: `make demo` trains the RARL agent on RARL-Shapes-v0 (`rarl-gym train`, installed by
# `make venv`); `make lint` runs ruff (lint + format check) and mypy (rarl_gym/, envs/, agents/, scripts/:
# pyproject.toml's [tool.mypy]); `make test` runs `make lint`, then the tests (what CI runs).
# Each creates .venv with pip when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: venv demo lint format test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	$(VENV)/bin/rarl-gym train

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: venv lint
	$(PY) -m pytest -n 2 --dist loadgroup tests

clean:
	rm -rf $(VENV) runs .pytest_cache
