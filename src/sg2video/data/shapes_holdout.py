"""The compositional split of the shapes world (`data.holdout=compositional`, the default).

A fixed set of things training never shows, so that "held-out graphs" can mean graphs the model has not seen:
- held-out triples `(subject class, predicate, object class)`: both classes appear in training, together too,
  but never in that arrangement in any frame. A triple and its mirror (`B right of A` for `A left of B`,
  `B above A` for `A below B`) name the same arrangement (the spec's rule is antisymmetric), so both are held
  out: clip object order decides only which of the two a graph spells;
- held-out pairs: two classes never in the same clip (each still meets every other class of another colour).

Train clips contain none of them (rejection sampling from the clip's own seed stream, as the world already
re-draws touching objects). In val and test every even index is an *unseen* clip, built around one held-out
item (index % 4 == 0: a held-out triple that holds in the clip's first frame; index % 4 == 2: a held-out pair,
anywhere), and every odd index is drawn exactly as a train clip. So half of any even-length prefix of val/test
holds a held-out combination, and the other half none. An unseen clip that drew K = 1 gets K = 2; with
`max_objects < 2` no clip can hold a pair and every clip is ordinary. `data.holdout=none` is contract v1
exactly (shared/specs/shapes_world.md).

The set is `HELD_OUT_TRIPLES` and `HELD_OUT_PAIRS` below: 8 triples over 16 classes (two per predicate, no
class in two of them), 3 pairs over 6 other classes; magenta circle and white triangle are in neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sg2video.graphs import SceneGraph, Vocab

HOLDOUT_MODES = ("compositional", "none")  # data.holdout

HELD_OUT_TRIPLES: tuple[tuple[str, str, str], ...] = (
    ("red circle", "left of", "blue square"),
    ("green triangle", "above", "yellow circle"),
    ("magenta square", "right of", "cyan triangle"),
    ("white circle", "below", "orange square"),
    ("blue triangle", "left of", "white square"),
    ("yellow square", "above", "red triangle"),
    ("orange circle", "right of", "green square"),
    ("cyan circle", "below", "magenta triangle"),
)
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red square", "green circle"),
    ("blue circle", "orange triangle"),
    ("yellow triangle", "cyan square"),
)
MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}



def unseen_kind(split: str, index: int) -> str | None:
    """What an unseen clip of val/test is built around ("triple" | "pair"), None for an ordinary clip."""
    if split == "train" or index % 2:
        return None
    return "triple" if index % 4 == 0 else "pair"


@dataclass
class Holdout:
    """The held-out set as lookup tables over a vocabulary's ids: `triples[s, p, o]` (mirrors included) and
    `pairs[a, b]` (symmetric), plus the id rows `triple_ids` (K, 3) and `pair_ids` (K, 2) to build clips from."""

    triples: np.ndarray
    pairs: np.ndarray
    triple_ids: np.ndarray
    pair_ids: np.ndarray
    triple_classes: np.ndarray  # (C, C) bool: the two classes of a held-out triple, either way round

    @classmethod
    def from_vocab(cls, vocab: Vocab) -> "Holdout":
        obj, pred = vocab.object_id, vocab.predicate_id
        triples = np.zeros((vocab.num_objects, vocab.num_predicates, vocab.num_objects), dtype=bool)
        pairs = np.zeros((vocab.num_objects, vocab.num_objects), dtype=bool)
        triple_ids = np.array([(obj(s), pred(p), obj(o)) for s, p, o in HELD_OUT_TRIPLES], dtype=np.int64)
        pair_ids = np.array([(obj(a), obj(b)) for a, b in HELD_OUT_PAIRS], dtype=np.int64)
        for (s, p, o), (_, name, _) in zip(triple_ids, HELD_OUT_TRIPLES):
            triples[s, p, o] = triples[o, pred(MIRROR[name]), s] = True
        pairs[pair_ids[:, 0], pair_ids[:, 1]] = pairs[pair_ids[:, 1], pair_ids[:, 0]] = True
        return cls(triples, pairs, triple_ids, pair_ids, triples.any(axis=1))

    # -- clips being drawn (numpy) ------------------------------------------------------------------

    def has_pair(self, classes: np.ndarray) -> bool:
        """Whether two of a clip's classes (K,) form a held-out pair."""
        return bool(self.pairs[classes[:, None], classes[None, :]].any())

    def may_hold_triple(self, classes: np.ndarray) -> bool:
        """Whether a clip's classes (K,) include both classes of a held-out triple: only then can its
        trajectories hold one (most clips do not, and skip the per-frame test)."""
        return bool(self.triple_classes[classes[:, None], classes[None, :]].any())

    def has_triple(self, classes: np.ndarray, ii: np.ndarray, preds: np.ndarray, jj: np.ndarray) -> bool:
        """Whether any frame holds a held-out triple: `preds` (pairs, T) of the pairs `(ii, jj)` (pairs,)."""
        return bool(self.triples[classes[ii][:, None], preds, classes[jj][:, None]].any())

    # -- graphs (the eval stage, data_stats) --------------------------------------------------------

    def triple_mask(self, graph: SceneGraph) -> np.ndarray:
        """(R,) bool: which of a graph's triples are held out."""
        objs, triples = graph.objs.numpy(), graph.triples.numpy()
        return self.triples[objs[triples[:, 0]], triples[:, 1], objs[triples[:, 2]]]

    def pair_triple_mask(self, graph: SceneGraph) -> np.ndarray:
        """(R,) bool: which of a graph's triples join the two classes of a held-out pair."""
        objs, triples = graph.objs.numpy(), graph.triples.numpy()
        return self.pairs[objs[triples[:, 0]], objs[triples[:, 2]]]

    def clip_is_unseen(self, graphs: Sequence[SceneGraph]) -> bool:
        """Whether any frame of a clip holds a held-out triple or a held-out pair of classes."""
        return any(self.has_pair(g.objs.numpy()) or bool(self.triple_mask(g).any()) for g in graphs)
