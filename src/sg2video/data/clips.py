"""The item and batch contract every dataset follows.

A dataset item is a dict:
- `video`: uint8 (T, 3, H, W), the clip's frames;
- `graphs`: list of T `SceneGraph`s, one per frame (same objects across a clip's frames);
- `source`: a small JSON-able dict saying where the clip came from (dataset, ids, frames).

`collate_clips` turns a list of items into a `ClipBatch` for the models: video float
(B, 3, T, H, W) in [-1, 1] and the B*T frame graphs packed b-major (clip 0's T frames, then clip 1's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sg2video.graphs import GraphBatch, SceneGraph


@dataclass
class ClipBatch:
    video: torch.Tensor  # (B, 3, T, H, W) float in [-1, 1]
    graphs: GraphBatch  # B*T graphs, graph b*T + t is clip b's frame t
    sources: list[dict]

    @property
    def batch_size(self) -> int:
        return int(self.video.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[2])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ClipBatch":
        return ClipBatch(self.video.to(device, non_blocking=non_blocking), self.graphs.to(device), self.sources)


def video_to_model(video_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., T, 3, H, W) -> float (..., 3, T, H, W) in [-1, 1]."""
    return (video_u8.float() / 127.5 - 1.0).transpose(-4, -3)


def video_to_uint8(video: torch.Tensor) -> torch.Tensor:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), the on-disk layout."""
    video = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).contiguous()


def collate_clips(items: list[dict]) -> ClipBatch:
    videos = torch.stack([item["video"] for item in items])  # (B, T, 3, H, W)
    graphs: list[SceneGraph] = [g for item in items for g in item["graphs"]]
    return ClipBatch(video_to_model(videos), GraphBatch.pack(graphs), [item.get("source", {}) for item in items])
