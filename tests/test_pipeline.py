"""The pipeline end to end: config composition, run.py's stages, sample.py, and their error handling."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from sg2video.cli import CONF_DIR, REPO_ROOT
from sg2video.config import register_resolvers, validate

SMOKE = ["+experiment=smoke", "data.val_size=16", "data.test_size=16"]  # the smoke experiment fits any dataset


def compose_cfg(overrides: list[str]):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


def run_cli(script: str, *args: str, cwd: Path = REPO_ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "src" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_default_config_has_the_contract_keys():
    cfg = compose_cfg([])
    validate(cfg)
    for key in ("stage", "data.size", "data.frames", "data.root", "encoder.layers", "encoder.dim", "encoder.pooling",
                "encoder.loss.contrastive", "encoder.loss.masked", "model.cond", "model.prefix_frames", "model.dim",
                "model.dim_mults", "diffusion.timesteps", "diffusion.schedule", "diffusion.parameterization",
                "diffusion.loss", "diffusion.sampler", "diffusion.sample_steps", "diffusion.guidance",
                "train.max_steps", "train.batch_size", "train.lr", "train.precision", "train.seed"):
        node, _, leaf = key.rpartition(".")
        container = OmegaConf.select(cfg, node) if node else cfg
        assert leaf in container, key
    assert cfg.data.name == "shapes"


@pytest.mark.parametrize("encoder", ["gcn", "gcn_sum", "gcn_deep", "onehot"])
@pytest.mark.parametrize("cond", ["concat", "crossattn", "hybrid", "adm", "none"])
def test_groups_compose_and_validate(encoder, cond):
    cfg = compose_cfg([f"encoder={encoder}", f"model.cond={cond}"])
    validate(cfg)
    assert cfg.model.cond == cond and cfg.encoder.name == encoder


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.cond=sideways", "model.cond='sideways' is not accepted (accepted: concat, crossattn, hybrid, adm, none)"),
        ("data.size=-4", "data.size=-4 must be an integer >= 8"),  # the shapes world needs room for its objects
        ("model.prefix_frames=8", "model.prefix_frames=8 must be an integer in [0, data.frames)"),
        ("data=action_genome", "data.root is not set"),
        ("data=action_genome data.root=/no/such/dir", "data.root='/no/such/dir' does not exist"),
        ("diffusion.sampler=euler", "diffusion.sampler='euler' is not accepted"),
        ("data=nope", "Could not find 'data/nope' (accepted: action_genome, coco_stuff, gif_folder, household, shapes"),
    ],
)
def test_bad_values_are_one_line_exit_2_and_write_nothing(tmp_path, override, message):
    run_dir = tmp_path / "run"
    proc = run_cli("run.py", *override.split(), f"hydra.run.dir={run_dir}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()


def test_a_bad_value_in_a_sweep_stops_the_whole_sweep_before_it_starts(tmp_path):
    proc = run_cli("run.py", "-m", "model.cond=crossattn,diagonal", f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=120)
    assert proc.returncode == 2 and "model.cond='diagonal'" in proc.stderr
    assert not (tmp_path / "sweep").exists()


# -- a tiny trained pipeline, shared by the tests below ------------------------------------------


@pytest.fixture(scope="session")  # built once per test run (conftest keeps its users in one worker)
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_cli("run.py", *SMOKE, f"hydra.run.dir={run_dir}", "cache_dir=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc.stdout


@pytest.mark.slow
def test_smoke_run_writes_every_stage_output(smoke_run):
    run_dir, stdout = smoke_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["encoder"]["steps"] == 4
    assert 0.0 <= metrics["encoder"]["g2v_top1"] <= 1.0
    assert metrics["eval"]["num_samples"] == 4
    assert 0.0 <= metrics["eval"]["object_accuracy"] <= 1.0
    for stage in ("encoder", "diffusion"):
        state = torch.load(run_dir / "checkpoints" / stage / "last.pt", weights_only=True)
        assert state["finished"] and state["stage"] == stage
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    from sg2video.eval.report import read_scalars

    scalars = read_scalars(run_dir / "tb")  # eval_every=0: the retrieval curves' one point, at the end
    assert [step for step, _ in scalars["encoder/retrieval/g2v_top1"]] == [4]
    sample = np.load(run_dir / "samples" / "sample_000.npy")
    assert sample.shape == (4, 16, 16, 3) and sample.dtype == np.uint8
    assert str(run_dir) in stdout


@pytest.mark.slow
def test_encoder_tensorboard_has_the_alignment_curves(tmp_path):
    """Issue 17: retrieval both ways (top-1 / top-5) at every encoder.train.eval_every steps and at the end, the
    contrastive and masked losses apart, and the learned temperature, under tags every run shares."""
    from sg2video.eval.report import read_scalars

    run = tmp_path / "enc"
    proc = run_cli("run.py", *SMOKE, f"hydra.run.dir={run}", "cache_dir=null", "stage=encoder",
                   "encoder.train.eval_every=2", "train.log_every=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    scalars = read_scalars(run / "tb")
    for direction in ("g2v", "v2g"):
        for k in (1, 5):
            points = scalars[f"encoder/retrieval/{direction}_top{k}"]
            assert [step for step, _ in points] == [2, 4] and all(0.0 <= v <= 1.0 for _, v in points)
    for term in ("contrastive", "masked", "loss"):
        assert [step for step, _ in scalars[f"encoder/{term}"]] == [1, 2, 3, 4]
    temperature = [v for _, v in scalars["encoder/temperature"]]
    assert len(temperature) == 4 and temperature[0] == pytest.approx(0.07, rel=0.05)  # CLIP's initial value


@pytest.mark.slow
def test_run_log_holds_every_line_the_run_printed_and_a_resumed_run_says_so(smoke_run, tmp_path):
    run_dir, stdout = smoke_run
    log = (run_dir / "run.log").read_text()
    printed = [line for line in stdout.splitlines() if line.strip()]
    assert printed and all(line in log for line in printed), [line for line in printed if line not in log]
    for stage in ("encoder", "layout", "diffusion", "eval"):
        assert f"[{stage}] starting" in log and f"[{stage}] done in" in log
    # a run that goes on from where an earlier one stopped says so in the same log
    run = tmp_path / "again"
    for steps in (2, 2, 3):  # trained; kept as it is; asked for one step more: resumed
        proc = run_cli("run.py", *SMOKE, f"hydra.run.dir={run}", "cache_dir=null", "stage=encoder",
                       f"encoder.train.max_steps={steps}")
        assert proc.returncode == 0, proc.stderr[-2000:]
    log = (run / "run.log").read_text()
    assert log.count("[encoder] starting") == 3
    assert "[encoder] finished in this run dir at step 2: kept" in log and "[encoder] resuming from step 2" in log
    state = torch.load(run / "checkpoints" / "encoder" / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["finished"]


@pytest.mark.slow
def test_two_runs_of_one_config_train_bitwise_the_same_weights_on_cpu(tmp_path):
    """Step budgets and a fixed thread count (the default train.threads=2): the same config gives the same
    weights, however busy the machine (here the other pytest worker competes for the cores). The default encoder
    at its default batch: with tiny graphs the thread-order-dependent sums of advanced indexing's backward did
    not show (the smoke encoder agreed bitwise), at this size they did."""
    weights = []
    for name in ("a", "b"):
        proc = run_cli("run.py", "stage=encoder", "cache_dir=null", f"hydra.run.dir={tmp_path / name}",
                       "encoder.train.max_steps=4", "encoder.train.ckpt_every=2", "encoder.train.eval_clips=16")
        assert proc.returncode == 0, proc.stderr[-2000:]
        state = torch.load(tmp_path / name / "checkpoints" / "encoder" / "last.pt", weights_only=True)
        assert state["config"]["train"]["threads"] == 2
        weights.append(state["model"])
    assert weights[0].keys() == weights[1].keys() and len(weights[0]) > 100
    differing = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert differing == []
    earlier = torch.load(tmp_path / "a" / "checkpoints" / "encoder" / "step_0000002.pt", weights_only=True)["model"]
    assert any(not torch.equal(earlier[k], weights[0][k]) for k in earlier)  # and the last steps did change them


@pytest.mark.slow
def test_rerun_in_the_same_directory_does_not_redo_finished_stages(smoke_run):
    run_dir, _ = smoke_run
    before = (run_dir / "checkpoints" / "diffusion" / "last.pt").stat().st_mtime_ns
    proc = run_cli("run.py", *SMOKE, f"hydra.run.dir={run_dir}", "cache_dir=null", "stage=diffusion")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "checkpoints" / "diffusion" / "last.pt").stat().st_mtime_ns == before


@pytest.mark.slow
def test_sample_cli_static_and_long_timeline(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    ckpt = run_dir / "checkpoints" / "diffusion" / "last.pt"
    static = tmp_path / "static.json"
    static.write_text(json.dumps({"objects": ["red circle", "blue square"], "relations": [[0, "left of", 1]]}))
    out = tmp_path / "out_static"
    proc = run_cli("sample.py", f"ckpt={ckpt}", f"graph={static}", "num=2", "steps=3", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for i in range(2):
        assert np.load(out / f"sample_{i:03d}.npy").shape == (4, 16, 16, 3)
        assert (out / f"sample_{i:03d}.mp4").stat().st_size > 0
        assert (out / f"sample_{i:03d}.gif").stat().st_size > 0
    assert (out / "graph.png").exists()

    # 10 frames from a model of 4-frame clips with 1 prefix frame: chunks [0,4) [3,7) [6,10)
    timeline = tmp_path / "timeline.json"
    timeline.write_text(json.dumps({"objects": ["red circle", "blue square"], "timeline": [
        {"frames": [0, 5], "relations": [[0, "left of", 1]]}, {"frames": [5, 10], "relations": [[0, "above", 1]]}]}))
    out = tmp_path / "out_long"
    proc = run_cli("sample.py", f"ckpt={ckpt}", f"graph={timeline}", "num=1", "steps=3", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert np.load(out / "sample_000.npy").shape == (10, 16, 16, 3)


def test_sample_cli_takes_layout_sampling_settings_and_refuses_the_models_own(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    ckpt = run_dir / "checkpoints" / "diffusion" / "last.pt"
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"objects": ["red circle", "blue square"], "relations": [[0, "left of", 1]]}))
    drawn = {}
    for name, extra in (("from_checkpoint", []), ("independent", ["layout.repel=0", "layout.choice=best"]),
                        ("again", ["layout.repel=0", "layout.choice=best"])):
        out = tmp_path / name
        proc = run_cli("sample.py", f"ckpt={ckpt}", f"graph={graph}", "num=3", "steps=2", f"out={out}", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        drawn[name] = [(out / f"sample_{i:03d}.json").read_text() for i in range(3)]
    assert drawn["independent"] == drawn["again"]
    assert drawn["independent"] != drawn["from_checkpoint"]  # repel 0.05 and the diverse choice moved the layouts
    proc = run_cli("sample.py", f"ckpt={ckpt}", f"graph={graph}", "layout.dim=8", f"out={tmp_path / 'refused'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "layout.dim belongs to the trained layout model" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "graph, args, message",
    [
        ({"objects": ["red circle", "blue square"], "relations": [[0, "besides", 1]]}, [], 'unknown predicate "besides"'),
        ({"objects": ["purple circle"]}, [], 'unknown object "purple circle"'),
        ({"objects": ["red circle"] * 9}, [], "at most 4"),
        (None, [], "not valid JSON"),
        ({"objects": ["red circle"]}, ["sampler=euler"], "sampler='euler' is not accepted"),
    ],
)
def test_sample_cli_refuses_bad_graphs_in_one_line(smoke_run, tmp_path, graph, args, message):
    run_dir, _ = smoke_run
    path = tmp_path / "graph.json"
    path.write_text("{not json" if graph is None else json.dumps(graph))
    out = tmp_path / "out"
    proc = run_cli("sample.py", f"ckpt={run_dir / 'checkpoints' / 'diffusion' / 'last.pt'}", f"graph={path}",
                   f"out={out}", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_sample_cli_refuses_a_corrupt_checkpoint(tmp_path):
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"objects": ["red circle"]}))
    proc = run_cli("sample.py", f"ckpt={ckpt}", f"graph={graph}", f"out={tmp_path / 'out'}")
    assert proc.returncode == 2 and "not a readable sg2video checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_eval_stage_computes_fid_and_fvd_from_local_weight_files(smoke_run, tmp_path):
    """eval.fid_weights / eval.fvd_weights through the eval stage: randomly initialised Inception-v3 and I3D saved
    here stand in for the real files; the metrics carry the FID / FVD names and the features used."""
    import shutil

    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
    from torchvision.models.inception import Inception3

    run_dir, _ = smoke_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    torch.manual_seed(0)
    torch.save(Inception3(aux_logits=False, init_weights=True).state_dict(), tmp_path / "inception_v3.pth")
    torch.save(InceptionI3d(400, in_channels=3).state_dict(), tmp_path / "i3d_pretrained_400.pt")
    proc = run_cli("run.py", *SMOKE, f"hydra.run.dir={run}", "cache_dir=null", "stage=eval",
                   f"eval.fid_weights={tmp_path / 'inception_v3.pth'}", f"eval.fvd_weights={tmp_path / 'i3d_pretrained_400.pt'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    fidelity = {k.split("/", 1)[1]: v for k, v in json.loads((run / "metrics.json").read_text())["eval"].items()
                if k.startswith("fidelity/")}
    assert fidelity["features"] == "inception:inception_v3.pth" and fidelity["fid_frame"] >= 0.0
    assert fidelity["fvd_features"] == "i3d:i3d_pretrained_400.pt" and fidelity["fvd"] >= 0.0
    assert fidelity["fvd_frames"] == 4 and "fd_frame" not in fidelity
    assert "FVD: I3D logits from a local weights file" in (run / "report.html").read_text()


# what each eval measurement adds on the smoke run (layout mode, shapes, 7-frame timelines, 2 manipulations)
MEASUREMENT_KEYS = {
    "held-out graphs without boxes": {"object_accuracy", "relation_accuracy", "identity/kept", "seconds_per_video"},
    "seen and unseen combinations": {"unseen/object_accuracy", "unseen/relation_accuracy", "seen/object_accuracy",
                                     "seen/relation_accuracy", "heldout_triples/relation_accuracy",
                                     "eval_graphs_in_training", "training_clips_checked"},
    "with given boxes, box head": {"given_boxes/object_accuracy", "box_head/relation_accuracy"},
    "unconditional control": {"control_uncond/object_accuracy", "control_uncond/relation_accuracy"},
    "relation control": {"control_norel/object_accuracy", "control_norel/relation_accuracy",
                         "control_norel/relation_margin"},
    "diversity": {"diversity/position_spread", "diversity/pixel_difference"},
    "long videos": {"long/teleport_rate", "long/worst_segment/relation_accuracy", "long/frames"},
    "manipulation": {"manipulation_relation/changed_accuracy", "manipulation_object/unchanged_preserved"},
    "SG score": {"sg_score/g2v_top1", "sg_score_real/v2g_top1"},
    "fidelity": {"fidelity/fd_frame", "fidelity/fd_video", "fidelity/temporal_change_ratio"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MEASUREMENT_KEYS))
def test_each_eval_measurement_on_its_own(smoke_run, name):
    """Each measurement of the eval stage (sg2video.stages.evaluate.MEASUREMENTS) run alone on the smoke run's
    model: the keys it owns, values in range; outside the shapes world the checker's measurements add nothing."""
    from sg2video.stages.evaluate import MEASUREMENTS, eval_context, headline

    run_dir, _ = smoke_run
    ctx = eval_context(compose_cfg(SMOKE), run_dir, torch.device("cpu"))
    assert ctx.is_shapes and [n for n, _ in MEASUREMENTS] == list(MEASUREMENT_KEYS)
    measure = dict(MEASUREMENTS)[name]
    out = headline(ctx) if measure is headline else (headline(ctx), measure(ctx))[1]
    assert MEASUREMENT_KEYS[name] <= set(out), sorted(out)
    others = set().union(*(keys for n, keys in MEASUREMENT_KEYS.items() if n != name))
    assert not (set(out) & others)
    for key, value in out.items():
        if "accuracy" in key or key.endswith(("kept", "rate")):
            assert value != value or 0.0 <= value <= 1.0, (key, value)
    ctx.checker = None
    if name not in ("held-out graphs without boxes", "SG score", "fidelity"):
        assert measure(ctx) == {}


@pytest.mark.slow
def test_smoke_run_report_has_metrics_samples_and_controls(smoke_run):
    run_dir, _ = smoke_run
    page = (run_dir / "report.html").read_text()
    assert '<table id="metrics"' in page and "eval.object_accuracy" in page
    assert "eval.control_uncond/object_accuracy" in page
    assert page.count('src="data:image/gif;base64,') >= 4  # 2 samples x (generated + ground truth)
    assert page.count('src="data:image/png;base64,') >= 2  # graph pictures (+ loss curves)
    metrics = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert metrics["long/frames"] == 7 and metrics["long/num_videos"] == 1
    assert metrics["fidelity/features"].startswith("sg2video-video-encoder@")
    assert {"manipulation_relation/changed_accuracy", "sg_score/g2v_top1"} <= set(metrics)


@pytest.mark.slow
def test_smoke_eval_reports_seen_and_unseen_apart_and_the_relation_control(smoke_run):
    """Issue 25 on the smoke run (compositional split, 4 test graphs: indices 0 and 2 unseen, 1 and 3 seen): the
    split keys, the relation control beside the unconditional one in metrics.json, the eval line and the report."""
    run_dir, stdout = smoke_run
    ev = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert (ev["unseen/graphs"], ev["seen/graphs"]) == (2, 2)
    assert ev["training_clips_checked"] == 2000 and ev["unseen/graphs_in_training"] == 0
    assert ev["eval_graphs_in_training"] == ev["seen/graphs_in_training"] <= 2
    assert ev["heldout_triples/count"] >= 1 and ev["heldout_pairs/count"] >= 1
    for key in ("unseen/object_accuracy", "seen/relation_accuracy", "control_norel/object_accuracy",
                "control_norel/relation_accuracy"):
        assert 0.0 <= ev[key] <= 1.0, key
    assert -1.0 <= ev["control_norel/relation_margin"] <= 1.0 and ev["control_norel/num_videos"] == 2
    line = next(line for line in stdout.splitlines() if line.startswith("[eval] 4 held-out graphs"))
    assert "unconditional control:" in line and "relation control:" in line and "above it" in line
    assert "unseen combinations (2 graphs)" in line and "graphs occur in the first 2000 train clips" in line
    page = (run_dir / "report.html").read_text()
    assert '<table id="controls">' in page and "relation control: same objects" in page


@pytest.mark.slow
def test_latent_space_runs_every_stage_and_samples_decode_to_frames(tmp_path):
    run_dir = tmp_path / "latent"
    proc = run_cli("run.py", *SMOKE, f"hydra.run.dir={run_dir}", "cache_dir=null", "diffusion.space=latent",
                   "autoencoder.train.max_steps=3", "autoencoder.train.scale_clips=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["autoencoder"]["psnr"] > 0 and metrics["autoencoder"]["clips"] == 16
    state = torch.load(run_dir / "checkpoints" / "diffusion" / "last.pt", weights_only=True)
    assert state["autoencoder"] is not None and state["latent_size"] == 4  # 16 px / downsample 4
    assert state["channels"] == state["autoencoder"]["config"]["latent_channels"]
    sample = np.load(run_dir / "samples" / "sample_000.npy")
    assert sample.shape == (4, 16, 16, 3) and sample.dtype == np.uint8  # decoded back to pixels


def test_the_stage_cache_key_follows_the_code_and_every_setting_that_changes_a_stage(tmp_path):
    import shutil

    from sg2video.pipeline import cache_key, code_hash

    package = tmp_path / "sg2video"
    shutil.copytree(REPO_ROOT / "src" / "sg2video", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = {stage: code_hash(stage, package) for stage in ("autoencoder", "encoder", "layout")}
    assert before == {stage: code_hash(stage) for stage in before}  # a copy of the same code: the same hashes
    gcn = package / "encoder" / "gcn.py"
    gcn.write_text(gcn.read_text() + "\n# an edit\n")
    after = {stage: code_hash(stage, package) for stage in before}
    assert after["encoder"] != before["encoder"] and after["layout"] != before["layout"]  # both train with the GCN
    assert after["autoencoder"] == before["autoencoder"]
    report = package / "eval" / "report.py"  # not part of any cached stage's training
    report.write_text(report.read_text() + "\n# an edit\n")
    assert {stage: code_hash(stage, package) for stage in before} == after

    base = compose_cfg([])
    key = cache_key(base, "encoder")
    assert cache_key(compose_cfg(["train.precision=bf16"]), "encoder") != key
    assert cache_key(compose_cfg(["train.seed=1"]), "encoder") != key
    assert cache_key(compose_cfg(["encoder.layers=3"]), "encoder") != key
    assert cache_key(compose_cfg(["data.num_workers=2"]), "encoder") == key  # how data is loaded, not what
    assert cache_key(compose_cfg(["train.lr=0.01"]), "encoder") == key  # the diffusion stage's own setting
    assert cache_key(compose_cfg(["layout.dim=64"]), "layout") != cache_key(base, "layout")


CACHED = ("autoencoder", "encoder", "layout")


def _package_copy(tmp_path: Path) -> Path:
    import shutil

    package = tmp_path / "sg2video"
    shutil.copytree(REPO_ROOT / "src" / "sg2video", package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def test_the_stage_cache_key_covers_every_module_the_stage_imports():
    """The code part of the key follows the stage's imports, so modules a hand-kept list missed are in it."""
    from sg2video.pipeline import stage_code_files

    package = REPO_ROOT / "src" / "sg2video"
    reached = {stage: {f.relative_to(package).as_posix() for f in stage_code_files(stage, package)}
               for stage in CACHED}
    for stage, files in reached.items():
        assert {"__init__.py", "stages/__init__.py", f"stages/{stage}.py", "stages/common.py"} <= files, stage
        assert all((package / rel).is_file() for rel in files)
        assert [f.relative_to(package).as_posix() for f in stage_code_files(stage)] == sorted(files)
    assert {"unet/blocks.py", "unet/__init__.py", "autoencoder/model.py"} <= reached["autoencoder"]  # group_norm
    assert {"stages/encoder.py", "encoder/gcn.py", "layout/model.py"} <= reached["layout"]  # load_pretrainer
    assert "encoder/gcn.py" in reached["encoder"] and "encoder/gcn.py" not in reached["autoencoder"]
    for stage in CACHED:  # the CLI, sweeps and report pages train nothing
        assert not {"pipeline.py", "cli.py", "sweeps/page.py", "eval/report.py"} & reached[stage], stage


@pytest.mark.parametrize("stage", CACHED)
def test_an_edit_to_any_module_a_stage_imports_changes_its_code_hash(tmp_path, stage):
    from sg2video.pipeline import code_hash, stage_code_files

    package = _package_copy(tmp_path)
    before = code_hash(stage, package)
    files = stage_code_files(stage, package)
    assert files and all(package in f.parents for f in files)
    for path in files:
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit\n")
        assert code_hash(stage, package) != before, path.relative_to(package)
        path.write_bytes(original)
    assert code_hash(stage, package) == before  # every edit undone: the same hash

    outside = [package / "sweeps" / "page.py", package / "pipeline.py", package / "eval" / "report.py"]
    assert not set(outside) & set(files)
    for path in outside:  # modules the stage does not import: the same hash
        path.write_text(path.read_text() + "\n# an edit\n")
    assert code_hash(stage, package) == before


def test_a_new_import_brings_its_module_into_the_stage_code_hash(tmp_path):
    """Imports inside functions, relative imports and `from package import submodule` are followed."""
    from sg2video.pipeline import code_hash, stage_code_files

    package = _package_copy(tmp_path)
    (package / "extra").mkdir()
    (package / "extra" / "__init__.py").write_text("")
    (package / "extra" / "deep.py").write_text("from . import deeper\n")
    (package / "extra" / "deeper.py").write_text("X = 1\n")
    before = code_hash("autoencoder", package)
    stage_file = package / "stages" / "autoencoder.py"
    stage_file.write_text(stage_file.read_text() + "\n\ndef _later():\n    from sg2video.extra import deep\n")
    files = {f.relative_to(package).as_posix() for f in stage_code_files("autoencoder", package)}
    assert {"extra/__init__.py", "extra/deep.py", "extra/deeper.py"} <= files
    edited = code_hash("autoencoder", package)
    assert edited != before
    deeper = package / "extra" / "deeper.py"
    deeper.write_text("X = 2\n")
    assert code_hash("autoencoder", package) != edited


def test_run_log_names_the_cache_entry_a_stage_is_stored_in_and_reused_from(tmp_path):
    from sg2video.pipeline import cache_key, run_cached
    from sg2video.rundir import stage_checkpoint
    from sg2video.train.checkpoint import atomic_save
    from sg2video.train.distributed import DistInfo

    cfg = compose_cfg([f"cache_dir={tmp_path / 'cache'}"])
    entry = tmp_path / "cache" / "encoder" / cache_key(cfg, "encoder")

    def train(run_dir: Path) -> Path:
        target = stage_checkpoint(run_dir, "encoder")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_save({"format": 1, "step": 3, "finished": True}, target)
        return target

    lines: list[str] = []
    first = tmp_path / "first"
    run_cached(cfg, first, "encoder", lambda: train(first), DistInfo(), lines.append)
    assert lines == [f"[encoder] trained; stored as cache entry {entry}"]
    assert (entry / "last.pt").exists()
    lines.clear()
    second = tmp_path / "second"
    run_cached(cfg, second, "encoder", lambda: pytest.fail("trained again"), DistInfo(), lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"[encoder] reusing cached stage {entry} ")


def test_the_default_run_is_sized_in_steps_not_minutes():
    """A loaded machine trains the same steps as an idle one: no stage of the default run stops on the clock."""
    cfg = compose_cfg([])
    budgets = {key: OmegaConf.select(cfg, key) for key in ("train.max_minutes", "encoder.train.max_minutes",
                                                           "autoencoder.train.max_minutes", "layout.train.max_minutes")}
    assert all(value in (None, 0) for value in budgets.values()), budgets
    assert cfg.train.max_steps > 0 and cfg.encoder.train.max_steps > 0 and cfg.layout.train.max_steps > 0


@pytest.mark.slow
def test_eval_applies_the_configs_layout_sampling_settings(smoke_run):
    """`stage=eval layout.candidates=3` measures that setting on a finished run; the run's own config changes
    nothing (its resolved window included), and a model key is not a sampling setting."""
    from sg2video.generators import load_video_generator
    from sg2video.stages.evaluate import apply_layout_settings

    run_dir, _ = smoke_run
    video_gen = load_video_generator(run_dir / "checkpoints" / "diffusion" / "last.pt", "cpu")
    assert apply_layout_settings(video_gen, compose_cfg(SMOKE)) == {}
    assert apply_layout_settings(video_gen, compose_cfg([*SMOKE, "layout.candidates=3", "layout.ranges=class"])) \
        == {"candidates": 3, "ranges": "class"}
    assert video_gen.layout.cfg.candidates == 3 and video_gen.layout.cfg.ranges == "class"
