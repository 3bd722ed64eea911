"""The experiment entry point: `python src/run.py [stage=all|encoder|diffusion|eval] [overrides]`.

Sweeps: `python src/run.py -m model.cond=crossattn,concat` (add `hydra/launcher=slurm` for SLURM).
"""
import os
import sys

# CPU runs share their cores with other processes; spinning OpenMP threads then waste most of a step
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from sg2video.cli import preflight, run_job
from sg2video.config import register_resolvers, validate

register_resolvers()


def run(cfg: DictConfig) -> float | None:
    from sg2video.pipeline import run_pipeline

    return run_pipeline(cfg)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_job(run, cfg)  # in a sweep, a failed job is recorded and the next one runs


if __name__ == "__main__":
    preflight("config", sys.argv[1:], validate)
    main()
