"""The Hydra launcher configs (conf/hydra/launcher/): they compose, and sweeps run on a real SLURM cluster
(the `slurm_cluster` fixture) with one directory per job and resume in that directory after a requeue.

The sweeps run tests/apps/sweep_app.py, a tiny Hydra app whose config takes the launchers from conf/.
"""
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

APP = Path(__file__).parent / "apps" / "sweep_app.py"
APP_CONF = APP.parent / "conf"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"


@pytest.fixture(autouse=True)
def repo_conf_dir(monkeypatch):
    """Where the app's config finds the launcher group (sweep_app.py sets the same when run as a program)."""
    monkeypatch.setenv("SG2VIDEO_CONF_DIR", str(Path(__file__).resolve().parents[1] / "conf"))


def compose_launcher(launcher: str):
    with initialize_config_dir(config_dir=str(APP_CONF), version_base=None):
        cfg = compose("sweep", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    return cfg.hydra.launcher


@pytest.mark.parametrize("launcher, target", [
    ("local", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
    ("submitit_local", f"{SUBMITIT}.LocalLauncher"),
    ("slurm", f"{SUBMITIT}.SlurmLauncher"),
])
def test_launcher_configs_compose(launcher, target):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launcher_cfg = compose_launcher(launcher)
    assert launcher_cfg._target_ == target
    # A conf file named like a plugin config is silently merged with it ("automatic schema matching").
    assert not [w for w in caught if "ConfigStore schema" in str(w.message)]


def test_local_launcher_is_the_default():
    with initialize_config_dir(config_dir=str(APP_CONF), version_base=None):
        cfg = compose("sweep", return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")


def test_slurm_launcher_config(monkeypatch):
    monkeypatch.delenv("SG2VIDEO_PARTITION", raising=False)
    slurm = compose_launcher("slurm")
    assert slurm.partition is None  # the cluster's default partition
    assert slurm.timeout_min >= 60 and slurm.nodes == 1 and slurm.tasks_per_node == 1
    assert slurm.cpus_per_task >= 1 and slurm.mem_gb >= 1 and slurm.gpus_per_node is None
    assert slurm.max_num_timeout > 0 and slurm.additional_parameters.requeue is True
    setup = OmegaConf.to_container(slurm.setup, resolve=True)
    assert any("SRUN_CPUS_PER_TASK" in line for line in setup) and "export HF_HUB_OFFLINE=1" in setup
    # the submitit pickles go next to the jobs, one folder per SLURM job id
    assert OmegaConf.to_container(slurm, resolve=False)["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"

    monkeypatch.setenv("SG2VIDEO_PARTITION", "gpu")
    assert compose_launcher("slurm").partition == "gpu"


def slurm_sweep(cluster, sweep_dir: str, *overrides: str) -> list[str]:
    """The command line of a multirun of the sweep app on the test cluster (small jobs: 1 CPU, 1 GB)."""
    return [sys.executable, str(APP), "-m", *overrides, "hydra/launcher=slurm",
            f"hydra.launcher.partition={cluster.partition}", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={sweep_dir}"]


def failure_report(done, cluster, sweep_dir: Path) -> str:
    logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                     for p in sorted(sweep_dir.glob(".submitit/*/*_log.*")))
    return f"rc={done.returncode}\n{done.stdout[-3000:]}\n{logs}\n{cluster.log_tail()}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_job_sweep_on_slurm(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    started = time.monotonic()
    done = subprocess.run(slurm_sweep(slurm_cluster, str(sweep_dir), "x=1,2"), env=slurm_cluster.env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    seconds = time.monotonic() - started
    assert done.returncode == 0, failure_report(done, slurm_cluster, sweep_dir)

    results = {num: json.loads((sweep_dir / str(num) / "result.json").read_text()) for num in (0, 1)}
    for num, result in results.items():
        assert result["job_num"] == num and result["x"] == num + 1
        assert result["output_dir"] == str(sweep_dir / str(num))  # one directory per job, named by its number
    slurm_ids = {result["slurm_job_id"] for result in results.values()}
    assert None not in slurm_ids and len(slurm_ids) == 2, results
    # both jobs are tasks of one SLURM job array: submitit job ids ARRAY_0 and ARRAY_1
    array_ids = {result["job_id"].split("_")[0] for result in results.values()}
    assert len(array_ids) == 1 and sorted(r["job_id"].split("_")[1] for r in results.values()) == ["0", "1"]
    print(f"2-job SLURM sweep: {seconds:.1f} s")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_requeued_job_resumes_in_its_directory(slurm_cluster, tmp_path):
    # A sweep directory named down to the microsecond: were it resolved again when the job restarts, the
    # restart would land in a new directory and start over.
    command = slurm_sweep(slurm_cluster, f"{tmp_path}/${{now:%H-%M-%S-%f}}", "x=7", "steps=20", "step_s=0.5")
    sweep = subprocess.Popen(command, env=slurm_cluster.env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not [p for p in tmp_path.glob("*/0/progress.log") if "step 3\n" in p.read_text()]:
            assert sweep.poll() is None, sweep.stdout.read()
            assert time.monotonic() < deadline, f"no progress after 120 s\n{slurm_cluster.log_tail()}"
            time.sleep(0.2)
        [job_dir] = [p.parent for p in tmp_path.glob("*/0/progress.log")]
        job_id = job_dir.joinpath("progress.log").read_text().split("slurm_job_id=")[1].split()[0]
        assert slurm_cluster.job_state(job_id) == "RUNNING"
        slurm_cluster.run("scontrol", "requeue", job_id)
        output, _ = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 0, output

    # the same directory, nothing beside it: one sweep directory holding one job directory
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [job_dir.parent]
    assert [p for p in job_dir.parent.iterdir() if p.is_dir() and not p.name.startswith(".")] == [job_dir]
    log = job_dir.joinpath("progress.log").read_text().splitlines()
    restart_at = [i for i, line in enumerate(log) if line.startswith("start")]
    assert len(restart_at) == 2, log
    first, resumed = log[restart_at[0]].split(), log[restart_at[1]].split()
    assert first[1:3] == ["0", "restarts=0"], log
    resumed_step = int(resumed[1])
    assert resumed_step >= 3 and resumed[2] == "restarts=1", log  # continued, not started over
    assert resumed[3] == f"slurm_job_id={job_id}"  # submitit's job keeps its SLURM id across the requeue
    steps_before = [int(line.split()[1]) for line in log[restart_at[0] + 1:restart_at[1]]]
    steps_after = [int(line.split()[1]) for line in log[restart_at[1] + 1:]]
    # The first run may be killed between saving step k and logging it: its last logged step is k or k - 1.
    assert steps_before == list(range(1, len(steps_before) + 1)) and len(steps_before) in (resumed_step - 1, resumed_step)
    assert steps_after == list(range(resumed_step + 1, 21)), log
    assert json.loads(job_dir.joinpath("state.json").read_text()) == {"step": 20}
    assert json.loads(job_dir.joinpath("result.json").read_text())["x"] == 7
