"""Which exact checker scores a dataset's videos: the built-in worlds are recognised by their vocabulary.

`checker_for(vocab)` is the one place that decides it: the shapes world's checker (sg2video.eval.compliance),
the household world's (sg2video.eval.household_checker, which adds accuracy per predicate family), or None for
data without exact ground truth (Action Genome, Visual Genome, COCO-Stuff, GIF folders), where the eval stage
reports the encoder's measures and fidelity only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sg2video.graphs import Vocab


@dataclass(frozen=True)
class WorldChecker:
    name: str  # the world's `data.name`
    check_video: Callable  # (frames, graphs, vocab=None) -> ComplianceResult
    score_videos: Callable  # (videos, graph_lists, vocab=None) -> dict of means (+ per_predicate, per_family)
    families: tuple[str, ...] = ()  # predicate families scored apart (household: attention, spatial, ...)


def _same_vocab(a: Vocab, b: Vocab) -> bool:
    return list(a.objects) == list(b.objects) and list(a.predicates) == list(b.predicates)


def checker_for(vocab: Vocab) -> WorldChecker | None:
    """The exact checker for data with this vocabulary, None when no built-in world has it."""
    from sg2video.data.household_sprites import FAMILIES, household_vocab
    from sg2video.data.shapes import shapes_vocab

    if _same_vocab(vocab, shapes_vocab()):
        from sg2video.eval import compliance

        return WorldChecker("shapes", compliance.check_video, compliance.score_videos)
    if _same_vocab(vocab, household_vocab()):
        from sg2video.eval import household_checker

        return WorldChecker("household", household_checker.check_video, household_checker.score_videos,
                            tuple(FAMILIES))
    return None
