"""The sg2im baseline (issue 19): its layout and CRN against hand computations, each loss term learning on a tiny
overfit set, the discriminators' gradients reaching the generator (and nothing crossing the other way), bitwise
resume of the adversarial pair, and the run directory / sample.py working on its checkpoints."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sg2video.data.clips import collate_clips
from sg2video.data.shapes import ShapesDataset
from sg2video.encoder.graph_encoder import GraphEncoder
from sg2video.sg2im import PAPER_WEIGHTS, Sg2imGenerator, Sg2imPair
from sg2video.sg2im.layout import crop_boxes, foreground_masks, place_masks, splat_layout
from sg2video.sg2im.model import CRN, usable_boxes

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["+experiment=smoke_sg2im", "data.val_size=16", "data.test_size=16", "cache_dir=null"]


@pytest.fixture(autouse=True)
def _seed_one_thread(one_thread):
    torch.manual_seed(0)


def tiny_pair(size: int = 16, weights: dict | None = None) -> Sg2imPair:
    encoder = GraphEncoder(24, 4, dim=16, cond_dim=16, layers=1, hidden=32, max_tokens=16)
    generator = Sg2imGenerator(encoder, 24, 16, size, embed_dim=16, mask_size=8, crn_dims=[16, 16, 8], noise_dim=4,
                               box_hidden=32, norm_groups=4)
    return Sg2imPair(generator, 24, [8, 16], [8, 16], crop_size=8, weights=weights, groups=4)


def shapes_batch(n: int = 4, size: int = 16, frames: int = 2):
    data = ShapesDataset("train", length=n, size=size, frames=frames, min_objects=2, max_objects=3)
    return collate_clips(data.__getitems__(list(range(n))))


# ---------------------------------------------------------------- layout, crops, CRN: hand computations


def test_a_full_mask_fills_exactly_the_pixels_whose_centres_lie_in_its_box():
    """4 x 4 frame, pixel centres at 0.125, 0.375, 0.625, 0.875: the box [0.25, 0.75]^2 holds the middle 2 x 2."""
    vectors = torch.tensor([[[1.0, 2.0], [5.0, 7.0]]])  # (1, K=2, D=2); the second object is padding
    masks = torch.ones(1, 2, 16, 16)
    boxes = torch.tensor([[[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]]])
    valid = torch.tensor([[True, False]])
    layout = splat_layout(vectors, masks, boxes, valid, 4, 4)
    inside = torch.zeros(4, 4)
    inside[1:3, 1:3] = 1
    assert layout.shape == (1, 2, 4, 4)
    assert torch.equal(layout[0, 0], inside) and torch.equal(layout[0, 1], 2 * inside)


def test_a_half_mask_is_resampled_bilinearly_with_zeros_outside_by_hand():
    """A 2 x 2 mask [[1, 0], [1, 0]] filling the whole 4 x 4 frame. A frame pixel at x reads the mask at
    x * 2 - 0.5 (mask pixels 0, 1): -0.25, 0.25, 0.75, 1.25, bilinear with zeros past the edges: along x
    [0.75, 0.75, 0.25, 0], along y (a column of ones) [0.75, 1, 1, 0.75]; the result is their outer product."""
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    placed = place_masks(mask, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), 4, 4)[0]
    expected = torch.outer(torch.tensor([0.75, 1.0, 1.0, 0.75]), torch.tensor([0.75, 0.75, 0.25, 0.0]))
    assert torch.allclose(placed, expected, atol=1e-6)
    # two objects on one pixel add (sg2im sums the layout)
    two = splat_layout(torch.ones(1, 2, 1), torch.ones(1, 2, 16, 16), torch.tensor([[[0.0, 0.0, 0.5, 0.5],
                       [0.25, 0.25, 0.75, 0.75]]]), torch.ones(1, 2, dtype=torch.bool), 4, 4)[0, 0]
    assert two[1, 1] == 2 and two[0, 0] == 1 and two[2, 2] == 1 and two[3, 3] == 0


def test_crops_read_the_box_of_their_own_frame():
    frames = torch.arange(4.0).repeat(4, 1)[None, None].repeat(2, 1, 1, 1)  # (2, 1, 4, 4): value = x
    frames[1] += 10
    crops = crop_boxes(frames, torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]), torch.tensor([0, 1]), 2)
    assert torch.equal(crops[0, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(crops[1, 0], torch.tensor([[12.0, 13.0], [12.0, 13.0]]))
    target = foreground_masks(crops[:1].repeat(1, 3, 1, 1) / 5, torch.zeros(1, 3))  # 0 and 0.2: threshold 0.1
    assert torch.equal(target[0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_crn_modules_double_the_resolution_up_to_the_frame_size():
    crn = CRN(layout_dim=5, dims=[8, 4, 4], size=16, groups=2)
    seen = []
    for block in crn.blocks:
        block.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    out = crn(torch.randn(6, 5, 16, 16), frames=3)
    assert seen == [(6, 8, 4, 4), (6, 4, 8, 8), (6, 4, 16, 16)]
    assert out.shape == (6, 3, 16, 16) and out.abs().max() <= 1
    generator = tiny_pair().generator
    video = generator.render(torch.randn(2, 3, 2, 16), torch.rand(2, 3, 2, 8, 8), torch.rand(2, 3, 2, 4).sort(-1).values,
                             torch.ones(2, 3, 2, dtype=torch.bool), generator.noise(2, "cpu"))
    assert video.shape == (2, 3, 3, 16, 16)


def test_the_temporal_layer_mixes_frames_and_starts_as_identity():
    crn = CRN(layout_dim=3, dims=[4, 4], size=8, groups=2)
    layout = torch.randn(2 * 5, 3, 8, 8)
    changed = layout.clone()
    changed[2] += 1.0  # clip 0, frame 2
    a, b = crn(layout, frames=5), crn(changed, frames=5)
    moved = (a - b).abs().flatten(1).amax(1)
    assert moved[2] > 0 and moved[[0, 1, 3, 4, 5, 6, 7, 8, 9]].max() == 0  # zero-initialised: per frame
    for block in crn.blocks:
        torch.nn.init.normal_(block.temporal.weight, std=0.3)
    a, b = crn(layout, frames=5), crn(changed, frames=5)
    moved = (a - b).abs().flatten(1).amax(1)
    assert (moved[[1, 2, 3]] > 0).all() and moved[5:].max() == 0  # neighbours in time, never the other clip


def test_usable_boxes_orders_clamps_and_keeps_a_pixel():
    out = usable_boxes(torch.tensor([[0.8, -0.2, 0.3, 1.4], [0.5, 0.5, 0.5, 0.5]]), size=10)
    assert torch.allclose(out, torch.tensor([[0.3, 0.0, 0.8, 1.0], [0.5, 0.5, 0.6, 0.6]]))


# ---------------------------------------------------------------- losses and gradients


def _mean(history, key, part):
    values = [h[key] for h in history]
    n = max(1, len(values) // 5)
    return float(np.mean(values[:n] if part == "first" else values[-n:]))


def _train(pair, batch, params, objective, steps: int) -> list[dict]:
    opt = torch.optim.Adam(params, lr=2e-3)
    history = []
    for _ in range(steps):
        terms = pair(batch.video, batch.graphs)
        opt.zero_grad()
        objective(terms).backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


def _falls(history, keys):
    for key in keys:
        first, last = _mean(history, key, "first"), _mean(history, key, "last")
        assert last < 0.8 * first, (key, first, last)


def test_each_loss_term_decreases_on_a_tiny_overfit_set():
    """Four fixed clips. Trained as the loop trains them (the one summed loss, one optimizer), the reconstruction
    terms fall; the adversarial terms are a game (each side's falls as it learns and rises as the other does),
    so each is shown falling while its own side learns against the other side held fixed: the discriminators'
    terms with the generator fixed, then the generator's with the discriminators fixed."""
    batch = shapes_batch()
    pair = tiny_pair(weights={"mask": 1.0})
    joint = _train(pair, batch, [p for p in pair.parameters() if p.requires_grad], lambda t: t["loss"], 150)
    _falls(joint, ("l1", "box", "mask"))
    d_params = list(pair.img_d.parameters()) + list(pair.obj_d.parameters())
    _falls(_train(pair, batch, d_params, lambda t: t["d_img"] + t["d_obj"] + t["d_ac"], 60), ("d_img", "d_obj", "d_ac"))
    g_params = [p for p in pair.generator.parameters() if p.requires_grad]
    _falls(_train(pair, batch, g_params, lambda t: t["g_img"] + t["g_obj"] + t["g_ac"], 60), ("g_img", "g_obj", "g_ac"))


def test_discriminator_gradients_reach_the_generator_and_never_cross_the_other_way():
    batch = shapes_batch(2)
    pair = tiny_pair()
    terms = pair(batch.video, batch.graphs)
    g_params = [p for p in pair.generator.parameters() if p.requires_grad]
    d_params = list(pair.img_d.parameters()) + list(pair.obj_d.parameters())
    for key in ("g_img", "g_obj", "g_ac"):
        to_g = torch.autograd.grad(terms[key], g_params, retain_graph=True, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in to_g if g is not None) > 0, key
        to_d = torch.autograd.grad(terms[key], d_params, retain_graph=True, allow_unused=True)
        assert all(g is None for g in to_d), f"{key} changed a discriminator"
    for key in ("d_img", "d_obj", "d_ac"):
        to_g = torch.autograd.grad(terms[key], g_params, retain_graph=True, allow_unused=True)
        assert all(g is None for g in to_g), f"{key} changed the generator"
    # the summed loss gives each side exactly its own gradient
    w = pair.weights
    g_loss = (w["l1"] * terms["l1"] + w["box"] * terms["box"] + w["mask"] * terms["mask"]
              + w["gan"] * (w["img"] * terms["g_img"] + w["obj"] * terms["g_obj"]) + w["ac"] * terms["g_ac"])
    own = torch.autograd.grad(g_loss, g_params, retain_graph=True)
    total = torch.autograd.grad(terms["loss"], g_params, retain_graph=True)
    assert all(torch.allclose(a, b) for a, b in zip(own, total))
    assert PAPER_WEIGHTS == {"l1": 1.0, "box": 10.0, "mask": 0.0, "gan": 0.01, "img": 1.0, "obj": 1.0, "ac": 0.1}


def test_a_frozen_encoder_stays_put_and_a_joint_one_learns():
    batch = shapes_batch(2)
    for joint in (False, True):
        pair = tiny_pair()
        pair.generator.train_encoder = joint
        pair.generator.encoder.requires_grad_(joint)
        pair(batch.video, batch.graphs)["loss"].backward()
        grads = [p.grad for p in pair.generator.encoder.parameters()]
        if joint:
            assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
        else:
            assert all(g is None for g in grads)


# ---------------------------------------------------------------- the run: resume, run dir, sample.py


def _run(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session")  # built once per test run (conftest keeps its users in one worker)
def sg2im_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sg2im") / "run"
    out = _run("src/run.py", *SMOKE, f"run_dir={run_dir}", "train.max_steps=6")
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, out.stdout


def test_the_sg2im_run_has_the_same_run_directory_and_eval(sg2im_run):
    run_dir, stdout = sg2im_run
    assert "[sg2im] starting" in stdout and "[diffusion]" not in stdout and "[autoencoder]" not in stdout
    for name in ("metrics.json", "report.html", "checkpoints/sg2im/last.pt", "checkpoints/layout/last.pt"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "samples").glob("*.gif")) and list((run_dir / "tb").glob("events.*"))
    ev = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert ev["generator"] == "sg2im" and ev["cond"] == "concat"
    for key in ("object_accuracy", "relation_accuracy", "given_boxes/object_accuracy", "box_head/object_accuracy",
                "control_uncond/object_accuracy", "diversity/pixel_distance", "long/object_accuracy",
                "manipulation_relation/changed_satisfied", "sg_score/g2v_top1"):
        matches = [k for k in ev if k == key or k.startswith(key.split("/")[0] + "/")]
        assert matches, (key, sorted(ev))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"sg2im/l1", "sg2im/box", "sg2im/d_img", "sg2im/g_obj", "sg2im/d_ac"} <= tags


def test_resuming_the_adversarial_pair_is_bitwise(sg2im_run, tmp_path):
    """A run killed after its step-4 checkpoint (generator, both discriminators, EMA, optimizer, scheduler, RNG)
    and started again ends with the same bits as the run that went straight to step 6."""
    import shutil

    run_dir, _ = sg2im_run
    resumed = tmp_path / "resumed"
    for stage in ("encoder", "layout"):
        shutil.copytree(run_dir / "checkpoints" / stage, resumed / "checkpoints" / stage)
    (resumed / "checkpoints" / "sg2im").mkdir()
    shutil.copy(run_dir / "checkpoints/sg2im/step_0000004.pt", resumed / "checkpoints/sg2im/step_0000004.pt")
    out = _run("src/run.py", *SMOKE, f"run_dir={resumed}", "train.max_steps=6", "stage=sg2im")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[sg2im] resuming from step 4" in out.stdout + out.stderr
    a = torch.load(run_dir / "checkpoints/sg2im/last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints/sg2im/last.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert any(k.startswith("img_d.") for k in a["model"]) and any(k.startswith("obj_d.") for k in a["model"])


def test_sample_cli_renders_a_timeline_and_accepts_every_box_source(sg2im_run, tmp_path):
    run_dir, _ = sg2im_run
    ckpt = run_dir / "checkpoints/sg2im/last.pt"
    graph = {"objects": ["red circle", "blue square", "green triangle"],
             "timeline": [{"frames": [0, 5], "relations": [[0, "left of", 1], [1, "above", 2]]},
                          {"frames": [5, 11], "relations": [[0, "right of", 1], [1, "above", 2]]}]}
    path = tmp_path / "timeline.json"
    path.write_text(json.dumps(graph))
    for boxes in ("sampled", "head", "given"):
        out = tmp_path / boxes
        res = _run("src/sample.py", f"ckpt={ckpt}", f"graph={path}", f"out={out}", f"layout={boxes}", "num=2")
        assert res.returncode == 0, res.stderr[-2000:]
        video = np.load(out / "sample_000.npy")
        assert video.shape == (11, 16, 16, 3) and video.dtype == np.uint8
        drawn = json.loads((out / "sample_001.json").read_text())
        assert drawn["timeline"] and all(len(seg["boxes"]) == 3 for seg in drawn["timeline"])
        assert (out / "graph.png").exists() and (out / "sample_001.mp4").exists()
    a, b = np.load(tmp_path / "head" / "sample_000.npy"), np.load(tmp_path / "head" / "sample_001.npy")
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0  # layout noise: two samples of one graph differ
    # a static graph (no timeline), one object's box given, longer than a training clip: one pass, no chunks
    static = tmp_path / "static.json"
    static.write_text(json.dumps({"objects": ["red circle", "blue square"], "relations": [[0, "above", 1]],
                                  "boxes": [[0.1, 0.1, 0.3, 0.3], None]}))
    res = _run("src/sample.py", f"ckpt={ckpt}", f"graph={static}", f"out={tmp_path / 'static'}", "frames=9", "num=1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert np.load(tmp_path / "static" / "sample_000.npy").shape == (9, 16, 16, 3)
    drawn = json.loads((tmp_path / "static" / "sample_000.json").read_text())
    kept = drawn["boxes"] if "boxes" in drawn else drawn["timeline"][0]["boxes"]
    assert kept[0] == pytest.approx([0.1, 0.1, 0.3, 0.3])  # the given box is the one drawn into


def test_model_sg2im_settings_are_checked_in_one_line(tmp_path):
    res = _run("src/run.py", *SMOKE, f"run_dir={tmp_path / 'bad'}", "model.crn_dims=[8,8,8,8,8,8]")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "model.crn_dims" in res.stderr and not (tmp_path / "bad").exists()
    res = _run("src/run.py", *SMOKE, f"run_dir={tmp_path / 'bad2'}", "model.mask_size=12")
    assert res.returncode == 2 and "model.mask_size=12" in res.stderr
