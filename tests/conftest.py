"""Shared pytest fixtures."""
import os

# `make test` runs two workers on two cores: OpenMP threads that spin while they wait, or a second torch thread
# per worker, make the workers fight for the cores (a 40 s fixture took 13 minutes that way)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from sg2video.config import register_resolvers  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), every test on the SLURM cluster runs in one worker, so
    one cluster serves them all; and the tests of a module that share a module-scoped fixture (a trained model, a
    run) run in one worker, so the fixture is built once, not once per worker (the expensive ones are
    session-scoped: a worker may run other modules' tests in between, which would tear a module fixture down)."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
            continue
        info = getattr(item, "_fixtureinfo", None)
        shared = info is not None and any(
            definition.scope in ("module", "session") and definition.baseid == item.nodeid.split("::")[0]
            for definitions in info.name2fixturedefs.values() for definition in definitions)
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
