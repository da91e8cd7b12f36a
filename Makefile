# Tether: `make demo` runs the scenario, `make test` runs every check. Both set up first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# System packages (python3-venv, chromium): installed as root where apt-get exists,
# otherwise the set-up stops with the one command that installs them.
ENSURE := scripts/ensure-packages
# The browser tests drive Debian's chromium; Playwright never downloads one.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: setup browser demo test lint typecheck pytest bench dev clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(ENSURE) python3-venv
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

# Only the tests need a browser (the console's): `make demo` does not.
browser:
	$(ENSURE) chromium

# pytest exits 5 when it ran nothing: that is a failure, not a pass.
pytest: setup browser
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest ran no tests" >&2; exit 1; fi; exit $$rc

# browser first: a machine that cannot get chromium stops before the long checks run.
test: browser lint typecheck pytest

bench: setup
	$(PY) -m bench workflow

clean:
	rm -rf $(VENV) .tether .mypy_cache .ruff_cache
