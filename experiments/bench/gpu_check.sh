#!/usr/bin/env bash
# The GPU checks in one go (about 8 minutes on one GPU): the `gpu` tests (smoke run on CUDA in fp32 and bf16,
# sample.py on CUDA, train.compile, a bitwise resume with train.deterministic), then the GPU figures of
# bench_gpu.py. Run from the repository root after `make .venv/.installed` (or with `pip install -e ".[dev,bench]"`).
#   bash experiments/bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export OMP_WAIT_POLICY=PASSIVE
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device here')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
"$PY" experiments/bench/bench_gpu.py "$@"
