"""A throwaway single-node SLURM cluster for the tests (used by the `slurm_cluster` fixture in conftest.py).

`SlurmCluster.start()` writes a slurm.conf into a fresh temporary directory (state, spool, pid and log files
live there too, so nothing is left from an earlier run), starts munged if none is answering, then slurmctld and
slurmd in the foreground with `-f` that file, and waits until the node is idle. `stop()` cancels the jobs and
stops, by pid, only the daemons it started. Clients reach the cluster through `cluster.env` (SLURM_CONF).

By hand: `python tests/slurm_cluster.py` starts one and prints the `export SLURM_CONF=...` line; Ctrl-C stops it.
"""
from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / ".ci" / "install-slurm.sh"
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
PARTITION = "debug"

# Test-friendly timings: SIGKILL 2 s after the SIGTERM of a cancel or requeue (default 30 s), and a requeued job
# may start again 10 s after the requeue (the credential lifetime; default 120 s). The schedulers look at the
# queue every few seconds instead of every minute.
SLURM_CONF_TEMPLATE = """\
# Written by tests/slurm_cluster.py: a single-node test cluster. Everything it writes lives under {root}.
ClusterName=sg2video-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MpiDefault=none
# No slurmdbd: `sacct` answers "accounting storage is disabled"; submitit then watches for its result files.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
KillWait=2
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the test cluster (the message says why); the fixture skips on it."""


def unavailable_reason() -> str | None:
    """Why a cluster cannot start here, or None. Installs the packages first when they are missing and apt is there."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the SLURM test cluster needs root (slurmctld/slurmd run as SlurmUser=root)"
    if all(shutil.which(b) for b in BINARIES):
        return None
    if not shutil.which("apt-get"):
        missing = [b for b in BINARIES if not shutil.which(b)]
        return f"SLURM binaries missing ({', '.join(missing)}) and no apt-get to install them"
    done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    if done.returncode != 0 or not all(shutil.which(b) for b in BINARIES):
        return f"{INSTALL_SCRIPT.name} could not install SLURM: {(done.stdout + done.stderr).strip()[-500:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    """A RealMemory slurmd accepts: below what it measures, so the node is not drained for 'Low RealMemory'."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return max(int(line.split()[1]) // 1024 - 512, 256)
    return 1024


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so a killed pytest leaves no daemons behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _munge_works() -> bool:
    if not shutil.which("munge"):
        return False
    encode = subprocess.run(["munge", "-n"], capture_output=True)
    return encode.returncode == 0


@dataclass
class SlurmCluster:
    root: Path
    conf_path: Path
    node: str
    partition: str = PARTITION
    started: dict[str, subprocess.Popen] = field(default_factory=dict)  # daemon name -> the process we started

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF: the environment for SLURM clients (sbatch, squeue, a submitit sweep)."""
        return {**os.environ, "SLURM_CONF": str(self.conf_path)}

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (`cluster.run("squeue", "-h")`) against this cluster; text output."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def job_state(self, job_id: str) -> str | None:
        """PENDING, RUNNING, ... while squeue still lists the job; None once it is gone."""
        out = self.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.split()
        return out[0] if out else None

    def log_tail(self, lines: int = 30) -> str:
        """The end of both daemon logs, for failure messages."""
        parts = []
        for name in ("slurmctld", "slurmd"):
            log = self.root / "log" / f"{name}.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
            parts.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(parts)

    @classmethod
    def start(cls, timeout_s: float = 60) -> "SlurmCluster":
        reason = unavailable_reason()
        if reason:
            raise ClusterUnavailable(reason)
        root = Path(tempfile.mkdtemp(prefix="sg2video-slurm-", dir="/tmp"))  # short: slurmd puts sockets here
        for sub in ("state", "spool", "log"):
            (root / sub).mkdir()
        node = socket.gethostname().split(".")[0]
        conf_path = root / "slurm.conf"
        conf_path.write_text(SLURM_CONF_TEMPLATE.format(
            root=root, node=node, ctld_port=_free_port(), slurmd_port=_free_port(), cpus=os.cpu_count() or 1,
            memory_mb=_memory_mb(), partition=PARTITION))
        cluster = cls(root=root, conf_path=conf_path, node=node)
        try:
            cluster._start_munged()
            cluster._spawn("slurmctld", ["slurmctld", "-D", "-f", str(conf_path)])
            cluster._spawn("slurmd", ["slurmd", "-D", "-f", str(conf_path), "-N", node])
            cluster._wait_idle(timeout_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _spawn(self, name: str, command: list[str], user: str | None = None) -> None:
        out = open(self.root / "log" / f"{name}.out", "ab")
        self.started[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                              user=user, preexec_fn=_die_with_parent, start_new_session=True)
        out.close()

    def _start_munged(self) -> None:
        """Reuse a munged that answers; otherwise start one as the munge user (key created if missing)."""
        if _munge_works():
            return
        try:
            munge_user = pwd.getpwnam("munge")
        except KeyError as missing:
            raise ClusterUnavailable("no 'munge' user: is the munge package installed?") from missing
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True)
        os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
        key.chmod(0o400)
        for directory in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
            Path(directory).mkdir(parents=True, exist_ok=True)
            os.chown(directory, munge_user.pw_uid, munge_user.pw_gid)
        # --force: start even when a dead munged left its socket or pid file behind
        self._spawn("munged", ["munged", "--foreground", "--force"], user="munge")
        deadline = time.monotonic() + 15
        while not _munge_works():
            if self.started["munged"].poll() is not None or time.monotonic() > deadline:
                log = (self.root / "log" / "munged.out").read_text(errors="replace")[-500:]
                raise ClusterUnavailable(f"munged did not start: {log}")
            time.sleep(0.1)

    def _wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            for name, proc in self.started.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.log_tail()}")
            done = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False, timeout=10)
            state = done.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"node {self.node} not idle after {timeout_s:.0f} s (state {state!r})\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20) -> None:
        """Cancel every job, stop the daemons this object started (slurmd, slurmctld, then munged) and wait."""
        if "slurmctld" in self.started and self.started["slurmctld"].poll() is None:
            jobs = self.run("squeue", "-h", "-o", "%A", check=False, timeout=10).stdout.split()
            if jobs:
                self.run("scancel", *sorted(set(jobs)), check=False, timeout=10)
                deadline = time.monotonic() + timeout_s  # let slurmd kill the job steps (KillWait=2)
                while time.monotonic() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                    time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.started.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill PID` stops it cleanly, like Ctrl-C
    started = time.monotonic()
    cluster = SlurmCluster.start()
    print(f"cluster up in {time.monotonic() - started:.1f} s; partition {cluster.partition}", flush=True)
    print(f"export SLURM_CONF={cluster.conf_path}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
