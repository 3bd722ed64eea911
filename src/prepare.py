"""One-off dataset preparation: `python src/prepare.py data=action_genome data.root=ROOT unpickle_ok=true`.

Action Genome: reads the class files and the two pickles once and writes a safe index (JSON + NPZ)
under `data.cache_dir` (default ROOT/sg2video_index), then prints what it kept and dropped.
Visual Genome: builds and caches the filtered index the dataset would otherwise build on first use.
Other datasets need no preparation.
"""
import sys

import hydra
from omegaconf import DictConfig

from sg2video.cli import preflight
from sg2video.config import register_resolvers
from sg2video.errors import ConfigError, UserError, exit_on_user_error

register_resolvers()


def check(cfg: DictConfig) -> None:
    """Refuse before anything is read or written: a bad root, or pickles without consent."""
    from omegaconf import OmegaConf

    from sg2video.data.sources import require_root
    from sg2video.schema import check_ranges

    check_ranges(cfg, "prepare")
    root = OmegaConf.select(cfg, "data.root", default=None, throw_on_missing=False)
    if cfg.data.name == "action_genome":
        root = require_root(root, "annotations/ and videos/")
        if cfg.unpickle_ok is not True:
            raise UserError(
                f"refusing to unpickle {root / 'annotations'}/*.pkl: pickles can run code when loaded; "
                "pass unpickle_ok=true if you trust these files (they are read once, into a safe index)"
            )
    elif cfg.data.name == "visual_genome":
        require_root(root, "objects.json, relationships.json, image_data.json and images/")


def prepare(cfg: DictConfig) -> list[str]:
    """Prepare `cfg.data`; the lines to print."""
    check(cfg)
    name = cfg.data.name
    if name == "action_genome":
        from sg2video.data.action_genome import prepare_action_genome

        report = prepare_action_genome(cfg.data.root, frames=int(cfg.data.frames), cache_dir=cfg.data.cache_dir,
                                       unpickle_ok=cfg.unpickle_ok is True)
        return report.lines()
    if name == "visual_genome":
        from sg2video.data import build_dataset

        lines = []
        for split in ("train", "val", "test"):
            dataset = build_dataset(cfg.data, split)
            lines.append(f"Visual Genome {split}: {len(dataset)} images -> {dataset.index_path}")
        lines.extend(f"dropped {count} images: {reason}" for reason, count in dataset.dropped.items())
        return lines
    if name in ("shapes", "coco_stuff", "gif_folder"):
        return [f"data={name} needs no preparation"]
    raise ConfigError(f"data.name={name!r} is not a dataset prepare.py knows (accepted: action_genome, visual_genome)")


@hydra.main(version_base=None, config_path="../conf", config_name="prepare")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    for line in prepare(cfg):
        print(line, flush=True)


if __name__ == "__main__":
    preflight("prepare", sys.argv[1:], check)
    main()
