"""The training loop's reliability (sg2video.train: loop, checkpoint, distributed) on a toy task.

A run killed by a real SIGKILL and restarted equals an uninterrupted one bit for bit (model, EMA,
optimizer, RNG); a kill while a checkpoint is being written never breaks `last.pt`; a damaged `last.pt`
falls back to a step file; non-finite losses are skipped, then stop the run; 2-process gloo DDP under
torchrun equals one process at the same global batch; the wall-clock budget stops and saves.

The toy task and its command line are tests/apps/toy_train.py. Subprocesses run with one thread
(OMP_NUM_THREADS=1) and in-process runs set one thread too, so bitwise comparisons compare like with like.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from sg2video.errors import ConfigError
from sg2video.train.checkpoint import (
    CheckpointError,
    atomic_save,
    load_checkpoint,
    load_latest,
    save_training_checkpoint,
    step_path,
)
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import Hook, StepBatchSampler, TrainingError

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))
import toy_train  # noqa: E402

TOY = APPS / "toy_train.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# 2-process DDP vs one process at the same global batch: the gradients are averaged in a different
# order ((mean of 4 + mean of 4) / 2 vs mean of 8); measured max |difference| after 6 Adam steps:
# 1.5e-8 on the parameters and the EMA (printed with -s). It stays at float32 rounding.
DDP_ATOL = 1e-6


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_toy(run_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOY), str(run_dir), *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def ckpt_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / toy_train.STAGE


def assert_same(a, b, where: str = "") -> None:
    """Nested state dicts / lists equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def max_abs_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# -- data order ------------------------------------------------------------------------------------


def test_sampler_ranks_split_the_global_batch_and_resume_mid_stream():
    single = StepBatchSampler(20, 8, 0, 6, seed=3)
    ranks = [StepBatchSampler(20, 8, 0, 6, seed=3, rank=r, world_size=2, grad_accum=2) for r in range(2)]
    for step in range(6):
        expected = single.step_indices(step)[0]
        # rank 0 takes the first half of the global batch (in 2 micro-batches), rank 1 the second
        got = [i for r in ranks for micro in r.step_indices(step) for i in micro]
        assert got == expected and len(expected) == 8
    # every epoch (20 positions) visits every index once
    stream = [i for batch in StepBatchSampler(20, 5, 0, 8, seed=3) for i in batch]
    assert sorted(stream[:20]) == list(range(20)) and sorted(stream[20:]) == list(range(20))
    assert stream[:20] != stream[20:40]  # a new permutation per epoch
    # resuming at step 5 yields exactly the tail of the uninterrupted stream
    assert list(StepBatchSampler(20, 5, 5, 8, seed=3)) == list(StepBatchSampler(20, 5, 0, 8, seed=3))[5:]


# -- resume after SIGKILL --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
    steps, every, die = 30, 8, 13  # killed 5 steps after the checkpoint at step 8
    with one_thread():
        toy_train.train(tmp_path / "a", toy_train.loop_config(max_steps=steps, ckpt_every=every), log=lambda _: None)

    killed = run_toy(tmp_path / "b", "--max-steps", str(steps), "--ckpt-every", str(every), "--die-at-step", str(die))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert f"SIGKILL at step {die}" in killed.stdout
    assert load_checkpoint(ckpt_dir(tmp_path / "b") / "last.pt")["step"] == 8

    resumed = run_toy(tmp_path / "b", "--max-steps", str(steps), "--ckpt-every", str(every))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[toy] resuming from step 8" in resumed.stdout
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["step"] == steps and summary["trained_steps"] == steps - 8

    a = load_checkpoint(ckpt_dir(tmp_path / "a") / "last.pt")
    b = load_checkpoint(ckpt_dir(tmp_path / "b") / "last.pt")
    assert a["step"] == b["step"] == steps and a["finished"] and b["finished"]
    for key in ("model", "ema", "optimizer", "scheduler", "rng_ranks"):
        assert_same(a[key], b[key], key)
    assert a["ema"] is not None and not torch.equal(a["ema"]["0.weight"], a["model"]["0.weight"])
    assert a["optimizer"]["state"][0]["step"].item() == steps


# -- checkpoint files ------------------------------------------------------------------------------

# Imports torch once, then forks one writer per round: each writer saves big checkpoints in a loop
# until the test SIGKILLs it; the zygote reports the writer's exit status.
ZYGOTE = r"""
import os, sys
import torch
from sg2video.train.checkpoint import save_training_checkpoint

directory = sys.argv[1]
for line in sys.stdin:
    first_step = int(line) * 1000
    pid = os.fork()
    if pid == 0:
        step = first_step
        while True:
            step += 1
            payload = torch.full((4_000_000,), float(step))  # 16 MB
            save_training_checkpoint(directory, {"stage": "kill", "step": step, "payload": payload}, keep_last=2)
            print(f"saved {step}", flush=True)
    print(f"writer {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    print(f"status {os.waitstatus_to_exitcode(status)}", flush=True)
"""


def assert_whole(state: dict) -> None:
    assert bool((state["payload"] == float(state["step"])).all()) and state["payload"].numel() == 4_000_000


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_during_checkpoint_writes_never_breaks_last_pt(tmp_path):
    directory = tmp_path / "ckpt"
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(directory)], env=ENV, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    delays = random.Random(8)
    rounds, temps_seen, newest, pid = 0, 0, 0, None
    try:
        while rounds < 5 or (temps_seen == 0 and rounds < 12):
            rounds += 1
            zygote.stdin.write(f"{rounds}\n")
            zygote.stdin.flush()
            lines = iter(zygote.stdout.readline, "")
            pid = int(next(line for line in lines if line.startswith("writer")).split()[1])
            assert next(lines).startswith("saved")  # one whole save in this round, then kill at a random moment
            time.sleep(delays.uniform(0.0, 0.4))
            os.kill(pid, signal.SIGKILL)
            status = next(line for line in lines if line.startswith("status"))
            assert status.split()[1] == str(-signal.SIGKILL)
            pid = None  # reaped

            names = sorted(p.name for p in directory.iterdir())
            temps = [n for n in names if n.endswith(".tmp")]
            assert all(re.fullmatch(r"\.(last\.pt|step_\d{7}\.pt)\.[0-9a-f]{8}\.tmp", n) for n in temps), names
            assert all(re.fullmatch(r"last\.pt|step_\d{7}\.pt", n) for n in names if n not in temps), names
            temps_seen += bool(temps)
            last = load_checkpoint(directory / "last.pt")  # weights_only=True
            assert_whole(last)
            assert last["step"] > newest  # the round's saves got there
            latest = load_latest(directory, warn=pytest.fail)  # nothing unreadable, temp files ignored
            assert_whole(latest)
            assert latest["step"] in (last["step"], last["step"] + 1)  # +1: killed between step_N.pt and last.pt
            newest = latest["step"]
    finally:
        if pid is not None:  # a failed assertion left a writer running
            os.kill(pid, signal.SIGKILL)
        zygote.stdin.close()
        try:
            zygote.wait(timeout=30)
        except subprocess.TimeoutExpired:
            zygote.kill()
            zygote.wait()
    assert temps_seen, f"no kill landed inside a write in {rounds} rounds"
    final = {"stage": "kill", "step": newest + 1, "payload": torch.full((4_000_000,), float(newest + 1))}
    save_training_checkpoint(directory, final)
    assert not list(directory.glob(".*.tmp"))  # the next save removes what killed saves left
    assert sorted(p.name for p in directory.glob("*.pt")) == ["last.pt", step_path(directory, newest).name,
                                                                 step_path(directory, newest + 1).name]


def small_state(step: int) -> dict:
    return {"stage": "toy", "step": step, "model": {"w": torch.full((64,), float(step))}}


def test_damaged_last_pt_is_reported_and_older_checkpoints_are_used(tmp_path):
    directory = tmp_path / "ckpt"
    for step in (2, 4, 6):
        save_training_checkpoint(directory, small_state(step), keep_last=3)
    last = directory / "last.pt"
    shares_file = os.path.samefile(last, step_path(directory, 6))  # last.pt is a hard link where possible

    # garbage written in place of last.pt (a new file)
    garbage = directory / "garbage"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    os.replace(garbage, last)
    with pytest.raises(CheckpointError, match=r"last\.pt: not a readable sg2video checkpoint \("):
        load_checkpoint(last)
    warnings: list[str] = []
    assert load_latest(directory, warn=warnings.append)["step"] == 6
    assert len(warnings) == 1 and "last.pt: not a readable sg2video checkpoint" in warnings[0]

    # last.pt truncated in place (with a hard link, step_6 is the same file and truncated too)
    save_training_checkpoint(directory, small_state(8), keep_last=3)
    size = last.stat().st_size
    with open(last, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(last)
    assert "\n" not in str(err.value) and str(last) in str(err.value)
    warnings.clear()
    fallback = load_latest(directory, warn=warnings.append)
    assert fallback["step"] == (6 if shares_file else 8)
    assert torch.equal(fallback["model"]["w"], torch.full((64,), float(fallback["step"])))
    assert all("not a readable" in w for w in warnings) and len(warnings) == (2 if shares_file else 1)

    # a pickle that is not plain data is refused by weights_only=True, and so is a foreign dict
    atomic_save({"format": 1, "step": 10, "obj": Hook(1, print)}, directory / "unsafe.pt")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(directory / "unsafe.pt")
    torch.save({"step": 3}, directory / "foreign.pt")
    with pytest.raises(CheckpointError, match="no 'format' key"):
        load_checkpoint(directory / "foreign.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(directory / "missing.pt")


def test_load_latest_prefers_newer_step_file_ignores_temps_and_sorts_by_number(tmp_path):
    directory = tmp_path / "ckpt"
    save_training_checkpoint(directory, small_state(4))
    # killed between writing step_6.pt and renaming last.pt: step_6 is the newest work
    atomic_save({"format": 1, **small_state(6)}, step_path(directory, 6))
    (directory / ".last.pt.dead.tmp").write_bytes(b"half a checkpoint")
    assert load_latest(directory, warn=pytest.fail)["step"] == 6
    save_training_checkpoint(directory, small_state(8), keep_last=2)
    assert not (directory / ".last.pt.dead.tmp").exists()
    assert sorted(p.name for p in directory.iterdir()) == ["last.pt", "step_0000006.pt", "step_0000008.pt"]
    # past 7 digits the files are pruned by step number, not by name
    save_training_checkpoint(directory, small_state(9_999_999), keep_last=2)
    save_training_checkpoint(directory, small_state(10_000_000), keep_last=2)
    assert sorted(p.name for p in directory.glob("step_*.pt")) == ["step_10000000.pt", "step_9999999.pt"]
    assert load_latest(directory)["step"] == 10_000_000
    assert (directory / "last.pt").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- non-finite losses -------------------------------------------------------------------------------


def test_nan_loss_step_is_skipped_and_counted(tmp_path):
    snapshots: dict[int, tuple[dict, dict]] = {}

    def snapshot(step, model, ema_model, writer):
        snapshots[step] = ({k: v.clone() for k, v in model.state_dict().items()},
                           {k: v.clone() for k, v in ema_model.state_dict().items()})

    logged: list[str] = []
    with one_thread():
        result = toy_train.train(tmp_path, toy_train.loop_config(max_steps=8, ckpt_every=4), nan_steps={3},
                                 hooks=[Hook(1, snapshot)], log=logged.append)
    # step index 3 (the 4th step) had a NaN loss: the model and the EMA after it equal those before it
    assert_same(snapshots[4], snapshots[3])
    assert not torch.equal(snapshots[5][0]["0.weight"], snapshots[4][0]["0.weight"])
    assert not torch.equal(snapshots[3][0]["0.weight"], snapshots[2][0]["0.weight"])
    assert result.step == 8 and result.finished and result.skipped_steps == 1
    assert [r["step"] for r in result.history] == [1, 2, 3, 5, 6, 7, 8]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert "[toy] step 4: loss not finite, step skipped (1 in a row)" in logged
    last = load_checkpoint(ckpt_dir(tmp_path) / "last.pt")
    assert last["skipped_steps"] == 1 and load_checkpoint(step_path(ckpt_dir(tmp_path), 4))["skipped_steps"] == 1
    assert last["optimizer"]["state"][0]["step"].item() == 7  # 8 steps, 7 optimizer updates


def test_nan_losses_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    with one_thread(), pytest.raises(TrainingError) as err:
        toy_train.train(tmp_path, toy_train.loop_config(max_steps=20, ckpt_every=4, max_bad_steps=3),
                        nan_steps={5, 6, 7}, log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("toy: the loss was not finite for 3 steps in a row (steps 6-8); stopped")
    assert f"last checkpoint: step 4 in {ckpt_dir(tmp_path)}" in message
    last = load_checkpoint(ckpt_dir(tmp_path) / "last.pt")
    assert last["step"] == 4 and not last["finished"] and last["skipped_steps"] == 0
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert sorted(p.name for p in ckpt_dir(tmp_path).iterdir()) == ["last.pt", "step_0000004.pt"]


# -- configuration and budget --------------------------------------------------------------------------


def test_global_batch_must_divide_by_world_size(tmp_path):
    cfg = toy_train.loop_config(batch_size=3)
    with pytest.raises(ConfigError, match=r"train.batch_size=3 must divide evenly into 2 processes x 1 accumulation "
                                          r"steps \(use a multiple of 2\)"):
        toy_train.train(tmp_path, cfg, dist_info=DistInfo(rank=0, world_size=2))
    assert not tmp_path.joinpath("checkpoints").exists()
    with pytest.raises(ConfigError, match="train.max_bad_steps=0 must be >= 1"):
        toy_train.loop_config(max_bad_steps=0).validate(1)


def test_wall_clock_budget_stops_saves_and_counts_across_restarts(tmp_path):
    logged: list[str] = []
    cfg = toy_train.loop_config(max_steps=1000, max_minutes=0.01, ckpt_every=100)  # 0.6 s, 0.05 s a step
    with one_thread():
        result = toy_train.train(tmp_path, cfg, step_sleep=0.05, log=logged.append)
    assert result.finished and 1 <= result.step < 100
    assert f"[toy] wall-clock budget of 0.01 min reached at step {result.step}" in logged
    last = load_checkpoint(ckpt_dir(tmp_path) / "last.pt")
    assert last["step"] == result.step and last["finished"] and 0.6 <= last["elapsed_s"] < 30

    # a restart with the same budget has nothing left to do
    with one_thread():
        again = toy_train.train(tmp_path, cfg, step_sleep=0.05, log=logged.append)
    assert again.step == result.step and again.finished and not again.history
    # without the budget the same run goes on to max_steps
    more = toy_train.loop_config(max_steps=result.step + 3, max_minutes=0.0, ckpt_every=100)
    with one_thread():
        extended = toy_train.train(tmp_path, more, log=logged.append)
    assert extended.step == result.step + 3
    assert [r["step"] for r in extended.history] == list(range(result.step + 1, result.step + 4))
    assert load_checkpoint(ckpt_dir(tmp_path) / "last.pt")["step"] == result.step + 3


def test_resume_option_starts_a_new_run_dir_and_its_own_progress_wins(tmp_path):
    logged: list[str] = []
    with one_thread():
        toy_train.train(tmp_path / "first", toy_train.loop_config(max_steps=4, ckpt_every=2), log=logged.append)
        start = str(ckpt_dir(tmp_path / "first") / "last.pt")
        toy_train.train(tmp_path / "second", toy_train.loop_config(max_steps=6, ckpt_every=2, resume=start),
                        log=logged.append)
        assert logged[-1] == "[toy] resuming from step 4"
        # restarted with the same options, it goes on from its own checkpoint (6), not from `resume` (4)
        again = toy_train.train(tmp_path / "second", toy_train.loop_config(max_steps=8, ckpt_every=2, resume=start),
                                log=logged.append)
    assert "[toy] resuming from step 6" in logged and again.step == 8 and len(again.history) == 2
    other = tmp_path / "other" / "last.pt"
    save_training_checkpoint(other.parent, {"stage": "encoder", "step": 3, "model": {}})
    with pytest.raises(CheckpointError, match=r"other/last.pt: a checkpoint of stage 'encoder', not 'toy'"):
        toy_train.train(tmp_path / "third", toy_train.loop_config(resume=str(other)))


# -- DDP -----------------------------------------------------------------------------------------------


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_process_ddp_equals_one_process_and_only_rank0_writes(tmp_path):
    args = ["--max-steps", "6", "--ckpt-every", "4", "--batch", "8", "--dropout", "0"]
    ddp = subprocess.run([*torchrun(), "--standalone", "--nproc_per_node=2", str(TOY), str(tmp_path / "ddp"), *args,
                          "--dump", str(tmp_path / "dump"), "--split-run-dir"],
                         env=ENV, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    with one_thread():
        single = toy_train.train(tmp_path / "single", toy_train.loop_config(max_steps=6, ckpt_every=4), dropout=0.0,
                                 log=lambda _: None)

    ranks = [torch.load(tmp_path / "dump" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert_same(ranks[0]["model"], ranks[1]["model"])  # DDP keeps the replicas identical, bit for bit
    assert_same(ranks[0]["ema"], ranks[1]["ema"])
    model_diff = max_abs_diff(ranks[0]["model"], single.model.state_dict())
    ema_diff = max_abs_diff(ranks[0]["ema"], single.ema_model.state_dict())
    torch.manual_seed(0)
    moved = max_abs_diff(ranks[0]["model"], toy_train.make_model(dropout=0.0).state_dict())
    assert model_diff <= DDP_ATOL and ema_diff <= DDP_ATOL, (model_diff, ema_diff)
    assert moved > 1e-3  # it trained
    print(f"DDP vs one process: max |diff| model {model_diff:.2e}, EMA {ema_diff:.2e}; moved {moved:.2e}")

    # rank 0 wrote the checkpoints and the one TensorBoard file; rank 1's own run dir stayed empty
    assert not (tmp_path / "ddp_rank1").exists()
    written = sorted(p.name for p in ckpt_dir(tmp_path / "ddp").iterdir())
    assert written == ["last.pt", "step_0000004.pt", "step_0000006.pt"]
    events = list((tmp_path / "ddp" / "tb").iterdir())
    assert len(events) == 1 and f".{ranks[0]['pid']}." in events[0].name
    last = load_checkpoint(ckpt_dir(tmp_path / "ddp") / "last.pt")
    assert last["step"] == 6 and last["finished"]
    assert_same(last["model"], ranks[0]["model"])
    # each rank's RNG stream is saved (seeded differently, so resuming keeps them apart)
    assert len(last["rng_ranks"]) == 2 and not torch.equal(last["rng_ranks"][0]["torch"], last["rng_ranks"][1]["torch"])
