"""Image + video co-training (VDM's joint training, data side): `data.image_mix`.

`MixedDataset(videos, images, ratio)` serves every clip of `videos` and, after them, enough image items
that a fraction `ratio` of all items are images (image `i` cycles through `images`). A shuffling sampler
then mixes them at that ratio. Image items are still clips (the image repeated for the video's frame
count, so batches stack) marked `source["still"] = True`, which a trainer can use to mask temporal
attention or the temporal part of the loss.

The two datasets have their own vocabularies; the mixed vocabulary is the video one followed by the
image names it lacks (objects and predicates separately), and image graphs are re-numbered into it.
"""
from __future__ import annotations

from typing import Any

import torch

from sg2video.errors import ConfigError
from sg2video.graphs import SceneGraph, Vocab


def merge_vocabs(first: Vocab, second: Vocab) -> tuple[Vocab, torch.Tensor, torch.Tensor]:
    """The union vocabulary (first's order, then second's new names) and second's id -> union id maps."""
    objects = first.objects + [n for n in second.objects if first.object_id(n) is None]
    predicates = first.predicates + [n for n in second.predicates if first.predicate_id(n) is None]
    merged = Vocab(objects, predicates)
    obj_map = torch.tensor([merged.object_id(n) for n in second.objects], dtype=torch.long)
    pred_map = torch.tensor([merged.predicate_id(n) for n in second.predicates], dtype=torch.long)
    return merged, obj_map, pred_map


class MixedDataset(torch.utils.data.Dataset):
    """Video clips plus image still clips at `ratio` of all items (see the module docstring)."""

    def __init__(self, videos: Any, images: Any, ratio: float) -> None:
        if not 0 <= ratio < 1:
            raise ConfigError(f"data.image_mix.ratio={ratio!r} must be in [0, 1)")
        if len(images) == 0 and ratio > 0:
            raise ConfigError("data.image_mix: the image dataset has no items")
        self.videos, self.images, self.ratio = videos, images, ratio
        self.num_images = round(len(videos) * ratio / (1 - ratio))
        self.vocab, self.obj_map, self.pred_map = merge_vocabs(videos.vocab, images.vocab)

    def __len__(self) -> int:
        return len(self.videos) + self.num_images

    def __getitem__(self, index: int) -> dict:
        if index < len(self.videos):
            return self.videos[index]
        item = self.images[(index - len(self.videos)) % len(self.images)]
        graphs = []
        for g in item["graphs"]:
            triples = g.triples.clone()
            triples[:, 1] = self.pred_map[triples[:, 1]]
            graphs.append(SceneGraph(self.obj_map[g.objs], triples, g.boxes))
        return {"video": item["video"], "graphs": graphs, "source": {**item["source"], "still": True}}

    @property
    def skipped(self) -> int:
        return getattr(self.videos, "skipped", 0) + getattr(self.images, "skipped", 0)
