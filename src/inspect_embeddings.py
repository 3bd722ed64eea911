"""Maps of a pretrained encoder's graph and video vectors on held-out clips, for one or more datasets at once.

    python src/inspect_embeddings.py ckpt=<encoder checkpoint or run dir> data=NAME [data.root=...]
        [+data@data2=NAME data2.root=...] [splits=[val]] [num=200] [highlight_class=NAME] [out=DIR]

Every clip's graph vector and video vector (sg2video.eval.embeddings), projected together by PCA: one PNG per
view (coloured by modality, dataset, split, and optionally by whether a clip holds `highlight_class`), matched
pairs' distances against random pairs, and retrieval beside them (figures.json, index.html). Frames are read at
the encoder's own image size. Every setting is checked before anything is read or written.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from hydra.utils import to_absolute_path  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sg2video.cli import preflight  # noqa: E402
from sg2video.errors import ConfigError, exit_on_user_error  # noqa: E402

DATA_KEYS = ("data", "data2", "data3")


def checkpoint_path(cfg: DictConfig) -> Path:
    path = Path(to_absolute_path(str(cfg.ckpt)))
    if path.is_dir():
        path = path / "checkpoints" / "encoder" / "last.pt"
    if not path.is_file():
        raise ConfigError(f"ckpt={cfg.ckpt!r}: no such file (an encoder-stage checkpoint, or a run directory "
                          "holding checkpoints/encoder/last.pt)")
    return path


def data_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    return [(key, cfg[key]) for key in DATA_KEYS if cfg.get(key) is not None]


def check_settings(cfg: DictConfig) -> None:
    from sg2video.config import validate_data
    from sg2video.schema import check_ranges

    check_ranges(cfg, "inspect_embeddings")
    checkpoint_path(cfg)
    for key, data in data_configs(cfg):
        validate_data(OmegaConf.create({"data": OmegaConf.to_container(data, resolve=True)}))
        if data.name == "gif_folder":
            raise ConfigError(f"{key}=gif_folder has no scene graphs to embed (accepted: a dataset with graphs)")
    out = Path(to_absolute_path(str(cfg.out)))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={cfg.out!r} exists and is not a directory")


@hydra.main(version_base=None, config_path="../conf", config_name="inspect_embeddings")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    import torch

    from sg2video.data import build_dataset
    from sg2video.eval.embeddings import build_map, embed_set, summary_lines, write_maps
    from sg2video.stages.encoder import load_pretrainer
    from sg2video.train.checkpoint import CheckpointError

    torch.set_num_threads(2)
    path = checkpoint_path(cfg)
    try:
        model, vocab, state = load_pretrainer(path)
    except KeyError as err:
        raise CheckpointError(f"ckpt={cfg.ckpt!r}: not an encoder-stage checkpoint (it lacks {err})") from None
    size = int(state["image_size"])
    sets = []
    for key, data in data_configs(cfg):
        data = OmegaConf.merge(data, {"size": size})  # the encoder reads frames at its own size
        for split in cfg.splits:
            dataset = build_dataset(data, str(split))
            sets.append(embed_set(model, vocab, f"{key}: {data.name}", str(split), dataset, int(cfg.num)))
    result = build_map(sets, int(cfg.gallery))
    out = Path(to_absolute_path(str(cfg.out)))
    written = write_maps(result, out, f"Embedding map of {path}", cfg.highlight_class)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {len(written)} files to {out}")


if __name__ == "__main__":
    preflight("inspect_embeddings", sys.argv[1:], check_settings)
    main()
