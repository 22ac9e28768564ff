# Two commands do all set-up: `make demo` and `make test`. Each creates .venv (and the
# MXNet side environment .venv-mxnet) and installs the project with every extra from the
# pinned constraints. pip compiles every installed module to bytecode on one core (2 of the
# 3.3 minutes of the install here); `--no-compile` and then compileall on every core do the
# same in half the time. The bytecode must be there: with PYTHONDONTWRITEBYTECODE set (as on
# the CI machines) Python would otherwise compile torch and TensorFlow again in every process.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Real MXNet 1.9.1 needs numpy<1.24, so it lives in its own environment.
MXVENV := .venv-mxnet
MXSTAMP := $(MXVENV)/.installed

.PHONY: envs demo test test-bench docs test-gpu bench bench-gpu bench-full clean fuzz crash-long

# Bytecode of every module of an environment on every core, then a check that it is there (torch's).
COMPILE = -m compileall -q -j 0 $$(PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null
HAS_BYTECODE = -c 'import importlib.util as u, os, sysconfig; p = os.path.join(sysconfig.get_paths()["purelib"], "$(1)", "__init__.py"); assert os.path.exists(u.cache_from_source(p)), "no bytecode for " + p'

# The editable install of the project (setuptools writes src/*.egg-info) runs in one environment at a time:
# the side environment's third-party packages install beside .venv's, its `-e .` after.
$(VENV)/.pip: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -c constraints.txt -e '.[torch,tensorflow,jax,report,dev]'
	touch $@

$(STAMP): $(VENV)/.pip
	$(subst PY,$(BIN)/python,$(BIN)/python $(COMPILE)) || true  # a module that does not compile (test data) is skipped, as pip does
	$(BIN)/python $(call HAS_BYTECODE,torch)
	touch $(STAMP)

$(MXVENV)/.pip: constraints-mxnet.txt
	$(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/pip install --quiet --upgrade pip
	$(MXVENV)/bin/pip install --quiet --no-compile -c constraints-mxnet.txt mxnet numpy pytest
	touch $@

$(MXSTAMP): pyproject.toml $(MXVENV)/.pip $(VENV)/.pip
	$(MXVENV)/bin/pip install --quiet --no-compile -c constraints-mxnet.txt -e .
	$(subst PY,$(MXVENV)/bin/python,$(MXVENV)/bin/python $(COMPILE)) || true
	$(MXVENV)/bin/python $(call HAS_BYTECODE,mxnet)
	touch $(MXSTAMP)

# Both environments, made side by side (pip waits on downloads and unpacking as much as on the CPU).
envs:
	$(MAKE) --no-print-directory -j2 $(STAMP) $(MXSTAMP)

demo: envs
	$(BIN)/python examples/chapter.py

test: envs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
	$(MXVENV)/bin/python -m pytest -q tests/mxnet

# The benchmark scripts' smoke runs (tests_bench/: minutes of fresh processes; run by .ci/run after make test).
test-bench: $(STAMP)
	$(BIN)/python -m pytest -q tests_bench

# The API reference, generated from the docstrings with pdoc into build/api (git-ignored); any warning fails it.
docs: $(STAMP)
	$(BIN)/python tools/api_docs.py build/api

# Checks that need a CUDA device (not part of `make test`); both fail, never skip, without one.
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q tests_gpu

# The GPU path against torch.load, safetensors and DCP's async_save (docs/PERFORMANCE.md, "The GPU path").
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --size full --repeat 5

# Coverage-guided fuzzing of every reader with atheris (not part of `make test`): each target of
# fuzz/targets.py runs for FUZZ_SECONDS, one process at a time; failures land in fuzz/crashes/<target>/,
# the summary in docs/FUZZING.md. FUZZ_ARGS="--formats npy,torch --promote" picks targets and copies
# each failure into tests/regressions/.
FUZZ_SECONDS ?= 360
FUZZ_ARGS ?=
fuzz: $(STAMP)
	$(BIN)/pip install --quiet atheris==3.0.0
	$(BIN)/python fuzz/seed_corpus.py
	$(BIN)/python fuzz/run_all.py --seconds $(FUZZ_SECONDS) --report docs/FUZZING.md $(FUZZ_ARGS)

# Benchmarks (not part of `make test`; results in docs/PERFORMANCE.md). `make bench` is a quick
# small-size pass (a few minutes); `make bench-full` the full-size runs the docs quote (about 45
# minutes). Loads and saves run each measurement in a fresh process. A script exits 3 when a target
# is missed on that run (noise is common at small size): make goes on to the next script and prints
# the misses; any other failure stops it.
BENCH_OK = || [ $$? -eq 3 ]
bench: $(STAMP)
	$(BIN)/python benchmarks/loads.py --size small --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/saves.py --size small --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/tiny.py --counts 5000 --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/checkpoint_stall.py --size small --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/slice_ulimit.py --size small --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/parameters_memory.py --layers 4 --repeat 1 $(BENCH_OK)
	$(BIN)/python benchmarks/convert.py --mib 64 --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/load_model.py --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/cli.py --size small --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/distributed.py --size small --repeat 3 $(BENCH_OK)

bench-full: $(STAMP)
	$(BIN)/python benchmarks/allocators.py --size full --repeat 7
	$(BIN)/python benchmarks/loads.py --size full --repeat 7 $(BENCH_OK)
	$(BIN)/python benchmarks/loads.py --size full --repeat 5 --cold --only "$(COLD_LOADS)" $(BENCH_OK)
	$(BIN)/python benchmarks/saves.py --size full --repeat 7 $(BENCH_OK)
	$(BIN)/python benchmarks/tiny.py --counts 5000,50000 --repeat 7 $(BENCH_OK)
	$(BIN)/python benchmarks/checkpoint_stall.py --size full --repeat 7 $(BENCH_OK)
	$(BIN)/python benchmarks/slice_ulimit.py --size full --repeat 7 $(BENCH_OK)
	$(BIN)/python benchmarks/parameters_memory.py --layers 8 --repeat 3 $(BENCH_OK)
	$(BIN)/python benchmarks/convert.py --mib 1024 --repeat 7 $(BENCH_OK)
	$(BIN)/python benchmarks/tied.py --repeat 5
	$(BIN)/python benchmarks/load_model.py --repeat 9 $(BENCH_OK)
	$(BIN)/python benchmarks/cli.py --size full --repeat 5 $(BENCH_OK)
	$(BIN)/python benchmarks/distributed.py --size full --repeat 7 $(BENCH_OK)

# The long crash runs quoted in docs/RELIABILITY.md: 200 SIGKILLs mid-epoch (torch), 50 for Flax NNX, 30 for Keras;
# 100 each for incremental checkpoints (sync, and async mid-epoch).
crash-long: $(STAMP)
	$(BIN)/python benchmarks/crash_harness.py --mode torch-epochs --kills 200 --epochs 150
	$(BIN)/python benchmarks/crash_harness.py --mode nnx-epochs --kills 50 --epochs 120 --max-delay 2.5 --async
	$(BIN)/python benchmarks/crash_harness.py --mode keras-epochs --kills 30 --epochs 1500 --max-delay 8
	$(BIN)/python benchmarks/crash_harness.py --mode torch --kills 100 --incremental
	$(BIN)/python benchmarks/crash_harness.py --mode torch-epochs --kills 100 --epochs 110 --incremental --async

COLD_LOADS = tensorfile.load;torch.load(weights_only=True);safetensors load_file + write touch;safetensors load_file + read touch;.pt by tensorfile, no torch;CheckpointManager.restore;tensorfile verify;raw preadv, one thread

clean:
	rm -rf $(VENV) $(MXVENV) build src/*.egg-info .pytest_cache .hypothesis
