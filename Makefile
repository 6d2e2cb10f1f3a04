# The two quick-start commands: `make run` (the main job on the embedded default) and `make test`.
# Both create the virtual environment on first use; nothing needs to be installed beforehand but python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Tests run on CPU with two xdist workers; one BLAS/torch thread each avoids oversubscribing 2 cores.
PYTEST_ARGS ?= -n 2 --dist loadfile
EXPERIMENT ?= mmroute

.PHONY: install run test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The experiment is created first by mmroute so that its artifacts go to ./mlartifacts (a bare
# `mlflow run .` uses the Default experiment, whose artifact root MLflow puts under ./mlruns).
run: install
	$(BIN)/python -c "from mmroute.tracking import setup_tracking; setup_tracking('$(EXPERIMENT)')"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . --env-manager local --experiment-name $(EXPERIMENT)

test: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/sweep.py

clean:
	rm -rf $(VENV) .mmroute mlflow.db mlartifacts
