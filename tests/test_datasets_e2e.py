"""`run.py +experiment=smoke` on every on-disk dataset: encoder, diffusion and eval end to end.

Each test builds a small root in the release format (Action Genome: the mp4s and pickles of
test_action_genome.build_root, prepared with prepare.py; Visual Genome and COCO-Stuff: the real fixture
records with placeholder JPEGs; a folder of generated GIFs), runs every stage on 16 px clips, and checks
what a person would look at: both checkpoints finished and `weights_only` loadable with the dataset's
vocabulary, metrics.json with retrieval and fidelity figures computed over the held-out split sizes the
fixture gives (worked out below), none of the shapes-only figures, and the sample files.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
import torch
from PIL import Image

from sg2video.video_io import write_gif
from test_action_genome import build_root as build_action_genome_root
from test_coco_stuff import FIXTURES as COCO_FIXTURES
from test_pipeline import run_cli
from sg2video.cli import REPO_ROOT
from test_visual_genome import FIXTURES as VG_FIXTURES

pytestmark = pytest.mark.slow

SIZE = 16
SMOKE = ["+experiment=smoke", "cache_dir=null", f"data.size={SIZE}"]
# Figures the eval stage computes only for the shapes world (its rule-based checker needs exact ground truth).
SHAPES_ONLY = ("object_accuracy", "relation_accuracy", "control_uncond/", "predicted_layout/", "long/",
               "manipulation_", "segments_per_video")


def action_genome_root(root: Path) -> list[str]:
    """test_action_genome's release-format root, prepared for 3-frame clips.

    Kept at data.frames=3 (test_action_genome's counts): train 001YG [3,9,21] [9,21,33], 0ACZ8 [4,12,20]
    [12,20,28], 0BZXX [5,10,15] (a truncated mp4: skipped while training); test = val = 0A8CF's 3 clips.
    """
    build_action_genome_root(root)
    proc = run_cli("prepare.py", "data=action_genome", f"data.root={root}", "data.frames=3", "unpickle_ok=true",
                   timeout=180)
    assert proc.returncode == 0, proc.stderr
    return ["data=action_genome", f"data.root={root}", "data.frames=3", "eval.num_samples=3"]


def visual_genome_root(root: Path) -> list[str]:
    """VG images 1-5 (real records) with gray placeholder JPEGs, split by a splits file.

    Five images cannot fill three splits under the release's thresholds, so: train = images 1 and 3, val = 2,
    test = 4 and 5; names used twice in train make the object vocabulary (18), every predicate used between
    kept train objects the predicate vocabulary (7), and min_relations=0 keeps test images 4 and 5, whose
    kept objects have no relationship among them: graphs with boxes but no triples.
    """
    root.mkdir()
    for name in ("image_data.json", "objects.json", "relationships.json"):
        shutil.copy(VG_FIXTURES / name, root / name)
    (root / "images").mkdir()
    for info in json.loads((root / "image_data.json").read_text()):
        Image.new("RGB", (info["width"], info["height"]), (128, 128, 128)).save(root / "images" / f"{info['image_id']}.jpg")
    (root / "splits.json").write_text(json.dumps({"train": [1, 3], "val": [2], "test": [4, 5]}))
    return ["data=visual_genome", f"data.root={root}", "data.frames=1", "model.prefix_frames=0",
            "data.splits_file=splits.json", "data.min_object_instances=2", "data.min_predicate_instances=1",
            "data.min_relations=0", "eval.num_samples=2"]


def coco_stuff_root(root: Path) -> list[str]:
    """The COCO fixture records as one split file with placeholder JPEGs.

    stuff_only=false keeps 3 images (934, 13715 with stuff; 448263 with 3 person instances, test_coco_stuff's
    counts); every split reads the one file, its first image by id (934) is val, the other two test.
    """
    (root / "annotations").mkdir(parents=True)
    shutil.copy(COCO_FIXTURES / "instances_val2017_1img_sample.json", root / "annotations" / "instances_train2017.json")
    shutil.copy(COCO_FIXTURES / "stuff_examples.json", root / "annotations" / "stuff_train2017.json")
    (root / "images" / "train2017").mkdir(parents=True)
    for name in ("stuff_examples.json", "instances_val2017_1img_sample.json"):
        for info in json.loads((COCO_FIXTURES / name).read_text())["images"]:
            Image.new("RGB", (info["width"], info["height"]), (90, 140, 60)).save(
                root / "images" / "train2017" / info["file_name"])
    return ["data=coco_stuff", f"data.root={root}", "data.frames=1", "model.prefix_frames=0", "data.stuff_only=false",
            "data.splits={train:train2017,val:train2017,test:train2017}", "data.val_images=1", "eval.num_samples=2"]


def gif_folder_root(root: Path) -> list[str]:
    """Three 8-frame GIFs of a square moving right: 2 clips of 4 frames each, 6 per split (no split folders)."""
    root.mkdir()
    for i in range(3):
        frames = np.zeros((8, 24, 32, 3), dtype=np.uint8)
        for t in range(8):
            frames[t, 4 + 2 * i : 12 + 2 * i, 2 + 3 * t : 10 + 3 * t] = (200, 60 * i, 40)
        write_gif(root / f"clip{i}.gif", frames)
    return ["data=gif_folder", f"data.root={root}", "data.frames=4", "model.cond=none", "eval.num_samples=4"]


# name -> (root builder, clip frames, vocabulary sizes (objects, predicates), val clips, test clips used by eval)
CASES = {
    "action_genome": (action_genome_root, 3, (36, 26), 3, 3),
    "visual_genome": (visual_genome_root, 1, (18, 7), 1, 2),
    "coco_stuff": (coco_stuff_root, 1, (80 + 91, 6), 1, 2),
    "gif_folder": (gif_folder_root, 4, (1, 1), 6, 4),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_stage_runs_on_the_dataset(tmp_path, name):
    build, frames, (num_objects, num_predicates), val_clips, test_clips = CASES[name]
    overrides = build(tmp_path / name)
    run_dir = tmp_path / "run"
    proc = run_cli("run.py", *SMOKE, *overrides, f"hydra.run.dir={run_dir}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for stage, steps in (("encoder", 4), ("diffusion", 3)):
        state = torch.load(run_dir / "checkpoints" / stage / "last.pt", weights_only=True)
        assert state["finished"] and state["stage"] == stage and state["step"] == steps
        assert (len(state["vocab"]["objects"]), len(state["vocab"]["predicates"])) == (num_objects, num_predicates)
    assert state["clip_frames"] == frames and state["image_size"] == SIZE

    metrics = json.loads((run_dir / "metrics.json").read_text())
    encoder, evaluation = metrics["encoder"], metrics["eval"]
    # retrieval on the held-out split: one gallery of all its clips (fewer than eval_clips = 16)
    assert encoder["steps"] == 4 and encoder["gallery_size"] == val_clips
    assert encoder["frame_gallery_size"] == min(16, val_clips * frames)
    assert all(0.0 <= encoder[k] <= 1.0 for k in ("g2v_top1", "g2v_top5", "v2g_top1", "v2g_top5"))
    assert evaluation["num_samples"] == test_clips
    default_cond = OmegaConf.load(REPO_ROOT / "conf" / "model" / "unet.yaml").cond
    assert evaluation["cond"] == ("none" if name == "gif_folder" else default_cond)
    if name != "gif_folder":  # a dataset with boxes: its layout model trained, and its graphs sampled without boxes
        assert metrics["layout"]["steps"] == 3 and metrics["layout"]["window"] == frames
        assert evaluation["graphs"] == "without boxes" and evaluation["layout"] == "sampled"
        layout_state = torch.load(run_dir / "checkpoints" / "diffusion" / "last.pt", weights_only=True)["layout"]
        assert layout_state["config"]["frames"] == frames and layout_state["weights"]
    assert not [k for k in evaluation if k.startswith(SHAPES_ONLY)], sorted(evaluation)
    # SG score: generated (and real) clips retrieved against their graphs, one gallery of all samples
    assert evaluation["sg_score/gallery_size"] == test_clips
    for key in ("sg_score/g2v_top1", "sg_score/v2g_top1", "sg_score_real/g2v_top1", "sg_score_real/v2g_top1"):
        assert 0.0 <= evaluation[key] <= 1.0, key
    # fidelity with the run's own video encoder, over every frame of the samples
    assert evaluation["fidelity/features"].startswith("sg2video-video-encoder@")
    assert evaluation["fidelity/kid_subset_size"] == min(50, test_clips * frames)
    for key in ("fidelity/fd_frame", "fidelity/fd_video", "fidelity/kd_frame_mean"):
        assert math.isfinite(evaluation[key]) and evaluation[key] >= 0.0, key
    if frames == 1:  # a still has no temporal change: reported as null, not as a number
        assert evaluation["fidelity/temporal_change"] is None and evaluation["fidelity/temporal_change_gt"] is None
    else:
        assert evaluation["fidelity/temporal_change"] > 0.0 and evaluation["fidelity/temporal_change_gt"] >= 0.0

    for i in range(2):  # eval.save_samples=2 of the smoke run
        sample = np.load(run_dir / "samples" / f"sample_{i:03d}.npy")
        assert sample.shape == (frames, SIZE, SIZE, 3) and sample.dtype == np.uint8
        graph = json.loads((run_dir / "samples" / f"sample_{i:03d}.json").read_text())
        assert graph["source"]["dataset"] == name and graph["source"]["split"] == "test" and graph["objects"]
        if name != "gif_folder":  # the boxes the sample was drawn from: sampled for every object, in the frame
            boxes = [box for segment in graph["timeline"] for box in segment["boxes"]]
            assert boxes and all(box is not None and 0 <= min(box) and max(box) <= 1 for box in boxes)
        if name == "visual_genome":  # test images 4 and 5: objects with boxes, no relationship
            assert graph["timeline"][0]["relations"] == [] and len(graph["timeline"][0]["boxes"]) == len(graph["objects"])
    assert (run_dir / "report.html").stat().st_size > 0
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
