"""A tiny Hydra app for the launcher tests (tests/test_slurm.py).

Each job writes result.json into its own output directory: its value, Hydra job number and id, SLURM_JOB_ID
and the directory. With steps > 0 it first counts steps, saving the count to state.json after each one and
resuming from it when present, and logs every (re)start to progress.log: a requeued job shows a second
`start` line that continues where the first stopped, in the same directory.
"""
import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# The launcher configs live in the repository's conf/ (see conf/sweep.yaml's searchpath).
os.environ.setdefault("SG2VIDEO_CONF_DIR", str(Path(__file__).resolve().parents[2] / "conf"))


def write_atomic(path: Path, text: str) -> None:
    """A requeue kills the job at any moment: write a temp file and rename it, so state.json is whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def count_steps(out: Path, steps: int, step_s: float) -> None:
    state_path = out / "state.json"
    step = json.loads(state_path.read_text())["step"] if state_path.exists() else 0
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    with open(out / "progress.log", "a") as log:
        log.write(f"start {step} restarts={restarts} slurm_job_id={os.environ.get('SLURM_JOB_ID')}\n")
        log.flush()
        while step < steps:
            time.sleep(step_s)
            step += 1
            write_atomic(state_path, json.dumps({"step": step}))
            log.write(f"step {step}\n")
            log.flush()


@hydra.main(version_base=None, config_path="conf", config_name="sweep")
def main(cfg: DictConfig) -> int:
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    if cfg.steps > 0:
        count_steps(out, cfg.steps, cfg.step_s)
    record = {
        "x": cfg.x,
        "job_num": hydra_cfg.job.num,
        "job_id": hydra_cfg.job.get("id"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "output_dir": str(out),
    }
    write_atomic(out / "result.json", json.dumps(record))
    return cfg.x


if __name__ == "__main__":
    main()
