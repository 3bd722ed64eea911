"""The real pipeline (src/run.py, the smoke experiment) as sweeps on a real single-node SLURM cluster (the
`slurm_cluster` fixture): a 2-job sweep runs as one job array with one directory per job, and a job requeued
in the middle of its diffusion training resumes from its checkpoint in the same directory.

tests/test_slurm.py checks the same launcher with a toy app; these run the project's own stages.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sg2video.cli import REPO_ROOT

RUN = REPO_ROOT / "src" / "run.py"
STEPS = 200  # diffusion steps of the requeued run (a requeue lets it run on for ~5 s: ~50 steps here)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def slurm_sweep(cluster, sweep_dir: Path, *overrides: str) -> list[str]:
    """A multirun of the smoke experiment on the test cluster (small jobs: 1 CPU, 1 GB)."""
    return [sys.executable, str(RUN), "-m", "+experiment=smoke", *overrides, "hydra/launcher=slurm",
            f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}",
            f"cache_dir={sweep_dir.parent / 'cache'}"]


def job_logs(sweep_dir: Path) -> dict[str, str]:
    """submitit's stdout + stderr of each SLURM job (named by its folder, the job id), joined."""
    logs: dict[str, str] = {}
    for path in sorted(sweep_dir.glob(".submitit/*/*_log.*")):
        logs[path.parent.name] = logs.get(path.parent.name, "") + path.read_text(errors="replace")
    return logs


def failure_report(output: str, cluster, sweep_dir: Path) -> str:
    logs = "\n".join(f"--- {name}\n{text[-2500:]}" for name, text in job_logs(sweep_dir).items())
    return f"{output[-3000:]}\n{logs}\n{cluster.log_tail()}"


def hydra_job_id(job_dir: Path) -> str:
    """The submitit job id Hydra recorded for the job ("ARRAY_TASK")."""
    return str(yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"])


def test_smoke_sweep_runs_as_a_job_array(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    started = time.monotonic()
    done = subprocess.run(slurm_sweep(slurm_cluster, sweep_dir, "model.cond=adm,none"), env=slurm_cluster.env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=360)
    seconds = time.monotonic() - started
    assert done.returncode == 0, failure_report(done.stdout + done.stderr, slurm_cluster, sweep_dir)

    for num, cond in ((0, "adm"), (1, "none")):
        job_dir = sweep_dir / str(num)
        assert f"model.cond={cond}" in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert metrics["eval"]["num_samples"] == 4 and "g2v_top1" in metrics["encoder"]
        state = torch.load(job_dir / "checkpoints" / "diffusion" / "last.pt", weights_only=True)
        assert state["finished"] and state["step"] == 3 and state["config"]["model"]["cond"] == cond
        assert list((job_dir / "tb" / "hparams").glob("events.out.tfevents.*"))
    # one SLURM job array, tasks 0 and 1, each job in the directory named by its number
    ids = [hydra_job_id(sweep_dir / str(num)) for num in (0, 1)]
    assert len({i.split("_")[0] for i in ids}) == 1 and [i.split("_")[1] for i in ids] == ["0", "1"], ids
    # the two tasks share one encoder config: the stage cache trained it once, across SLURM jobs
    logs = job_logs(sweep_dir)
    assert sorted(logs) == sorted(ids), logs.keys()
    assert sum("[encoder] reusing cached stage" in text for text in logs.values()) == 1, logs
    print(f"2-job smoke sweep on SLURM: {seconds:.1f} s")


def diffusion_step(job_dir: Path) -> int:
    """The step of the job's newest diffusion checkpoint (0 while there is none)."""
    path = job_dir / "checkpoints" / "diffusion" / "last.pt"
    if not path.exists():
        return 0
    try:  # written by rename, so a file that exists is whole; be lenient all the same
        return int(torch.load(path, weights_only=True)["step"])
    except Exception:
        return 0


def test_requeued_run_resumes_its_diffusion_training(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    job_dir = sweep_dir / "0"
    # STEPS: long enough that the requeue (SIGTERM, then SIGKILL a few seconds later) lands mid-training
    command = slurm_sweep(slurm_cluster, sweep_dir, "model.cond=adm", f"train.max_steps={STEPS}", "train.ckpt_every=5")
    sweep = subprocess.Popen(command, env=slurm_cluster.env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while (step := diffusion_step(job_dir)) < 5:
            assert sweep.poll() is None, failure_report(sweep.stdout.read(), slurm_cluster, sweep_dir)
            assert time.monotonic() < deadline, f"no diffusion checkpoint after 240 s\n{slurm_cluster.log_tail()}"
            time.sleep(0.5)
        assert step < STEPS, "the job finished before it could be requeued (make the run longer)"
        [slurm_id] = slurm_cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%A").stdout.split()
        slurm_cluster.run("scontrol", "requeue", slurm_id)
        output, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, failure_report(output, slurm_cluster, sweep_dir)

    # one job directory, finished: the restart went on in it rather than in a new one
    assert [p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] == ["0"]
    state = torch.load(job_dir / "checkpoints" / "diffusion" / "last.pt", weights_only=True)
    assert state["finished"] and state["step"] == STEPS
    assert json.loads((job_dir / "metrics.json").read_text())["eval"]["num_samples"] == 4
    [log] = job_logs(sweep_dir).values()
    resumed = [int(n) for n in re.findall(r"\[diffusion\] resuming from step (\d+)", log)]
    # continued from its checkpoint, not from 0, and before the end: the restart trained the rest
    assert len(resumed) == 1 and step <= resumed[0] < STEPS, log[-4000:]
    assert log.count("[diffusion] starting") == 2  # both attempts append to the job's log
    assert log.count("[encoder] retrieval on held-out clips") == 1  # the finished encoder was not trained again
    print(f"requeued at step >= {step}, resumed from step {resumed[0]}")


def test_a_failed_job_on_slurm_is_recorded_and_the_array_runs_the_others(slurm_cluster, tmp_path):
    from test_experiments import FAILING_SWEEP, assert_one_failed_job_and_two_finished

    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(slurm_sweep(slurm_cluster, sweep_dir, *FAILING_SWEEP), env=slurm_cluster.env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=360)
    assert done.returncode == 1, failure_report(done.stdout + done.stderr, slurm_cluster, sweep_dir)
    assert_one_failed_job_and_two_finished(sweep_dir, done.stderr)
    ids = [hydra_job_id(sweep_dir / str(num)) for num in (0, 1, 2)]
    assert len({i.split("_")[0] for i in ids}) == 1  # one job array, the failed task among the others
