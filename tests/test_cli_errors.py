"""A person's mistake on any command line costs one line: exit status 2, no traceback, nothing written.

Every class of mistake (a missing required value, a wrong type, a number out of range, an unknown name, group,
option or key, a rule between keys, a missing or wrong dataset root, a bad experiment name) for each entry point
(run.py, sample.py, prepare.py, inspect_data.py). The table runs through `preflight`, the check each script makes
before Hydra runs, in this process (fast); one case per script runs the real script in a subprocess.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sg2video.cli import REPO_ROOT, preflight
from sg2video.config import validate

sys.path.insert(0, str(REPO_ROOT / "src"))


def _checks():
    import inspect_data
    import prepare
    import sample

    return {"config": validate, "sample": sample.check_settings, "prepare": prepare.check,
            "inspect": inspect_data.check_settings}


CASES = [
    # (config name, arguments, fragment of the one error line)
    ("config", ["data=action_genome"], "data.root is not set"),
    ("config", ["train.lr=abc"], "train.lr: Value 'abc' of type 'str' could not be converted to Float"),
    ("config", ["train.max_minutes=ten"], "train.max_minutes: Value 'ten'"),
    ("config", ["eval.guidance=high"], "eval.guidance: Value 'high'"),
    ("config", ["train.seed=x"], "train.seed: Value 'x' of type 'str' could not be converted to Integer"),
    ("config", ["train.compile=maybe"], "train.compile: Value 'maybe' is not a valid bool"),
    ("config", ["model.dim_mults=[1,a]"], "model.dim_mults[1]: Value 'a'"),
    ("config", ["train.ema_decay=2"], "train.ema_decay=2 must be a number >= 0 and < 1"),
    ("config", ["model.cfg_dropout=1.5"], "model.cfg_dropout=1.5 must be a number >= 0 and <= 1"),
    ("config", ["layout.candidates=0"], "layout.candidates=0 must be an integer >= 1"),
    ("config", ["layout.repair_steps=-1"], "layout.repair_steps=-1 must be an integer >= 0"),
    ("config", ["eval.split=train"], "eval.split='train' is not accepted (accepted: val, test)"),
    ("config", ["encoder.loss.mask_ratio=-0.1"], "encoder.loss.mask_ratio=-0.1 must be a number >= 0 and <= 1"),
    ("config", ["train.lr=0"], "train.lr=0 must be a number > 0"),
    ("config", ["model.cond=sideways"], "model.cond='sideways' is not accepted (accepted: concat, crossattn, hybrid, adm, none)"),
    ("config", ["diffusion.sampler=euler"], "diffusion.sampler='euler' is not accepted (accepted: ddpm, ddim)"),
    ("config", ["train.precision=fp8"], "train.precision='fp8' is not accepted (accepted: fp32, bf16, fp16)"),
    ("config", ["device=tpu"], "device='tpu' is not a device (accepted: auto, cpu, cuda, cuda:N)"),
    ("config", ["data=nope"], "Could not find 'data/nope' (accepted: action_genome, coco_stuff, gif_folder, household, shapes, visual_genome)"),
    ("config", ["layout=nope"], "Could not find 'layout/nope' (accepted: given, head, sampled)"),
    ("config", ["train.lrr=1"], "Could not override 'train.lrr'"),
    ("config", ["+experiment=nope"], "Could not find 'experiment/nope'"),
    ("config", ["data=visual_genome", "data.root=/no/such/dir"], "data.root='/no/such/dir' does not exist"),
    ("config", ["model.prefix_frames=4"], "model.prefix_frames=4 must be an integer in [0, data.frames) = [0, 4)"),
    ("config", ["diffusion.sample_steps=5000"], "diffusion.sample_steps=5000 is more than diffusion.timesteps=1000"),
    ("config", ["model.spatial_attn_levels=[3]"], "model.spatial_attn_levels=[3] names levels [3]"),
    ("config", ["model.adm_slots=-1"], "model.adm_slots=-1"),
    ("config", ["eval.fid_weights=/no/inception.pth"], "eval.fid_weights='/no/inception.pth': no such file"),
    ("config", ["eval.fvd_weights=/no/i3d.pt"], "eval.fvd_weights='/no/i3d.pt': no such file"),
    ("config", ["data.min_objects=5"], "data.min_objects=5 is above data.max_objects=4"),
    ("config", ["autoencoder.downsample=3"], "autoencoder.downsample=3 must be a power of two"),
    ("config", ["-m", "model.cond=crossattn,diagonal"], "model.cond='diagonal' is not accepted"),
    ("sample", [], "ckpt is not set"),
    ("sample", ["ckpt=x.pt"], "graph is not set"),
    ("sample", ["ckpt=x.pt", "graph=g.json", "seed=x"], "seed: Value 'x' of type 'str' could not be converted to Integer"),
    ("sample", ["ckpt=x.pt", "graph=g.json", "eta=2"], "eta=2 must be a number >= 0 and <= 1"),
    ("sample", ["ckpt=x.pt", "graph=g.json", "num=0"], "num=0 must be an integer >= 1"),
    ("sample", ["ckpt=x.pt", "graph=g.json", "sampler=euler"], "sampler='euler' is not accepted"),
    ("sample", ["ckpt=x.pt", "graph=g.json", "layout=sideways"], "Could not find 'layout/sideways' (accepted: given, head, sampled)"),
    ("sample", ["ckpt=/no/such.pt", "graph=g.json"], "ckpt=/no/such.pt does not exist"),
    ("sample", ["ckpt=x.pt", "graph=g.json", "stepz=3"], "Could not override 'stepz'"),
    ("prepare", ["data=action_genome"], "data.root is not set"),
    ("prepare", ["data=action_genome", "data.root=/no/such/dir"], "data.root=/no/such/dir does not exist"),
    ("prepare", ["unpickle_ok=maybe"], "unpickle_ok: Value 'maybe' is not a valid bool"),
    ("prepare", ["data=nope"], "Could not find 'data/nope'"),
    ("inspect", ["split=foo"], "split='foo' is not a split (accepted: train, val, test)"),
    ("inspect", ["num=two"], "num: Value 'two' of type 'str' could not be converted to Integer"),
    ("inspect", ["fps=0"], "fps=0 must be a number > 0 and <= 100"),
    ("inspect", ["data.size=abc"], "data.size: Value 'abc'"),
    ("inspect", ["data=coco_stuff"], "data.root is not set"),
]


@pytest.mark.parametrize("config_name, args, fragment", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_a_mistake_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, config_name, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.pt").write_bytes(b"not read by the checks")
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(SystemExit) as exited:
        preflight(config_name, args, _checks()[config_name])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "x.pt"]  # nothing written


@pytest.mark.parametrize("script, args, fragment", [
    ("run.py", ["train.lr=abc"], "train.lr: Value 'abc'"),
    ("sample.py", [], "ckpt is not set"),
    ("prepare.py", ["data=action_genome"], "data.root is not set"),
    ("inspect_data.py", ["split=foo"], "split='foo' is not a split"),
])
def test_each_script_refuses_in_one_line_without_a_traceback_or_a_file(tmp_path, script, args, fragment):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "src" / script), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
