# The two quick-start commands: `make run` (the main job on the embedded default) and `make test`.
# Both create the virtual environment on first use; nothing needs to be installed beforehand but python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests run on CPU with two xdist workers; one BLAS/torch thread each avoids oversubscribing 2 cores.
PYTEST_ARGS ?= -n 2 --dist loadfile
EXPERIMENT ?= mmroute

.PHONY: install java chromium lint run test bench clean server server-stop

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $@

# The Spark tests need a Java runtime: Debian's default-jre-headless, installed when none is found.
java:
	@command -v java >/dev/null 2>&1 || { (apt-get update -qq || true) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends default-jre-headless; }

# The MLflow UI screenshot test (tests/server) needs a headless browser: Debian's chromium, installed
# when none is found. Only CI asks for it; without it that one test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq || true) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# The experiment is created first by mmroute so that its artifacts go to ./mlartifacts (a bare
# `mlflow run .` uses the Default experiment, whose artifact root MLflow puts under ./mlruns).
run: install
	$(BIN)/python -c "from mmroute.tracking import setup_tracking; setup_tracking('$(EXPERIMENT)')"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . --env-manager local --experiment-name $(EXPERIMENT)

# Static checks: ruff (pycodestyle, pyflakes, import order, bugbear, pyupgrade) and mypy (strict on the
# router contract, evaluation and the containers they exchange; see [tool.mypy] in pyproject.toml).
LINT_PATHS := src tests bench registry_scripts scripts

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

test: install java lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# A throwaway team server on loopback (PostgreSQL + mlflow server): prints the env lines to use it.
server: install
	PYTHON=$(BIN)/python scripts/mlflow_server.sh start

server-stop:
	PYTHON=$(BIN)/python scripts/mlflow_server.sh stop

bench: install
	$(BIN)/python bench/sweep.py

clean:
	rm -rf $(VENV) .mmroute mlflow.db mlartifacts
