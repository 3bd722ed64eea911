"""The registries: stages (sg2video.pipeline.STAGES, plus each generator's training stage) and video generators
(sg2video.generators.GENERATORS, one `VideoGenerator` interface); and a third generator, one module
(tests/colour_boxes.py) plus one registry line, run through its stage, the eval stage and src/sample.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colour_boxes import ColourBoxGenerator, run_colour_boxes_stage
from sg2video.data.shapes import shapes_vocab
from sg2video.errors import UserError
from sg2video.generators import (GENERATORS, GeneratorEntry, VideoGenerator, generator_for_model, load_video_generator,
                                 register_generator)
from sg2video.pipeline import CACHED_STAGES, run_stage, stage_function, stage_plan
from sg2video.train.checkpoint import CheckpointError, save_training_checkpoint
from sg2video.train.distributed import DistInfo
from test_pipeline import SMOKE, compose_cfg

REPO = Path(__file__).resolve().parents[1]
REGISTRY_LINE = ('register_generator("colour_boxes", "colour_boxes", "sg2video.colour_boxes:ColourBoxGenerator", '
                 '"sg2video.colour_boxes:run_colour_boxes_stage")\n')


def test_every_stage_and_generator_resolves_to_its_function_and_class():
    from sg2video.sampling import DiffusionVideoGenerator, Sg2imVideoGenerator

    for name in ("autoencoder", "encoder", "layout", "diffusion", "sg2im", "eval"):
        assert stage_function(name).__name__ == f"run_{name}_stage"
    assert CACHED_STAGES == ("autoencoder", "encoder", "layout")
    assert generator_for_model("unet").generator_class() is DiffusionVideoGenerator
    assert generator_for_model("sg2im").generator_class() is Sg2imVideoGenerator
    assert [(e.stage, e.model) for e in GENERATORS.values()] == [("diffusion", "unet"), ("sg2im", "sg2im")]
    with pytest.raises(UserError, match=r"stage='nope' is not accepted \(accepted: all, autoencoder, encoder, layout, "
                                        r"eval, diffusion, sg2im\)"):
        stage_function("nope")
    with pytest.raises(UserError, match="model.name='nope' has no generator"):
        generator_for_model("nope")


@pytest.mark.parametrize("overrides, plan", [
    ([], ["autoencoder", "encoder", "layout", "diffusion", "eval"]),
    (["diffusion.space=pixel", "layout=given"], ["encoder", "diffusion", "eval"]),
    (["model=sg2im"], ["encoder", "layout", "sg2im", "eval"]),
    (["stage=layout"], ["layout"]),
])
def test_the_plan_takes_the_generator_stage_of_model_name(overrides, plan):
    assert stage_plan(compose_cfg(overrides)) == plan


def test_the_registry_refuses_taken_names_and_classes_that_are_no_generators():
    with pytest.raises(ValueError, match="taken by stage='diffusion'"):
        register_generator("diffusion", "other", ColourBoxGenerator, run_colour_boxes_stage)
    with pytest.raises(ValueError, match="taken by stage='sg2im'"):
        register_generator("other", "sg2im", ColourBoxGenerator, run_colour_boxes_stage)
    assert "other" not in GENERATORS
    with pytest.raises(TypeError, match="not a sg2video.generators.VideoGenerator subclass"):
        GeneratorEntry("x", "x", "sg2video.graphs:Vocab", run_colour_boxes_stage).generator_class()

    class NoLoader(VideoGenerator):
        def generate(self, graph_lists, *args, **kwargs):
            return torch.zeros(0)

    with pytest.raises(TypeError, match="NoLoader does not define from_state"):
        GeneratorEntry("x", "x", NoLoader, run_colour_boxes_stage).generator_class()
    with pytest.raises(TypeError, match="abstract"):
        type("NoGenerate", (VideoGenerator,), {})()


def test_a_checkpoint_of_no_generator_is_refused_naming_the_generators_checkpoints(tmp_path):
    path = save_training_checkpoint(tmp_path / "encoder", {"stage": "encoder", "step": 1, "finished": True})
    with pytest.raises(CheckpointError, match=r"a 'encoder' checkpoint, not a generator's \(use "
                                              r"checkpoints/diffusion/last.pt or checkpoints/sg2im/last.pt of a run\)"):
        load_video_generator(path)


# -- a third generator ---------------------------------------------------------------------------------


@pytest.fixture
def colour_boxes():
    """tests/colour_boxes.py registered through the public API for one test."""
    entry = register_generator("colour_boxes", "colour_boxes", ColourBoxGenerator, run_colour_boxes_stage)
    yield entry
    del GENERATORS["colour_boxes"]


def third_generator_config(run_dir: Path):
    """The smoke run's config (the shapes world) with `model.name` naming the third generator. Its model keys are
    the unet's: conf/model/ and the schema's model names (sg2video.schema.MODEL_SCHEMAS) are config, not registry,
    so the name is set here rather than with `model=colour_boxes`, and run.py could not select it."""
    cfg = compose_cfg([*SMOKE, f"run_dir={run_dir}", "cache_dir=null"])
    cfg.model.name = "colour_boxes"
    return cfg


def test_a_third_generator_runs_through_its_stage_and_the_eval_stage(colour_boxes, tmp_path):
    run_dir = tmp_path / "run"
    cfg = third_generator_config(run_dir)
    cfg.stage = "all"
    assert stage_plan(cfg) == ["encoder", "layout", "colour_boxes", "eval"]
    log: list[str] = []
    ckpt = run_stage(cfg, run_dir, "colour_boxes", DistInfo(), log.append)  # what run_pipeline does per stage
    assert ckpt == run_dir / "checkpoints" / "colour_boxes" / "last.pt"
    assert isinstance(VideoGenerator.from_checkpoint(ckpt), ColourBoxGenerator)
    headline = run_stage(cfg, run_dir, "eval", DistInfo(), log.append)
    assert [line.split(" ")[:2] for line in log] == [["[colour_boxes]", "starting"], ["[colour_boxes]", "done"],
                                                     ["[eval]", "starting"], ["[eval]", "done"]]
    ev = json.loads((run_dir / "metrics.json").read_text())["eval"]
    assert ev["generator"] == "colour_boxes" and ev["cond"] == "stamp" and ev["layout"] == "sampled"
    assert headline == ev["relation_accuracy"]
    # given the data's boxes it redraws the clips exactly; on its ring, which ignores relations, the objects are
    # right and the relations no better than the relation control's; without the condition, nothing is drawn
    assert ev["given_boxes/object_accuracy"] == ev["given_boxes/relation_accuracy"] == 1.0
    assert ev["object_accuracy"] == ev["box_head/object_accuracy"] == 1.0 and ev["relation_accuracy"] < 0.9
    assert ev["control_norel/relation_margin"] == 0.0
    assert ev["control_uncond/object_accuracy"] == 0.0
    assert ev["long/frames"] == 7 and ev["long/object_accuracy"] == 1.0  # one pass, longer than a clip
    assert ev["diversity/position_spread"] == 0.0  # one seed, one place on the ring
    assert ev["manipulation_object/changed_accuracy"] == 1.0
    assert (run_dir / "report.html").exists() and (run_dir / "samples" / "sample_000.gif").exists()


def _package_copy_with_the_third_generator(root: Path) -> Path:
    """src/ and conf/ copied, tests/colour_boxes.py as sg2video/colour_boxes.py and its line in the registry."""
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "conf", root / "conf")
    package = root / "src" / "sg2video"
    shutil.copy(Path(__file__).with_name("colour_boxes.py"), package / "colour_boxes.py")
    with open(package / "generators.py", "a") as registry:
        registry.write(REGISTRY_LINE)
    return root / "src" / "sample.py"


def test_sample_py_draws_with_a_third_generator_added_by_one_module_and_one_registry_line(tmp_path):
    from sg2video.data import build_dataset
    from sg2video.graph_json import graphs_to_json, write_graph_json

    cfg = third_generator_config(tmp_path / "run")
    ckpt = run_colour_boxes_stage(cfg, tmp_path / "run", DistInfo())
    item = build_dataset(cfg.data, "test").__getitems__([0])[0]
    graph = tmp_path / "clip.json"
    write_graph_json(graph, graphs_to_json(shapes_vocab(), item["graphs"], every_box=True))
    args = [f"ckpt={ckpt}", f"graph={graph}", "layout=given", "num=2"]
    # this package does not know the generator: one line, exit 2
    proc = subprocess.run([sys.executable, str(REPO / "src" / "sample.py"), *args, f"out={tmp_path / 'no'}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "a 'colour_boxes' checkpoint, not a generator's" in proc.stderr, proc.stderr
    sample_py = _package_copy_with_the_third_generator(tmp_path / "copy")
    proc = subprocess.run([sys.executable, str(sample_py), *args, f"out={tmp_path / 'out'}"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    truth = item["video"].permute(0, 2, 3, 1).numpy()  # (T, H, W, 3) uint8
    for i in range(2):
        assert np.array_equal(np.load(tmp_path / "out" / f"sample_{i:03d}.npy"), truth)  # the clip, redrawn
    drawn = json.loads((tmp_path / "out" / "sample_000.json").read_text())
    assert drawn["timeline"] == json.loads(graph.read_text())["timeline"]  # the boxes it was given, every frame
    assert (tmp_path / "out" / "graph.png").exists() and (tmp_path / "out" / "sample_001.mp4").exists()
