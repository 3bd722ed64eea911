"""src/inspect_data.py: export clips with their graphs, and refuse bad settings before writing anything."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image, ImageSequence

from sg2video.data import build_dataset
from sg2video.data.shapes import shapes_vocab
from sg2video.errors import ConfigError
from sg2video.eval.compliance import check_video
from sg2video.graph_json import load_graph_json
from sg2video.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "src" / "inspect_data.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("inspect_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="inspect", overrides=list(overrides))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _gif_frames_by_time(path: Path, frame_ms: int) -> list[np.ndarray]:
    """GIF frames repeated by their durations (Pillow merges identical neighbours into one longer frame)."""
    frames = []
    with Image.open(path) as gif:
        for frame in ImageSequence.Iterator(gif):
            frames += [np.asarray(frame.convert("RGB"))] * round(frame.info["duration"] / frame_ms)
    return frames


def test_cli_exports_clips_that_round_trip(tmp_path):
    out = tmp_path / "clips"
    done = _run(["data=shapes", "split=val", "num=2", "start=3", "data.size=32", "data.frames=8", f"out={out}"], ROOT)
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:03d}.{ext}" for i in (3, 4) for ext in ("gif", "json", "npy", "png")]

    vocab = shapes_vocab()
    dataset = build_dataset(_config("data.size=32", "data.frames=8").data, "val")  # what the CLI composed
    for index in (3, 4):
        item = dataset[index]
        expected = item["video"].permute(0, 2, 3, 1).numpy()
        frames = np.load(out / f"{index:03d}.npy")
        assert frames.dtype == np.uint8 and frames.shape == (8, 32, 32, 3)
        np.testing.assert_array_equal(frames, expected)

        # the gif shows the same pixels, upscaled 4x to 128 px, at 4 fps
        gif_frames = _gif_frames_by_time(out / f"{index:03d}.gif", frame_ms=250)
        assert len(gif_frames) == 8
        np.testing.assert_array_equal(np.stack(gif_frames)[:, ::4, ::4], expected)
        assert gif_frames[0].shape == (128, 128, 3)

        # the graph JSON expands to the dataset's per-frame relations
        spec = load_graph_json(out / f"{index:03d}.json", vocab)
        graphs = spec.frame_graphs()
        assert len(graphs) == 8
        for t in range(8):
            assert graphs[t].same_relations(item["graphs"][t]), t
        assert json.loads((out / f"{index:03d}.json").read_text())["source"] == {
            "dataset": "shapes", "split": "val", "index": index, "seed": 0,
        }

        with Image.open(out / f"{index:03d}.png") as picture:
            assert picture.width >= 800 and picture.height >= 300
            assert len(picture.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10

        # what was written is a ground-truth clip for the compliance checker
        result = check_video(frames, graphs, vocab)
        assert (result.object_accuracy, result.relation_accuracy, result.extra_objects) == (1.0, 1.0, 0.0)


@pytest.mark.parametrize("bad, fragment", [("split=foo", "split='foo'"), ("data=nope", "data/nope"),
                                           ("num=two", "num: Value 'two' of type 'str' could not be converted to Integer")])
def test_cli_refuses_a_bad_setting_in_one_line_and_writes_nothing(tmp_path, bad, fragment):
    done = _run([bad, "num=1", "out=never"], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], done.stderr
    assert list(tmp_path.iterdir()) == []  # no out folder, no Hydra run folder or log


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["num=0"], "num=0 must be an integer >= 1"),
        (["start=-1"], "start=-1 must be an integer >= 0"),
        (["start=510", "num=3"], "has 512 clips"),
        (["split=training"], "split='training' is not a split (accepted: train, val, test)"),
        (["data.name=kinetics"], "data.name='kinetics' is not accepted (accepted: shapes, action_genome"),
        (["fps=0"], "fps=0 must be a number"),
    ],
)
def test_bad_settings_are_refused_before_writing(tmp_path, overrides, fragment):
    script = _load_script()
    cfg = _config(*overrides, f"out={tmp_path / 'out'}")
    with pytest.raises(ConfigError) as info:
        script.export_clips(cfg)
    assert fragment in str(info.value)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    script = _load_script()
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        script.export_clips(_config("out=" + str(tmp_path / "taken")))


def test_relative_out_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    script = _load_script()
    monkeypatch.chdir(tmp_path)
    written = script.export_clips(_config("num=1", "start=7", "data.frames=3", "out=rel/dir"))
    assert sorted(p.name for p in written) == ["007.gif", "007.json", "007.npy", "007.png"]
    assert all(p.parent == tmp_path / "rel" / "dir" for p in written)
    assert read_video(tmp_path / "rel" / "dir" / "007.npy").shape == (3, 32, 32, 3)
