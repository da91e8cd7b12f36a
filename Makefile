# Tether: `make demo` runs the scenario, `make test` runs every check. Both set up first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint typecheck pytest bench dev clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/tether demo

dev: setup
	$(VENV)/bin/tether dev

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

# pytest exits 5 when it ran nothing: that is a failure, not a pass.
pytest: setup
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests" >&2; exit 1; fi; exit $$rc

test: lint typecheck pytest

bench: setup
	$(PY) -m bench workflow

clean:
	rm -rf $(VENV) .tether .mypy_cache .ruff_cache
