"""Datasets. Each yields the item contract of `sg2video.data.clips`; `build_dataset` picks one by name."""
from __future__ import annotations

from typing import Any

from sg2video.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")
DATASET_NAMES = ("shapes", "action_genome", "visual_genome", "coco_stuff", "gif_folder",
                 "household")  # `data=` (build_dataset)
DATASETS_WITH_ROOT = ("action_genome", "visual_genome", "coco_stuff", "gif_folder")


def build_dataset(data_cfg: Any, split: str):
    """The dataset named by `data_cfg.name` for `split` (train | val | test).

    `data.image_mix` (`{name: <image dataset>, root: ..., ratio: 0.2, <its options>}`) mixes that image
    dataset into the train split as still clips of the same size and frame count (sg2video.data.mixed).
    """
    if split not in SPLIT_NAMES:
        raise ConfigError(f"split={split!r} is not a split (accepted: {', '.join(SPLIT_NAMES)})")
    dataset = _build_one(data_cfg, split)
    mix = data_cfg.get("image_mix") if hasattr(data_cfg, "get") else None
    if mix and split == "train":
        from omegaconf import OmegaConf

        from sg2video.data.mixed import MixedDataset

        image_cfg = OmegaConf.create(OmegaConf.to_container(mix, resolve=True) if OmegaConf.is_config(mix) else dict(mix))
        if image_cfg.get("name") not in ("visual_genome", "coco_stuff"):
            raise ConfigError(
                f"data.image_mix.name={image_cfg.get('name')!r} is not an image dataset (accepted: visual_genome, coco_stuff)"
            )
        image_cfg.size, image_cfg.frames = int(data_cfg.size), int(data_cfg.frames)
        if "resize" not in image_cfg:
            image_cfg.resize = data_cfg.get("resize", "crop")
        dataset = MixedDataset(dataset, _build_one(image_cfg, split), float(image_cfg.get("ratio", 0.2)))
    return dataset


def _build_one(data_cfg: Any, split: str):
    name = data_cfg.name
    if name == "shapes":
        from sg2video.data.shapes import ShapesDataset

        return ShapesDataset(
            split=split,
            length=int(data_cfg[f"{split}_size"]),
            size=int(data_cfg.size),
            frames=int(data_cfg.frames),
            min_objects=int(data_cfg.min_objects),
            max_objects=int(data_cfg.max_objects),
            seed=int(data_cfg.seed),
            holdout=str(data_cfg.get("holdout", "none")),  # a config from before the split: contract v1
        )
    if name == "household":
        from sg2video.data.household import HouseholdDataset

        return HouseholdDataset(split=split, length=int(data_cfg[f"{split}_size"]), size=int(data_cfg.size),
                                frames=int(data_cfg.frames), min_objects=int(data_cfg.min_objects),
                                max_objects=int(data_cfg.max_objects), seed=int(data_cfg.seed))
    if name == "action_genome":
        from sg2video.data.action_genome import ActionGenomeDataset

        return ActionGenomeDataset(
            root=data_cfg.root,
            split=split,
            frames=int(data_cfg.frames),
            size=int(data_cfg.size),
            resize=str(data_cfg.get("resize", "crop")),
            cache_dir=data_cfg.get("cache_dir"),
            stride=int(data_cfg.get("stride", 1)),
        )
    if name == "visual_genome":
        from sg2video.data.visual_genome import VisualGenomeDataset, VisualGenomeOptions

        return VisualGenomeDataset(data_cfg.root, split, VisualGenomeOptions.from_config(data_cfg))
    if name == "coco_stuff":
        from sg2video.data.coco_stuff import CocoStuffDataset, CocoStuffOptions

        return CocoStuffDataset(data_cfg.root, split, CocoStuffOptions.from_config(data_cfg))
    if name == "gif_folder":
        from sg2video.data.gif_folder import GifFolderDataset

        return GifFolderDataset(
            root=data_cfg.root,
            split=split,
            frames=int(data_cfg.frames),
            size=int(data_cfg.size),
            resize=str(data_cfg.get("resize", "crop")),
            stride=data_cfg.get("stride"),
        )
    raise ConfigError(f"data.name={name!r} is not a dataset (accepted: {', '.join(DATASET_NAMES)})")
