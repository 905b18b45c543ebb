# Two commands: `make run` and `make test`. Both set up .venv from pyproject.toml on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test lint format bench venv clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py import_workflows examples
	$(BIN)/python manage.py ensure_admin
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

# pytest exits 5 when it collects no tests: that is a broken suite, not a pass.
test: venv
	@$(BIN)/pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests: the suite is broken" >&2; exit 1; fi; \
	exit $$code

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py bench

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
