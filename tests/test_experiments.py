"""The ablation suite: named experiments compose into their grids, each run logs its hyper-parameters for
TensorBoard's HPARAMS tab, a local multirun shares its encoder through the stage cache (also between two
racing processes), and experiments/report.py compares the runs of a sweep."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sg2video.cli import CONF_DIR, REPO_ROOT
from sg2video.config import register_resolvers, validate
from sg2video.hparams import final_metrics, hparams_of, log_hparams

REPORT = REPO_ROOT / "experiments" / "report.py"
SEEDS = {0, 1}
# name -> (swept key, the values of its grid, how a composed config shows the value)
ABLATIONS = {
    "ablate_cond": ("+arm", ["cond_concat", "cond_crossattn", "cond_crossattn_graph", "cond_hybrid", "cond_adm",
                             "cond_none"],
                    lambda c: "cond_" + c.model.cond + ("" if c.model.grounding or c.model.cond != "crossattn" else "_graph")),
    "ablate_cond_household": ("+arm", ["cond_concat", "cond_crossattn", "cond_crossattn_graph", "cond_hybrid",
                                       "cond_adm", "cond_none"],
                              lambda c: (c.data.name, "cond_" + c.model.cond
                                         + ("" if c.model.grounding or c.model.cond != "crossattn" else "_graph"))),
    "ablate_gcn": ("encoder", ["gcn", "gcn_sum", "gcn_deep", "onehot"], lambda c: c.encoder.name),
    "ablate_losses": ("encoder.loss", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.1)],
                      lambda c: (c.encoder.loss.contrastive, c.encoder.loss.masked)),
    "ablate_prefix": ("model.prefix_frames", [0, 2, 4], lambda c: c.model.prefix_frames),
}


def compose_cfg(overrides: list[str], hydra_config: bool = False):
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)
    finally:
        GlobalHydra.instance().clear()


def sweep_jobs(params: dict, extra: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of `hydra.sweeper.params` plus command-line overrides."""
    lines = [f"{key}={value}" for key, value in params.items()] + extra
    [batch] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    return batch


# -- the named experiments -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_named_experiment_composes_into_its_grid(name):
    key, values, shown = ABLATIONS[name]
    cfg = compose_cfg([f"+experiment={name}"], hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert set(params) == {key, "train.seed"}, params
    jobs = sweep_jobs(params, [f"+experiment={name}"])
    assert len(jobs) == len(values) * len(SEEDS)
    seen = set()
    for job in jobs:
        job_cfg = compose_cfg(job)
        validate(job_cfg)
        seen.add((shown(job_cfg), job_cfg.train.seed))
        assert job_cfg.encoder.loss.box == 0.1  # a loss pair is merged into encoder.loss, not replacing it
    if name.endswith("_household"):  # the grid runs on the household world: (world, value) pairs
        values = [("household", v) for v in values]
    assert seen == {(v, s) for v in values for s in SEEDS}  # the grid is exactly values x seeds


def test_prefix_ablation_asks_for_long_timelines_and_command_line_wins():
    cfg = compose_cfg(["+experiment=ablate_prefix"], hydra_config=True)
    assert cfg.eval.long_frames > cfg.data.frames and cfg.eval.long_samples == 16
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    # a sweep on the command line replaces the experiment's own grid for that key: 2 seeds -> 1
    jobs = sweep_jobs(params, ["train.seed=7"])
    assert sorted(j for job in jobs for j in job if j.startswith("train.seed")) == ["train.seed=7"] * 3


def test_a_bad_value_in_an_experiments_grid_is_refused_before_anything_runs(tmp_path, monkeypatch):
    """The preflight composes every job of the experiment's own grid (not only the command line's): a typo
    there is one line, exit 2, and no sweep directory."""
    root = tmp_path / "suite"
    (root / "experiments" / "experiment").mkdir(parents=True)
    (root / "experiments" / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      model.cond: crossattn,layuot\n")
    sweep = tmp_path / "sweep"
    env = {**__import__("os").environ, "SG2VIDEO_ROOT": str(root)}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "src" / "run.py"), "-m", "+experiment=typo",
                           f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "layuot" in lines[0] and "concat, crossattn, hybrid, adm, none" in lines[0]
    assert "Traceback" not in proc.stderr and not sweep.exists()
    # the command line's values for the key replace the grid's (Hydra's rule), so this passes the preflight
    from sg2video.cli import preflight

    monkeypatch.setenv("SG2VIDEO_ROOT", str(root))
    assert preflight("config", ["-m", "+experiment=typo", "model.cond=crossattn,none"], validate) is None
    with pytest.raises(SystemExit) as exit_info:
        preflight("config", ["-m", "+experiment=typo"], validate)
    assert exit_info.value.code == 2


def test_smoke_experiment_still_composes():
    cfg = compose_cfg(["+experiment=smoke"], hydra_config=True)
    validate(cfg)
    assert cfg.hydra.sweeper.params is None and cfg.train.max_steps == 3


# -- hparams -----------------------------------------------------------------------------------------


def read_session(session_dir: Path) -> tuple[dict, dict, dict[str, float]]:
    """(hparams of the session start, metric names of the experiment summary -> None, scalars)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(session_dir))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    hparams = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
    metrics = {info.name.tag: None for info in experiment.metric_infos}
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    return hparams, metrics, scalars


def test_hparams_are_flat_settings_and_finite_numbers(tmp_path):
    cfg = compose_cfg(["+experiment=smoke", "model.cond=concat", "train.seed=3"])
    hp = hparams_of(cfg)
    assert hp["model.cond"] == "concat" and hp["train.seed"] == 3 and hp["encoder.loss.masked"] == 1.0
    assert hp["model.dim_mults"] == "[1, 2]" and hp["data.name"] == "shapes"
    assert hp["eval.fid_weights"] == "none"  # None would drop the column for this run
    metrics = {"encoder": {"g2v_top1": 0.25, "steps": 4, "reused_from": "/x"},
               "eval": {"relation_accuracy": 0.5, "relation_accuracy/left of": 1.0, "fid": None, "ok": True}}
    assert final_metrics(metrics) == {"final/encoder/g2v_top1": 0.25, "final/encoder/steps": 4.0,
                                      "final/eval/relation_accuracy": 0.5,
                                      "final/eval/relation_accuracy/left of": 1.0}

    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    log_hparams(cfg, tmp_path)
    log_hparams(cfg, tmp_path)  # a re-run replaces its session instead of adding one
    session = tmp_path / "tb" / "hparams"
    assert len(list(session.glob("events.out.tfevents.*"))) == 1
    hparams, names, scalars = read_session(session)
    assert hparams["model.cond"] == "concat" and hparams["train.seed"] == 3.0
    assert set(names) == set(final_metrics(metrics))
    assert scalars["final/eval/relation_accuracy"] == pytest.approx(0.5)


# -- the report on a sweep made by hand ------------------------------------------------------------


def fake_job(sweep: Path, num: int, cond: str, seed: int, metrics: dict | None, videos=None) -> Path:
    """A job directory as Hydra and the pipeline leave it (no training): overrides, config, metrics, samples."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["+experiment=smoke", f"model.cond={cond}", f"train.seed={seed}", f"cache_dir={sweep}/cache"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"stage": "all", "data": {"name": "shapes"},
                                                                "train": {"seed": seed}}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if videos is not None:
        from sg2video.data.shapes import ShapesDataset
        from sg2video.stages.evaluate import write_samples

        data = ShapesDataset("test", 8, size=16, frames=4)
        items = data.__getitems__(list(range(len(videos))))
        write_samples(job, data.vocab, torch.from_numpy(np.stack(videos)), items, len(videos))
    return job


def report_module():
    """experiments/report.py imported (it is a script, not a package module), for in-process calls."""
    import importlib.util

    if "sweep_report" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sweep_report", REPORT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["sweep_report"] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["sweep_report"]


def run_report(sweep: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPORT), str(sweep), "--out", str(out)], capture_output=True,
                          text=True, timeout=300)


def test_report_means_spread_failures_and_best_worst_samples(tmp_path):
    from sg2video.data.shapes import ShapesDataset

    sweep = tmp_path / "sweep"
    truth = [item["video"].permute(0, 2, 3, 1).numpy() for item in ShapesDataset("test", 8, size=16, frames=4)
             .__getitems__([0, 1])]
    black = np.zeros_like(truth[0])
    fake_job(sweep, 0, "concat", 0, {"eval": {"relation_accuracy": 0.5, "object_accuracy": 0.9},
                                     "encoder": {"g2v_top1": 0.25}}, videos=[black, truth[1]])
    fake_job(sweep, 1, "concat", 1, {"eval": {"relation_accuracy": 0.7, "object_accuracy": None},
                                     "encoder": {"g2v_top1": 0.75}}, videos=[truth[0], black])
    fake_job(sweep, 2, "none", 0, {"eval": {"relation_accuracy": 0.1, "object_accuracy": 0.2}})
    fake_job(sweep, 3, "none", 1, None)  # crashed: no metrics.json
    fake_job(sweep, 4, "none", 2, {"encoder": {"g2v_top1": 0.5}})  # died before eval
    out = tmp_path / "report"
    proc = run_report(sweep, out)
    assert proc.returncode == 0, proc.stderr
    assert "5 jobs (2 failed) in 2 arms" in proc.stdout

    rows = {row["arm"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"concat", "none"}
    concat, none = rows["concat"], rows["none"]
    assert float(concat["eval/relation_accuracy mean"]) == pytest.approx(0.6)
    assert float(concat["eval/relation_accuracy std"]) == pytest.approx(math.sqrt(0.02))  # sample std
    assert concat["eval/relation_accuracy n"] == "2" and concat["eval/object_accuracy n"] == "1"  # null skipped
    assert float(concat["encoder/g2v_top1 mean"]) == pytest.approx(0.5)
    assert (none["runs"], none["failed"]) == ("3", "2")
    assert none["eval/relation_accuracy n"] == "1" and none["eval/relation_accuracy std"] == ""
    assert none["encoder/g2v_top1 n"] == "0"  # the failed job's numbers stay out of the means

    md = (out / "results.md").read_text()
    assert "| concat | 2/2 | 0.900 (n=1) | 0.600 ± 0.141 (n=2) |" in md
    assert "| 3 | none | 1 | FAILED: no metrics.json |" in md and "| 4 | none | 2 | FAILED: metrics.json lacks eval |" in md
    assert "Common overrides: `experiment=smoke`" in md and "cache_dir" not in md

    page = (out / "comparison.html").read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", page)
    captions = re.findall(r'<p class="caption">([^<]*)</p>', page)
    # best: a ground-truth clip (the checker accepts it exactly), worst: the black video; first / last of equals
    assert captions[0].startswith("best: job 0 (seed 0), sample 001: relation acc 1.000, object acc 1.000"), captions
    assert captions[1].startswith("worst: job 1 (seed 1), sample 001: relation acc 0.000, object acc 0.000"), captions
    assert len(captions) == 2  # the `none` arm saved no samples
    assert "job 3: no metrics.json" in page
    assert (out / "metrics.png").exists() and not (out / "losses.png").exists()  # no TensorBoard logs: no curves
    from sg2video.sweeps import summarize
    from sg2video.sweeps.page import samples_figure

    figure = samples_figure(summarize(sweep))  # samples.png: the page's two picks, one strip each, same captions
    titles = [ax.get_title(loc="left") for ax in figure.axes]
    assert len(titles) == 2 and titles[0].startswith("concat - best (job 0)") and "relations 0.000" in titles[1]
    assert (out / "samples.png").stat().st_size > 0

    again = tmp_path / "again"
    assert report_module().main([str(sweep), "--out", str(again)]) == 0
    for name in ("results.md", "results.csv"):  # committed tables regenerate exactly
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_report_refuses_a_directory_without_jobs(tmp_path, capsys):
    report = report_module()
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert report.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {tmp_path}: no job directories (expected <sweep dir>/<job number>/.hydra/)",
                   f"error: {tmp_path / 'missing'}: no such sweep directory"]
    assert not (tmp_path / "out").exists()


# -- real runs ----------------------------------------------------------------------------------------


def run_py(*args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "src" / "run.py"), *args]


@pytest.fixture(scope="session")  # built once per test run (conftest keeps its users in one worker)
def local_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("local_sweep")
    sweep = root / "sweep"
    started = time.monotonic()
    proc = subprocess.run(run_py("-m", "+experiment=smoke", "model.cond=concat,none", f"hydra.sweep.dir={sweep}",
                                 f"cache_dir={root / 'cache'}", "eval.curve_every=2", "eval.curve_samples=4"),
                          cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"2-job local sweep: {time.monotonic() - started:.1f} s")
    return sweep, proc.stdout


@pytest.mark.slow
def test_local_sweep_runs_each_job_in_its_directory_and_shares_the_encoder(local_sweep):
    sweep, stdout = local_sweep
    for num, cond in ((0, "concat"), (1, "none")):
        assert f"model.cond={cond}" in yaml.safe_load((sweep / str(num) / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads((sweep / str(num) / "metrics.json").read_text())
        assert metrics["eval"]["num_samples"] == 4 and 0.0 <= metrics["eval"]["relation_accuracy"] <= 1.0
    # job 0 trained the encoder, job 1 (same encoder config) took it from the cache
    job1 = stdout[stdout.index("#1 : "):]
    assert stdout.count("[encoder] reusing cached stage") == 1 and "[encoder] reusing cached stage" in job1
    encoders = [sweep / str(n) / "checkpoints" / "encoder" / "last.pt" for n in (0, 1)]
    assert encoders[0].read_bytes() == encoders[1].read_bytes()
    trained, reused = (json.loads((sweep / str(n) / "metrics.json").read_text())["encoder"] for n in (0, 1))
    assert reused.pop("reused_from").startswith(str(sweep.parent / "cache" / "encoder"))
    assert reused == trained  # the reusing run reports the retrieval of the encoder it uses


@pytest.mark.slow
def test_every_job_of_the_sweep_is_a_row_of_the_hparams_tab(local_sweep):
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import metadata
    from tensorboard.util.tensor_util import make_ndarray

    sweep, _ = local_sweep
    # what `tensorboard --logdir <sweep dir>` loads: every run below it, named by its path
    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep))
    multiplexer.Reload()
    sessions = multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    assert set(sessions) == {"0/tb/hparams", "1/tb/hparams"}, sessions
    for num, cond in ((0, "concat"), (1, "none")):
        content = sessions[f"{num}/tb/hparams"]
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["model.cond"].string_value == cond
        assert start.hparams["train.seed"].number_value == 0 and start.hparams["experiment"].string_value == "smoke"
        metrics = json.loads((sweep / str(num) / "metrics.json").read_text())
        for section, key in (("eval", "relation_accuracy"), ("encoder", "g2v_top1")):  # the metric columns
            [event] = multiplexer.Tensors(f"{num}/tb/hparams", f"final/{section}/{key}")
            assert float(make_ndarray(event.tensor_proto)) == pytest.approx(metrics[section][key])


@pytest.mark.slow
def test_report_on_the_local_sweep(local_sweep, tmp_path):
    sweep, _ = local_sweep
    out = sweep / "report"  # inside the sweep dir: not mistaken for a job
    proc = run_report(sweep, out)
    assert proc.returncode == 0, proc.stderr
    assert "2 jobs (0 failed) in 2 arms" in proc.stdout
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["arm"] for row in rows] == ["concat", "none"]
    for row, num in zip(rows, (0, 1)):
        metrics = json.loads((sweep / str(num) / "metrics.json").read_text())
        assert float(row["eval/relation_accuracy mean"]) == pytest.approx(metrics["eval"]["relation_accuracy"])
        assert float(row["encoder/v2g_top5 mean"]) == pytest.approx(metrics["encoder"]["v2g_top5"])
        assert float(row["eval/long/relation_accuracy mean"]) == pytest.approx(metrics["eval"]["long/relation_accuracy"])
        assert float(row["eval/fidelity/fd_frame mean"]) == pytest.approx(metrics["eval"]["fidelity/fd_frame"])
    page = (out / "comparison.html").read_text()
    assert page.count('<h3 class="arm">') == 2 and page.count('<p class="caption">best: ') == 2
    assert (out / "losses.png").stat().st_size > 0 and (out / "metrics.png").stat().st_size > 0
    # eval.curve_every=2 of a 3-step run: points at steps 2 and 3 in each job's curve.json, one table row each
    curves = (out / "curves.md").read_text()
    for num, arm in ((0, "concat"), (1, "none")):
        points = json.loads((sweep / str(num) / "curve.json").read_text())["points"]
        assert [p["step"] for p in points] == [2, 3] and all(p["graphs"] == 4 for p in points)
        assert points[1]["train_cpu_seconds"] > points[0]["train_cpu_seconds"] > 0
        assert f"| {arm} | 3 | {points[1]['object_accuracy']:.3f} | {points[1]['relation_accuracy']:.3f} |" in curves
    assert (out / "curves.png").stat().st_size > 0

    # a job that died without metrics.json is listed as failed, and the report still runs
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report"))
    (copy / "1" / "metrics.json").unlink()
    proc = run_report(copy, tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    assert "| 1 | none | 0 | FAILED: no metrics.json |" in (tmp_path / "report" / "results.md").read_text()


@pytest.mark.slow
def test_measure_sampling_scores_samplers_control_and_the_timeline(local_sweep, tmp_path):
    """experiments/measure_sampling.py on the sweep's concat job: a row per sampler plus the control, and the
    32-frame relation-swap timeline in its two segments (a 4-frame model with 1 prefix frame: 11 chunks)."""
    sweep, _ = local_sweep
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "measure_sampling.py"), str(sweep / "0"),
                           "--num", "2", "--samplers", "ddim:3,ddpm:50", "--control", "--timeline-num", "1",
                           "--json", str(out), "--out", str(tmp_path / "videos")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    rows = [(r["sampler"], r["steps"], r["guidance"]) for r in figures["samplers"]]
    assert rows == [("ddim", 3, 2.0), ("ddpm", 50, 2.0), ("ddim", 3, 0.0)]
    for row in figures["samplers"] + figures["timeline"]:
        assert all(0.0 <= row[k] <= 1.0 for k in ("object_accuracy", "colour_accuracy") if k in row)
        assert row["seconds_per_video"] > 0
    segments = [(r["model"], r["frames"]) for r in figures["timeline"]]
    assert segments == [("conditioned", "0-15"), ("conditioned", "16-31"), ("unconditioned", "0-15"),
                        ("unconditioned", "16-31")]
    assert "left of" in figures["timeline"][0]["relations"] and "right of" in figures["timeline"][1]["relations"]
    video = np.load(tmp_path / "videos" / "timeline_000.npy")
    assert video.shape == (32, 16, 16, 3) and video.dtype == np.uint8


@pytest.mark.slow
def test_rescore_samples_scores_each_job_of_a_sweep(local_sweep, tmp_path):
    sweep, _ = local_sweep
    script = str(REPO_ROOT / "experiments" / "rescore_samples.py")
    proc = subprocess.run([sys.executable, script, str(sweep)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == [f"| {sweep / '0'}", f"| {sweep / '1'}"]
    assert "model.cond=concat" in rows[0][1] and "model.cond=none" in rows[1][1]
    from sg2video.data.shapes import shapes_vocab
    from sg2video.eval.compliance import score_videos
    from sg2video.graph_json import load_graph_json

    for num, row in enumerate(rows):  # the 2 samples the smoke eval saved, scored here independently
        stems = [sweep / str(num) / "samples" / f"sample_{i:03d}" for i in range(2)]
        videos = [np.load(f"{stem}.npy") for stem in stems]
        graphs = [load_graph_json(f"{stem}.json", shapes_vocab()).frame_graphs(v.shape[0])
                  for stem, v in zip(stems, videos)]
        expected = score_videos(videos, graphs)
        assert row[2] == "2"
        for cell, key in zip(row[3:], ("object_accuracy", "relation_accuracy", "colour_accuracy")):
            value = expected[key]
            assert cell.strip(" |") == ("nan" if value != value else f"{value:.3f}")
    bad = subprocess.run([sys.executable, script, str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a directory" in bad.stderr


@pytest.mark.slow
def test_two_racing_runs_train_the_shared_encoder_once(tmp_path):
    cache = tmp_path / "cache"
    common = ["+experiment=smoke", "stage=encoder", f"cache_dir={cache}"]
    procs = [subprocess.Popen(run_py(*common, f"hydra.run.dir={tmp_path / name}"), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in "ab"]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reused = ["[encoder] reusing cached stage" in out for out in outputs]
    assert sorted(reused) == [False, True], outputs
    trainer, reuser = (tmp_path / "ab"[reused.index(False)]), (tmp_path / "ab"[reused.index(True)])
    [entry] = [p for p in (cache / "encoder").iterdir() if p.is_dir()]
    # the reuser was already running before the encoder was in the cache: it waited on the lock
    assert (reuser / ".hydra" / "config.yaml").stat().st_mtime < (entry / "last.pt").stat().st_mtime
    assert (trainer / "checkpoints/encoder/last.pt").read_bytes() == (reuser / "checkpoints/encoder/last.pt").read_bytes()


@pytest.mark.slow
def test_a_named_ablation_runs_its_whole_grid_and_the_report_groups_seeds(tmp_path):
    # the smoke experiment's sizes with ablate_cond's grid (Hydra merges both), encoder stage only: 12 short jobs
    sweep = tmp_path / "sweep"
    proc = subprocess.run(run_py("-m", "+experiment=[smoke,ablate_cond]", "stage=encoder", f"hydra.sweep.dir={sweep}",
                                 f"cache_dir={tmp_path / 'cache'}"), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = {}
    arms = ABLATIONS["ablate_cond"][1]
    for num in range(len(arms) * len(SEEDS)):
        overrides = dict(line.split("=", 1) for line in
                         yaml.safe_load((sweep / str(num) / ".hydra" / "overrides.yaml").read_text()))
        jobs[num] = (overrides["+arm"], int(overrides["train.seed"]))
    assert set(jobs.values()) == {(c, s) for c in arms for s in SEEDS}
    assert proc.stdout.count("[encoder] reusing cached stage") == 10  # one encoder per seed, shared by the arms

    out = tmp_path / "report"
    assert report_module().main([str(sweep), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["arm"] for row in rows] == arms
    for row in rows:  # each arm: its two seeds, i.e. the two shared encoders
        assert (row["runs"], row["failed"], row["encoder/g2v_top5 n"]) == ("2", "0", "2")
        seeds = [json.loads((sweep / str(n) / "metrics.json").read_text())["encoder"]["g2v_top5"]
                 for n, (cond, _) in jobs.items() if cond == row["arm"]]
        assert float(row["encoder/g2v_top5 mean"]) == pytest.approx(np.mean(seeds))
        assert row["encoder/g2v_top5 std"] == rows[0]["encoder/g2v_top5 std"]


FAILING_SWEEP = ("train.lr=3e-4,1e30,1e-4", "train.max_bad_steps=1")  # job 1's lr makes the loss blow up at step 2


def assert_one_failed_job_and_two_finished(sweep: Path, stderr: str) -> None:
    """Job 1 recorded its one-line reason and the others ran to the end; the sweep named the failure."""
    failure = json.loads((sweep / "1" / "failed.json").read_text())
    assert failure["kind"] == "error" and "the loss was not finite" in failure["reason"]
    assert "error: 1 job(s) of the sweep" in stderr and "job 1: diffusion: the loss was not finite" in stderr
    assert "the loss was not finite" in (sweep / "1" / "run.log").read_text()
    for num in (0, 2):
        assert not (sweep / str(num) / "failed.json").exists()
        assert json.loads((sweep / str(num) / "metrics.json").read_text())["eval"]["num_samples"] == 4
    summary = report_module().summarize(sweep)
    failed = {job.num: job.failure for job in summary.jobs if job.failure}
    assert list(failed) == ["1"] and "the loss was not finite" in failed["1"]


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_sweep_runs_the_others_then_exits_1(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(run_py("-m", "+experiment=smoke", *FAILING_SWEEP, f"hydra.sweep.dir={sweep}",
                                 "cache_dir=null"), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert_one_failed_job_and_two_finished(sweep, proc.stderr)
