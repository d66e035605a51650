# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo serve test lint install clean bench matrix

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) manage.py runway_demo

# The example site at http://127.0.0.1:8000/ with the fake CometAPI and a qcluster; Ctrl-C stops all.
serve: $(STAMP)
	$(PY) manage.py runway_serve $(SERVE_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=tests.settings $(PY) -m django makemigrations --check --dry-run

# pytest-xdist runs the suite on every core (PYTEST_WORKERS=1: one process, in order);
# loadgroup keeps the tests marked xdist_group on one worker.
PYTEST_WORKERS ?= auto

test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The test matrix (noxfile.py): every supported Python x Django on SQLite and the minimum
# versions; NOX_ARGS="-s services" (PostgreSQL + Redis) or "-s package" (build, twine check).
matrix: $(STAMP)
	$(VENV)/bin/nox $(NOX_ARGS)

# `make bench BENCH_ARGS=--quick` for the small sizes CI uses. DATABASE_URL picks PostgreSQL.
bench: $(STAMP)
	for script in benchmarks/bench_*.py; do \
		$(PY) -m benchmarks.$$(basename $$script .py) $(BENCH_ARGS) || exit 1; \
	done

clean:
	rm -rf $(VENV) .nox build dist *.egg-info example.sqlite3 tests/test*.sqlite3*
