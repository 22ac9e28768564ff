# Two commands do all set-up: `make demo` and `make test`. Each creates .venv and
# installs the project with every extra from the pinned constraints.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-gpu bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[torch,tensorflow,jax,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/chapter.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/save_load.py --size small

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis

# Checks that need a CUDA device (not part of `make test`).
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q tests_gpu
