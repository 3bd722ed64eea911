"""The experiment entry point: `python src/run.py [stage=all|encoder|diffusion|eval] [overrides]`.

Sweeps: `python src/run.py -m model.cond=crossattn,concat` (add `hydra/launcher=slurm` for SLURM).
"""
import os
import sys

# CPU runs share their cores with other processes; spinning OpenMP threads then waste most of a step
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from omegaconf import DictConfig

from sg2video.cli import preflight
from sg2video.config import register_resolvers, validate
from sg2video.errors import exit_on_user_error

register_resolvers()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    from sg2video.pipeline import run_pipeline

    return run_pipeline(cfg)


if __name__ == "__main__":
    preflight("config", sys.argv[1:], validate)
    main()
