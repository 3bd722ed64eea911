"""Generate videos for a scene graph: `python src/sample.py ckpt=PATH graph=FILE.json [key=value ...]`.

Writes `sample_NNN.mp4`, `.gif` and `.npy` (uint8 (T, H, W, 3)) per video, `sample_NNN.json` (the graph with the
boxes the video was drawn from: the layout model's samples where the graph gives none) and `graph.png` into `out`.
A graph longer than the model's clip is generated chunk by chunk (autoregressively).
"""
import os
import sys

# CPU runs share their cores with other processes; spinning OpenMP threads then waste most of a step
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from sg2video.cli import preflight
from sg2video.config import register_resolvers
from sg2video.errors import ConfigError, exit_on_user_error

register_resolvers()


def check_settings(cfg: DictConfig) -> None:
    """Types come from the schema at composition; here: what must be given, ranges, names and files."""
    from omegaconf import OmegaConf

    from sg2video.config import check_device
    from sg2video.schema import check_ranges

    for key, what in (("ckpt", "checkpoints/diffusion/last.pt (or sg2im/last.pt) of a run"), ("graph", "a graph JSON file")):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is not set (python src/sample.py ckpt=RUN_DIR/checkpoints/diffusion/last.pt "
                              f"graph=FILE.json; {key}: {what})")
    check_ranges(cfg, "sample")
    check_device(cfg.device)
    for key in ("ckpt", "graph"):
        path = Path(hydra.utils.to_absolute_path(str(cfg[key]))) if _hydra_ready() else Path(str(cfg[key]))
        if not path.is_file():
            raise ConfigError(f"{key}={cfg[key]} does not exist (or is not a file)")


def layout_settings_given(cfg: DictConfig) -> dict:
    """The layout.KEY=VALUE settings of this command line (the checkpoint's layout model keeps its own settings for
    every key not given), with the values as the config composed them."""
    from hydra.core.hydra_config import HydraConfig

    keys = []
    for item in HydraConfig.get().overrides.task:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("layout."):
            keys.append(key[len("layout."):])
    return {key: OmegaConf.select(cfg.layout, key) for key in keys}


def _hydra_ready() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


@hydra.main(version_base=None, config_path="../conf", config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    import torch
    from tqdm.auto import tqdm

    from sg2video.diffusion import plan_chunks
    from sg2video.graph_json import graphs_to_json, load_graph_json, write_graph_json
    from sg2video.logs import progress_enabled
    from sg2video.sampling import load_video_generator
    from sg2video.train.distributed import pick_device
    from sg2video.video_io import write_gif, write_mp4, write_npy
    from sg2video.viz import draw_timeline

    check_settings(cfg)
    layout = str(cfg.layout.name)
    if cfg.boxes is not None:
        layout = str(cfg.boxes)
        print(f"notice: boxes={layout} is now layout={layout} (run.py's name); the old name goes in the next release")
    out = Path(hydra.utils.to_absolute_path(str(cfg.out)))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={cfg.out!r} is a file, not a directory")
    device = pick_device(str(cfg.device))
    video_gen = load_video_generator(hydra.utils.to_absolute_path(str(cfg.ckpt)), device)
    changed = layout_settings_given(cfg)
    if changed:
        first = f"layout.{next(iter(changed))}"
        if layout != "sampled":
            raise ConfigError(f"{first} steers the layout model, but layout={layout} draws no layouts (use "
                              "layout=sampled)")
        if getattr(video_gen, "layout", None) is None:
            raise ConfigError(f"{first} steers a layout model, and {cfg.ckpt} carries none")
        video_gen.layout.update(changed)
    spec = load_graph_json(hydra.utils.to_absolute_path(str(cfg.graph)), video_gen.vocab, video_gen.max_objects)
    if spec.is_static:
        frames = int(cfg.frames or video_gen.clip_frames)
    else:
        frames = int(spec.length)
        if cfg.frames is not None and cfg.frames != frames:
            raise ConfigError(f"frames={cfg.frames} but the graph's timeline is {frames} frames long (drop frames=)")
    if frames > cfg.max_frames:
        raise ConfigError(f"{frames} frames asked for; at most max_frames={cfg.max_frames}")
    if video_gen.chunked:  # refuses what cannot be made (sg2im makes any length in one pass)
        plan_chunks(frames, video_gen.clip_frames, video_gen.prefix_frames)
    graphs = spec.frame_graphs(frames)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc="sampling", unit="step", disable=not progress_enabled())

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    with torch.inference_mode():
        videos, drawn_from = video_gen.generate(
            [graphs] * int(cfg.num), sampler=str(cfg.sampler), steps=int(cfg.steps), guidance=float(cfg.guidance),
            eta=float(cfg.eta), seed=int(cfg.seed), layout=layout, progress=progress, return_graphs=True)
    bar.close()
    for i, video in enumerate(videos.numpy()):
        stem = out / f"sample_{i:03d}"
        write_mp4(f"{stem}.mp4", video, fps=int(cfg.fps))
        write_gif(f"{stem}.gif", video, fps=int(cfg.fps), scale=max(1, 128 // video.shape[1]))
        write_npy(f"{stem}.npy", video)
        write_graph_json(f"{stem}.json", graphs_to_json(video_gen.vocab, drawn_from[i], every_box=True))
    draw_timeline(video_gen.vocab, graphs, out / "graph.png")
    print(f"wrote {len(videos)} videos of {frames} frames to {out}")


if __name__ == "__main__":
    preflight("sample", sys.argv[1:], check_settings)
    main()
