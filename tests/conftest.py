"""Shared pytest fixtures."""
import os

import pytest

from sg2video.config import register_resolvers

# Composing conf/ needs its resolvers and the schemas (sg2video.schema) in Hydra's ConfigStore, as the CLIs do.
register_resolvers()


@pytest.fixture
def one_thread():
    """torch on one thread for the test, the setting given back afterwards. The nets in unit tests are tiny: a
    second thread's fork/join per op costs more than it saves (10x slower on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), every test on the SLURM cluster runs in one worker, so
    one cluster serves them all."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
