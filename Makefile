# Quick start: `make run` (the default experiment on the built-in shapes world) and `make test`.
# Both create the virtual environment on first use. torch comes from the package registry (its CUDA
# build runs on CPU too); PIP_FIND_LINKS is cleared so a local CPU-only torch wheel is not picked up.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := PIP_FIND_LINKS= $(VENV)/bin/pip

.PHONY: run test test-fast bench clean-outputs

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) src/run.py $(ARGS)

# two workers (pytest-xdist): the suite is mostly subprocesses and small nets, so both cores stay busy
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup $(ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadgroup -m "not slow" $(ARGS)

bench: $(VENV)/.installed  # the CPU benchmarks (experiments/bench/gpu_check.sh is the GPU one)
	$(PIP) install -q -e ".[dev,bench]"
	for script in experiments/bench/bench_*.py; do [ "$$script" = experiments/bench/bench_gpu.py ] || $(PY) $$script || exit 1; done

clean-outputs:
	rm -rf outputs/runs outputs/sweeps outputs/cache
