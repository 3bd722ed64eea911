"""Judging sampled layouts with what the training data shows, for any dataset's predicates.

- `RelationScorer`: p(predicate | subject box, object box, their classes), a small MLP trained on the data's
  own triples and boxes. It learns whatever geometry a predicate has in the data ("left of" on shapes exactly,
  "holding" on Action Genome loosely, "looking at" hardly at all) and scores a layout by how well its boxes
  carry the graph's relations.
- `LayoutStats`: how far objects move per frame and how much two objects of one frame overlap in the data
  (high quantiles), so a sampled layout can be checked for moves and overlaps the data never shows.
`layout_scores` combines both into one number per candidate layout; the sampler keeps the best candidate.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sg2video.layout.boxes import centres, moves, pairwise_iou

VIOLATION_PENALTY = 10.0  # per implausible move or overlap: more than any likely relation log-probability


def pair_features(subject: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., 4) x0 y0 x1 y1 boxes of subject and object -> (..., 14) geometry features: both centres, their
    displacement and its absolute value (which axis is the major one), both sizes and their log ratio."""
    cs, co = centres(subject), centres(target)
    ss = (subject[..., 2:] - subject[..., :2]).clamp(min=1e-3)
    so = (target[..., 2:] - target[..., :2]).clamp(min=1e-3)
    return torch.cat([cs, co, co - cs, (co - cs).abs(), ss, so, (so / ss).log()], dim=-1)


class RelationScorer(nn.Module):
    """Logits over predicates for (subject box, object box, subject class, object class)."""

    def __init__(self, num_classes: int, num_predicates: int, dim: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.class_embed = nn.Embedding(num_classes, dim)
        self.net = nn.Sequential(nn.Linear(14 + 2 * dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, num_predicates))

    @property
    def num_predicates(self) -> int:
        return self.net[-1].out_features

    def forward(self, subject: torch.Tensor, target: torch.Tensor, subject_class: torch.Tensor,
                target_class: torch.Tensor) -> torch.Tensor:
        features = torch.cat([pair_features(subject, target), self.class_embed(subject_class),
                              self.class_embed(target_class)], dim=-1)
        return self.net(features)

    def predicate_log_probs(self, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
        """log p(every predicate) for the boxes of every triple's pair: (B, K, W, 4), (B, K), (B, W, R, 3) ->
        (B, W, R, P)."""
        B, K, W, _ = boxes.shape
        s, _, o = triples.unbind(-1)
        b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
        w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
        return self(boxes[b, s, w], boxes[b, o, w], classes[b, s], classes[b, o]).log_softmax(-1)

    def triple_log_probs(self, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
        """log p(predicate) of every triple. boxes (B, K, W, 4) x0 y0 x1 y1; classes (B, K); triples (B, W, R, 3)
        -> (B, W, R)."""
        log_p = self.predicate_log_probs(boxes, classes, triples)
        return log_p.gather(-1, triples[..., 1:2])[..., 0]

    def loss(self, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor, triple_mask: torch.Tensor,
             box_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the data's triples whose two boxes are given. box_mask (B, K, W)."""
        B, K, W, _ = boxes.shape
        s, _, o = triples.unbind(-1)
        b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
        w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
        usable = triple_mask & box_mask[b, s, w] & box_mask[b, o, w]
        if not bool(usable.any()):
            return boxes.sum() * 0.0
        return -self.triple_log_probs(boxes, classes, triples)[usable].mean()


@dataclass
class LayoutStats:
    """What the data allows, in normalised frame units: the largest per-frame move of an object's centre and the
    largest overlap (IoU) of two objects of one frame (high quantiles over the training data), and the range its
    box centres and sizes cover per axis (low and high quantiles): `project` keeps sampled boxes inside it."""

    max_move: float = 1.0
    max_overlap: float = 1.0
    min_gap: float = -1.0  # the smallest gap between two objects' boxes of a frame (negative: they overlap)
    clips: int = 0
    centre_lo: tuple[float, float] = (0.0, 0.0)
    centre_hi: tuple[float, float] = (1.0, 1.0)
    size_lo: tuple[float, float] = (0.0, 0.0)
    size_hi: tuple[float, float] = (1.0, 1.0)
    # per object class (index): its own size range ((w, h) low and high quantiles; the whole range for a class the
    # data shows too rarely): a world of rigid sprites draws each class at one size
    class_size_lo: tuple = ()
    class_size_hi: tuple = ()
    class_centre_lo: tuple = ()  # and its own range of centres (furniture stands on the floor: one row)
    class_centre_hi: tuple = ()
    class_max_move: tuple = ()  # and its own largest per-frame move (furniture never moves: 0)

    def to_dict(self) -> dict:
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "LayoutStats":
        def value(k, v):
            if k == "clips":
                return int(v)
            if isinstance(v, (list, tuple)):
                return tuple(value(k, x) for x in v)
            return float(v)

        return cls(**{k: value(k, v) for k, v in data.items()})

    def steady(self, boxes: torch.Tensor, classes: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes (B, K, W, 4) whose per-frame moves are no longer than their class's largest move in the data
        (`class_max_move`; a class the data never moves stays where its first frame is): each frame follows the
        sampled path from where the previous frame ended up, at most that far. `given` (B, K, W) frames are kept.
        Without per-class moves measured, the boxes unchanged."""
        if not self.class_max_move:
            return boxes
        limit = boxes.new_tensor(self.class_max_move)[classes.clamp(0, len(self.class_max_move) - 1)]  # (B, K)
        centre, half = centres(boxes), (boxes[..., 2:] - boxes[..., :2]) / 2
        out = [centre[:, :, 0]]
        for w in range(1, boxes.shape[2]):
            step = centre[:, :, w] - out[-1]
            length = step.norm(dim=-1, keepdim=True)
            moved = out[-1] + step * (limit[..., None] / length.clamp(min=1e-12)).clamp(max=1.0)
            out.append(moved if given is None else torch.where(given[:, :, w, None], centre[:, :, w], moved))
        c = torch.stack(out, dim=2)
        return torch.cat([c - half, c + half], dim=-1)

    def project(self, boxes: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes (..., 4) x0 y0 x1 y1 with each centre and size moved into the range the data covers (a box the
        data would never show, half outside the frame or of a size no object has, is drawn as its nearest one
        that it would). With `classes` (the boxes' leading shape, long) and per-class ranges measured, each size
        and centre into its own class's range."""
        lo, hi = boxes.new_tensor(self.centre_lo), boxes.new_tensor(self.centre_hi)
        size_lo, size_hi = boxes.new_tensor(self.size_lo), boxes.new_tensor(self.size_hi)
        if classes is not None and self.class_size_lo:
            index = classes.clamp(0, len(self.class_size_lo) - 1)
            size_lo = boxes.new_tensor(self.class_size_lo)[index]
            size_hi = boxes.new_tensor(self.class_size_hi)[index]
            lo, hi = boxes.new_tensor(self.class_centre_lo)[index], boxes.new_tensor(self.class_centre_hi)[index]
        size = torch.maximum(torch.minimum(boxes[..., 2:] - boxes[..., :2], size_hi), size_lo)
        centre = torch.maximum(torch.minimum(centres(boxes), hi), lo)
        return torch.cat([centre - size / 2, centre + size / 2], dim=-1)

    @classmethod
    def measure(cls, boxes: torch.Tensor, box_mask: torch.Tensor, obj_mask: torch.Tensor,
                quantile: float = 0.999, classes: torch.Tensor | None = None, num_classes: int = 0,
                min_class_boxes: int = 20) -> "LayoutStats":
        """From data boxes (N, K, W, 4) x0 y0 x1 y1 with box_mask (N, K, W) and obj_mask (N, K); with `classes`
        (N, K) and `num_classes`, the per-class size ranges too (a class with fewer than `min_class_boxes` boxes
        gets the whole range; so do its centres)."""
        step = moves(boxes)  # (N, K, W - 1)
        both = box_mask[..., 1:] & box_mask[..., :-1] & _nonempty(boxes)[..., 1:] & _nonempty(boxes)[..., :-1]
        move_values = step[both]
        iou = pairwise_iou(boxes.transpose(1, 2))  # (N, W, K, K)
        real = (box_mask & _nonempty(boxes)).transpose(1, 2)  # (N, W, K)
        pair = real[..., :, None] & real[..., None, :]
        pair &= ~torch.eye(boxes.shape[1], dtype=torch.bool, device=boxes.device)
        overlap_values = iou[pair]
        gap_values = pairwise_gap(boxes.transpose(1, 2))[pair]
        given = box_mask & obj_mask[:, :, None]
        centre, size = centres(boxes)[given], (boxes[..., 2:] - boxes[..., :2])[given]  # (n, 2) each

        def bounds(values: torch.Tensor, q: float) -> tuple[float, float]:
            return tuple(float(v) for v in values.quantile(q, dim=0)) if values.numel() else None  # type: ignore

        ranges = {}
        if centre.numel():
            low = 1.0 - quantile
            ranges = dict(centre_lo=bounds(centre, low), centre_hi=bounds(centre, quantile),
                          size_lo=bounds(size, low), size_hi=bounds(size, quantile))
            if classes is not None and num_classes > 0:
                of_box = classes[:, :, None].expand(given.shape)[given]  # (n,) the class of each size
                per_class = [size[of_box == k] for k in range(num_classes)]
                ranges["class_size_lo"] = tuple(bounds(v, low) if len(v) >= min_class_boxes else ranges["size_lo"]
                                                for v in per_class)
                ranges["class_size_hi"] = tuple(bounds(v, quantile) if len(v) >= min_class_boxes
                                                else ranges["size_hi"] for v in per_class)
                per_class = [centre[of_box == k] for k in range(num_classes)]
                ranges["class_centre_lo"] = tuple(bounds(v, low) if len(v) >= min_class_boxes
                                                  else ranges["centre_lo"] for v in per_class)
                ranges["class_centre_hi"] = tuple(bounds(v, quantile) if len(v) >= min_class_boxes
                                                  else ranges["centre_hi"] for v in per_class)
                of_move = classes[:, :, None].expand(both.shape)[both]
                per_class = [move_values[of_move == k] for k in range(num_classes)]
                overall = float(move_values.quantile(quantile)) if move_values.numel() else 1.0
                ranges["class_max_move"] = tuple(float(v.quantile(quantile)) if len(v) >= min_class_boxes else overall
                                                 for v in per_class)
        return cls(
            max_move=float(move_values.quantile(quantile)) if move_values.numel() else 1.0,
            max_overlap=float(overlap_values.quantile(quantile)) if overlap_values.numel() else 1.0,
            min_gap=float(gap_values.quantile(1.0 - quantile)) if gap_values.numel() else -1.0,
            clips=int(boxes.shape[0]),
            **ranges,
        )


def pairwise_gap(boxes: torch.Tensor) -> torch.Tensor:
    """(..., K, 4) x0 y0 x1 y1 -> (..., K, K): how far apart two boxes are along the axis that separates them
    most (positive: a gap between them; negative: how deep they overlap)."""
    a, b = boxes[..., :, None, :], boxes[..., None, :, :]
    return torch.stack([b[..., 0] - a[..., 2], a[..., 0] - b[..., 2], b[..., 1] - a[..., 3], a[..., 1] - b[..., 3]],
                       dim=-1).amax(dim=-1)


def _nonempty(boxes: torch.Tensor) -> torch.Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) > 0) & ((boxes[..., 3] - boxes[..., 1]) > 0)


def violations(boxes: torch.Tensor, obj_mask: torch.Tensor, stats: LayoutStats, frames: torch.Tensor,
               move_slack: float = 1.15, overlap_slack: float = 0.05, gap_slack: float = 0.01) -> torch.Tensor:
    """Implausible moves, overlaps and objects closer than the data's ever are, per candidate: boxes (B, K, W, 4)
    x0 y0 x1 y1, obj_mask (B, K), frames (W,) bool: the frames being judged (a move counts when it ends in one)
    -> (B,) float counts."""
    step = moves(boxes)  # (B, K, W - 1)
    fast = (step > stats.max_move * move_slack) & obj_mask[..., None] & frames[1:]
    iou = pairwise_iou(boxes.transpose(1, 2))  # (B, W, K, K)
    pair = obj_mask[:, None, :, None] & obj_mask[:, None, None, :]
    pair = pair & ~torch.eye(boxes.shape[1], dtype=torch.bool, device=boxes.device) & frames[None, :, None, None]
    overlapping = ((iou > stats.max_overlap + overlap_slack) | (pairwise_gap(boxes.transpose(1, 2))
                                                                 < stats.min_gap - gap_slack)) & pair
    return fast.sum(dim=(1, 2)).float() + overlapping.sum(dim=(1, 2, 3)).float() / 2


def pair_sets(triples: torch.Tensor, triple_mask: torch.Tensor, num_predicates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph's predicates of each triple's pair in its frame, and which triple stands for its pair.

    A pair may carry several predicates in one frame (Action Genome's person and cup: looking_at, on_the_side_of,
    holding), but the scorer's softmax names one predicate per pair of boxes, so a pair's boxes are judged by
    the share of the scorer's mass on the whole set of its predicates. Returns `members` (B, W, R, P) bool, the
    predicates of the triple's pair, and `first` (B, W, R) bool, the pair's first real triple (the one that
    counts it). With one predicate per pair (the shapes world) members is the triple's own predicate and every
    real triple is first: the per-triple judgement exactly."""
    s, p, o = triples.unbind(-1)
    same = (s[..., :, None] == s[..., None, :]) & (o[..., :, None] == o[..., None, :])
    same &= triple_mask[..., :, None] & triple_mask[..., None, :]  # (B, W, R, R)
    members = (same[..., None] & (torch.nn.functional.one_hot(p, num_predicates).bool()[..., None, :, :])).any(dim=-2)
    R = triples.shape[-2]
    earlier = torch.ones(R, R, dtype=torch.bool, device=triples.device).tril(-1)  # [i, j]: j < i
    first = triple_mask & ~(same & earlier).any(dim=-1)
    return members, first


def set_log_probs(log_p: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """log of the scorer's mass on each triple's pair set: log_p (B, W, R, P), members (B, W, R, P) -> (B, W, R)."""
    return log_p.masked_fill(~members, float("-inf")).logsumexp(dim=-1).clamp(min=-1e4)


def layout_scores(scorer: RelationScorer, stats: LayoutStats, boxes: torch.Tensor, cond, frames: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate: a score (higher is better: the summed log-probability of the graph's pairs in the judged
    frames, each pair's the scorer's mass on its predicates (`pair_sets`), minus a penalty per implausible move
    or overlap) and whether it looks right (the scorer's most likely predicate for every judged pair's boxes is
    one of the pair's, and nothing is implausible). boxes (B, K, W, 4)."""
    log_p = scorer.predicate_log_probs(boxes, cond.classes, cond.triples)  # (B, W, R, P)
    members, first = pair_sets(cond.triples, cond.triple_mask, log_p.shape[-1])
    judged = first & frames[None, :, None]
    relation = (set_log_probs(log_p, members) * judged).sum(dim=(1, 2))
    top = members.gather(-1, log_p.argmax(-1, keepdim=True))[..., 0]
    wrong = (~top & judged).sum(dim=(1, 2))
    bad = violations(boxes, cond.obj_mask, stats, frames)
    return relation - VIOLATION_PENALTY * bad, (wrong == 0) & (bad == 0)


def scorer_accuracy(scorer: RelationScorer, boxes: torch.Tensor, classes: torch.Tensor, triples: torch.Tensor,
                    triple_mask: torch.Tensor) -> float:
    """Share of triples whose predicate is the scorer's most likely one for the boxes."""
    B, K, W, _ = boxes.shape
    s, p, o = triples.unbind(-1)
    b = torch.arange(B, device=boxes.device)[:, None, None].expand_as(s)
    w = torch.arange(W, device=boxes.device)[None, :, None].expand_as(s)
    logits = scorer(boxes[b, s, w], boxes[b, o, w], classes[b, s], classes[b, o])
    hits = (logits.argmax(-1) == p)[triple_mask]
    return float(hits.float().mean()) if hits.numel() else float("nan")


__all__ = ["RelationScorer", "LayoutStats", "layout_scores", "violations", "scorer_accuracy", "pair_features",
           "pair_sets", "set_log_probs"]
