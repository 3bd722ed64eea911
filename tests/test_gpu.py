"""The CUDA path end to end, for whoever has a GPU (`pytest -m gpu`; experiments/bench/gpu_check.sh runs these and
prints GPU figures). Without CUDA every test here is skipped with that reason.

- the smoke experiment (every stage, layout included) on CUDA in fp32 and bf16, in pixel and latent space;
- `sample.py` on CUDA: a box-free timeline longer than the model's clip;
- `train.compile=true`;
- a resumed run on CUDA ends where an uninterrupted one does, bitwise, with `train.deterministic=true`;
- every random draw of sampling happens on the device: the same seed gives the same video twice.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_pipeline import SMOKE, run_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)"),
]

CUDA = ["device=cuda", "cache_dir=null"]


def run_ok(*args: str, timeout: int = 900) -> None:
    proc = run_cli("run.py", *args, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_smoke_runs_every_stage_on_cuda(tmp_path, precision, space):
    run_dir = tmp_path / "run"
    run_ok(*SMOKE, *CUDA, f"train.precision={precision}", f"diffusion.space={space}", "autoencoder.train.max_steps=3",
           f"hydra.run.dir={run_dir}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval"]["num_samples"] == 4 and "relation_accuracy" in metrics["eval"]
    assert metrics["layout"]["steps"] == 3
    state = torch.load(run_dir / "checkpoints" / "diffusion" / "last.pt", weights_only=True)
    assert state["finished"] and state["config"]["device"] == "cuda"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_sample_cli_draws_a_box_free_timeline_on_cuda(tmp_path):
    run_dir = tmp_path / "run"
    run_ok(*SMOKE, *CUDA, f"hydra.run.dir={run_dir}")
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"objects": ["red circle", "blue square"],
                                 "timeline": [{"frames": [0, 6], "relations": [[0, "left of", 1]]},
                                              {"frames": [6, 10], "relations": [[0, "above", 1]]}]}))
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        proc = run_cli("sample.py", f"ckpt={run_dir / 'checkpoints' / 'diffusion' / 'last.pt'}", f"graph={graph}",
                       "device=cuda", "num=2", "seed=3", f"out={out}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append([np.load(out / f"sample_{i:03d}.npy") for i in range(2)])
    assert outs[0][0].shape == (10, 16, 16, 3)
    assert all(np.array_equal(a, b) for a, b in zip(*outs))  # every draw from the seeded generator on the device


def test_compiled_training_runs_on_cuda(tmp_path):
    run_dir = tmp_path / "run"
    run_ok(*SMOKE, *CUDA, "train.compile=true", "stage=encoder", f"hydra.run.dir={run_dir}")
    state = torch.load(run_dir / "checkpoints" / "encoder" / "last.pt", weights_only=True)
    assert state["finished"] and state["step"] == 4


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "diffusion" / "last.pt", weights_only=True)["model"]


def test_a_resumed_cuda_run_is_bitwise_an_uninterrupted_one_with_deterministic_kernels(tmp_path):
    import shutil

    common = [*SMOKE, *CUDA, "train.deterministic=true", "train.ckpt_every=3", "train.max_steps=6"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_ok(*common, f"hydra.run.dir={whole}")
    shutil.copytree(whole, resumed)
    # as if killed after step 3: its checkpoint is the newest one left
    checkpoints = resumed / "checkpoints" / "diffusion"
    shutil.copy(checkpoints / "step_0000003.pt", checkpoints / "last.pt")
    (checkpoints / "step_0000006.pt").unlink()
    proc = run_cli("run.py", *common, f"hydra.run.dir={resumed}", "stage=diffusion")
    assert proc.returncode == 0 and "[diffusion] resuming from step 3" in proc.stdout, proc.stderr[-2000:]
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_deterministic_cuda_runs_give_the_same_weights(tmp_path):
    runs = [tmp_path / "one", tmp_path / "two"]
    for run_dir in runs:
        run_ok(*SMOKE, *CUDA, "train.deterministic=true", "stage=all", f"hydra.run.dir={run_dir}")
    a, b = (_weights(r) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
