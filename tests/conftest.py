"""Shared pytest fixtures."""
import os

import pytest


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node SLURM cluster for the session (tests/slurm_cluster.py): `.conf_path`, `.env`
    (os.environ + SLURM_CONF, for subprocesses), `.partition`, `.node`, `.run(*cmd)`, `.job_state(id)`,
    `.log_tail()`. Skips where it cannot run (not root; no SLURM and no apt-get to install it); with
    SG2VIDEO_REQUIRE_SLURM=1 (CI) it fails instead of skipping."""
    from slurm_cluster import ClusterUnavailable, SlurmCluster

    try:
        cluster = SlurmCluster.start()
    except ClusterUnavailable as reason:
        if os.environ.get("SG2VIDEO_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM test cluster unavailable: {reason}")
        pytest.skip(f"SLURM test cluster unavailable: {reason}")
    yield cluster
    cluster.stop()
