"""The training loop's named pieces (sg2video.train.parts), each on its own; fit() runs them in order and
tests/test_train_loop.py checks the whole (bitwise resume, DDP, non-finite steps, budgets)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sg2video.eval.report import read_scalars
from sg2video.train.distributed import DistInfo
from sg2video.train.loop import LoopConfig
from sg2video.train.parts import (
    Checkpointer,
    Progress,
    StepLog,
    TrainingError,
    accumulate_gradients,
    all_ranks,
    apply_update,
    build_optimizer,
    check_bad_steps,
    load_resumed,
    make_loader,
)


@pytest.fixture(autouse=True)
def _seeded(one_thread):
    torch.manual_seed(0)


class Batch(SimpleNamespace):
    def to(self, device):
        return self


class LinearTask:
    def __init__(self):
        self.model = nn.Linear(3, 1)

    def loss(self, model, batch, step):
        loss = (model(batch.x).squeeze(-1) - batch.y).square().mean()
        return {"loss": loss, "abs": (model(batch.x).squeeze(-1) - batch.y).abs().mean()}


def test_build_optimizer_decays_matrices_only_and_warms_up():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    cfg = LoopConfig(lr=1e-2, weight_decay=0.1, warmup_steps=10, max_steps=100)
    optimizer, scheduler, scaler = build_optimizer(model, cfg, torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])] and decayed["weight_decay"] == 0.1
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0  # linear bias, norm weight and bias
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-3)  # step 0 of a 10-step warmup
    assert not scaler.is_enabled()  # fp32 on CPU


def test_accumulated_micro_batches_give_the_full_batch_gradient():
    task = LinearTask()
    x, y = torch.randn(8, 3), torch.randn(8)
    full = LoopConfig(grad_accum=1, batch_size=8)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    terms, finite, _ = accumulate_gradients(task, task.model, iter([Batch(x=x, y=y)]), lambda b, d: b, full,
                                            DistInfo(), scaler, 0)
    whole = [p.grad.clone() for p in task.model.parameters()]
    task.model.zero_grad()
    halves = iter([Batch(x=x[:4], y=y[:4]), Batch(x=x[4:], y=y[4:])])
    split_terms, finite2, _ = accumulate_gradients(task, task.model, halves, lambda b, d: b,
                                                   LoopConfig(grad_accum=2, batch_size=8), DistInfo(), scaler, 0)
    assert finite and finite2
    for a, p in zip(whole, task.model.parameters()):
        torch.testing.assert_close(p.grad, a)
    assert split_terms["loss"] == pytest.approx(terms["loss"], rel=1e-6)
    assert set(split_terms) == {"loss", "abs"}


def test_a_non_finite_update_changes_nothing_but_the_schedule():
    model = nn.Linear(2, 1)
    cfg = LoopConfig(lr=1e-2, warmup_steps=5, max_steps=10)
    optimizer, scheduler, scaler = build_optimizer(model, cfg, torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(1, 2)).sum().backward()
    assert apply_update(False, model, optimizer, scheduler, scaler, cfg) is None
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters()) and scheduler.last_epoch == 1
    model(torch.ones(1, 2)).sum().backward()
    norm = apply_update(True, model, optimizer, scheduler, scaler, cfg)
    assert norm == pytest.approx(3**0.5) and not torch.equal(before[0], model.weight)


def test_bad_steps_raise_after_the_limit_naming_the_last_checkpoint(tmp_path):
    said = []
    cfg = LoopConfig(max_bad_steps=3)
    check_bad_steps(2, cfg, "toy", 7, Progress(step=7, last_saved=5), tmp_path, said.append)
    assert said == ["[toy] step 8: loss not finite, step skipped (2 in a row)"]
    with pytest.raises(TrainingError, match=r"not finite for 3 steps in a row \(steps 7-9\).*last checkpoint: step 5"):
        check_bad_steps(3, cfg, "toy", 8, Progress(step=8, last_saved=5), tmp_path, said.append)
    assert all_ranks(True, DistInfo(), "all") and not all_ranks(False, DistInfo(), "any")


def test_step_log_writes_every_log_every_steps_and_skipped_ones(tmp_path):
    log = StepLog("toy", tmp_path, LoopConfig(log_every=2, max_steps=5), 0, False, False, True)
    for step in range(1, 6):
        log.step_seconds += 1.0
        log.record(step, {"loss": float(step)}, None if step == 3 else 0.5, 1e-3, skipped=int(step >= 3))
    log.close(5, 1)
    scalars = read_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["toy/loss"]] == [2, 4, 5] and [v for _, v in scalars["toy/loss"]] == [2, 4, 5]
    assert [s for s, _ in scalars["toy/lr"]] == [2, 4, 5]
    assert [s for s, _ in scalars["toy/skipped_steps"]] == [3, 5]


def test_checkpointer_and_load_resumed_round_trip_the_counters(tmp_path):
    model = nn.Linear(2, 2)
    cfg = LoopConfig(lr=1e-2, max_steps=10)
    optimizer, scheduler, scaler = build_optimizer(model, cfg, torch.device("cpu"))
    progress = Progress(step=4, elapsed_before=12.0, skipped=1)
    saver = Checkpointer(tmp_path, "toy", DistInfo(), cfg, {"vocab": ["a"]}, start_time=0.0)
    saver.save(progress, False, model, None, optimizer, scheduler, scaler)
    assert progress.last_saved == 4
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 4 and state["skipped_steps"] == 1 and state["vocab"] == ["a"] and not state["finished"]
    other = nn.Linear(2, 2)
    opt2, sched2, scaler2 = build_optimizer(other, cfg, torch.device("cpu"))
    restored = load_resumed(state, other, None, opt2, sched2, scaler2)
    assert (restored.step, restored.skipped, restored.last_saved) == (4, 1, 4) and restored.elapsed_before > 12.0
    assert torch.equal(other.weight, model.weight)


def test_the_loader_from_step_k_yields_the_same_batches_as_a_run_that_got_there():
    data = list(range(20))
    cfg = LoopConfig(batch_size=4, max_steps=6, seed=3)
    whole = list(make_loader(data, torch.tensor, cfg, DistInfo(), 0))
    resumed = list(make_loader(data, torch.tensor, cfg, DistInfo(), 4))
    assert len(whole) == 6 and [b.tolist() for b in resumed] == [b.tolist() for b in whole[4:]]
