# The two commands a newcomer needs: `make demo` (train, serve and predict on the bundled
# sample; DEMO_PORT=8081 make demo when port 8080 is taken) and `make test` (the whole suite, as
# CI runs it); `make test-unit` is the quick loop while editing. `make venv` installs
# requirements.txt and requirements-dev.txt into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-unit lint format venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

demo: venv
	PATH="$(abspath $(BIN)):$$PATH" bash local_test/demo.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The edit-test loop: the unit tests without those marked slow (seconds each), stopping at the
# first failure. `make test` runs everything, as CI does.
test-unit: venv
	$(BIN)/python -m pytest tests/unit -m "not slow" -x -q $(PYTEST_ARGS)

# pytest exits 5 when it collected no test: that is a broken setup, not a pass.
test: lint
	$(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the test setup is broken" >&2; exit 1; fi; \
	exit $$rc
