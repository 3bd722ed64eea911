"""Export dataset clips with their graphs, to look at what a loader produces.

    python src/inspect_data.py data=shapes split=val num=4 out=DIR [start=0] [data.size=64 ...]

For each clip (named by its dataset index, NNN) it writes to `out`: NNN.gif (for looking),
NNN.npy (the exact uint8 (T, H, W, 3) frames), NNN.json (the clip's graph JSON in timeline form with its
"source", shared/specs/graph_json.md) and NNN.png (the first frame with boxes beside one graph picture
per relation segment). Every setting is checked before anything is written.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from sg2video.cli import preflight
from sg2video.data import SPLIT_NAMES, build_dataset
from sg2video.errors import ConfigError, exit_on_user_error
from sg2video.graph_json import graphs_to_json, write_graph_json
from sg2video.video_io import write_atomic, write_gif, write_npy
from sg2video.viz import draw_timeline, frames_with_boxes

GIF_MIN_SIDE = 128  # small frames are upscaled (nearest neighbour) to at least this many pixels in the GIF


def check_settings(cfg: DictConfig):
    """The dataset and the dataset indices to export; ConfigError for anything a person set wrong (types come
    from the schema at composition)."""
    from sg2video.config import validate_data
    from sg2video.schema import check_ranges

    if cfg.split not in SPLIT_NAMES:
        raise ConfigError(f"split={cfg.split!r} is not a split (accepted: {', '.join(SPLIT_NAMES)})")
    check_ranges(cfg, "inspect")
    validate_data(cfg)
    num, start = int(cfg.num), int(cfg.start)
    dataset = build_dataset(cfg.data, cfg.split)
    if start + num > len(dataset):
        raise ConfigError(
            f"start={start} num={num} asks for clips up to index {start + num - 1}, but split {cfg.split!r} "
            f"has {len(dataset)} clips (indices 0..{len(dataset) - 1})"
        )
    out = Path(to_absolute_path(str(cfg.out)))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={cfg.out!r} exists and is not a directory")
    return dataset, list(range(start, start + num))


def export_clips(cfg: DictConfig) -> list[Path]:
    """Write the clips `cfg` asks for; returns the files written."""
    dataset, indices = check_settings(cfg)
    out = Path(to_absolute_path(str(cfg.out)))
    out.mkdir(parents=True, exist_ok=True)
    vocab = dataset.vocab
    written: list[Path] = []
    for index in indices:
        item = dataset[index]
        frames = item["video"].permute(0, 2, 3, 1).contiguous().numpy()  # (T, 3, H, W) -> (T, H, W, 3)
        graphs = item["graphs"]
        stem = f"{index:03d}"
        scale = max(1, GIF_MIN_SIDE // max(frames.shape[1:3]))
        written.append(write_gif(out / f"{stem}.gif", frames, fps=cfg.fps, scale=scale))
        written.append(write_npy(out / f"{stem}.npy", frames))
        graph_json = graphs_to_json(vocab, graphs, source=item.get("source"))
        written.append(write_atomic(out / f"{stem}.json", lambda tmp: write_graph_json(tmp, graph_json)))
        boxed = frames_with_boxes(frames[:1], graphs[0], vocab)[0]
        source = ", ".join(f"{k}={v}" for k, v in (item.get("source") or {}).items())
        written.append(
            draw_timeline(
                vocab,
                graphs,
                out / f"{stem}.png",
                title=f"{source}: {len(graphs)} frames, {len(graph_json['timeline'])} relation segments",
                frame=boxed,
                frame_title="frame 0 with boxes",
            )
        )
    return written


def validate(cfg: DictConfig) -> None:
    check_settings(cfg)


@hydra.main(version_base=None, config_path="../conf", config_name="inspect")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    written = export_clips(cfg)
    print(f"wrote {len(written) // 4} clips ({len(written)} files) to {Path(to_absolute_path(str(cfg.out)))}")


if __name__ == "__main__":
    preflight("inspect", sys.argv[1:], validate)
    main()
