"""Does a video show its household graph? The household world's rule checker (docs/household_world.md, "Checking a
video"): the interface of sg2video.eval.compliance (object and relation accuracy per video, per predicate), plus
accuracy per predicate family (attention, spatial, depth, contact).

It reads pixels only:
1. Every pixel gets the nearest palette colour within `COLOUR_TOLERANCE`, or is background (every channel under
   `BACKGROUND_LEVEL`, or no palette colour near): a label map.
2. Each template is placed where it explains its colour best: score = 2 x (its pixels showing its colour) - (its
   pixels showing what cannot be in front of it), over every placement inside the frame (correlations by FFT) and
   every facing variant. Things never overlap each other, so only the person hides a thing: a thing's template may
   lie on the person's colours at no cost, on background or another thing's colour it may not. The head (never
   hidden) is the two-colour template (hair half, face half): the side the face half is on is where the head
   faces. The body is placed under the head (the world hangs it there) in the pose that scores best, things in
   front of it allowed. The hand (never hidden) and every object class are placed freely.
3. A part is detected when enough of its template shows its colour and little of it lies on background, and (for
   things) little of its colour lies outside it: a colour smear matching no template is not an object.
4. Relations are the world's rules (sg2video.data.household_sprites) applied to the recovered placements, with
   who is in front read from the pixels where the thing's and the person's templates overlap (the hand aside):
   the thing's colour showing there means in front of the person, the person's colours mean behind.

Frames come as uint8 (T, H, W, 3) or (T, 3, H, W), numpy or torch, side a multiple of 32 (16: upsampled to 32 first,
approximate: the world paints 16 as every other pixel of 32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from sg2video.data.household_sprites import (BODY_I, FACE_I, FAMILIES, FAMILY_OF, HAIR_I, HAND_I, HEAD_UNITS,
                                             OBJECT_CLASSES, OBJECT_COLOUR0, OBJECT_SPRITES, PALETTE, PERSON,
                                             PERSON_COLOURS, PREDICATES, Placed, PersonPlacement, body_placement,
                                             household_vocab, relations, silhouette_overlap, sprites, unit)
from sg2video.eval.compliance import ComplianceResult, _ratio
from sg2video.graphs import SceneGraph, Vocab
from sg2video.video_io import as_thwc_uint8

BACKGROUND_LEVEL = 60  # a pixel with every channel below this is background
COLOUR_TOLERANCE = 56.0  # RGB distance to the nearest palette colour (palette colours are >= 118 apart: unambiguous)
MIN_SHOWN = 0.5  # share of a thing's or the body's template that must show its colour (the world hides at most half)
MIN_SHOWN_PART = 0.75  # the head and the hand, which nothing hides
MAX_ON_BACKGROUND = 0.25  # share of a template that may lie on background (a thing's: on anything but the person)
MAX_OUTSIDE = 0.25  # share of a thing's colour that may lie outside its template
NUM_COLOURS = len(PALETTE)
BG, PERSON_ANY = NUM_COLOURS, NUM_COLOURS + 1  # correlation channels: background; any of the person's colours


@dataclass
class HouseholdDetections:
    """What the checker found in each frame t (arrays (T,) unless said): the person's parts and every class."""

    head_ok: np.ndarray  # bool
    head_xy: np.ndarray  # (T, 2) int top-left
    facing: np.ndarray  # +1 / -1
    body_ok: np.ndarray  # bool
    pose: np.ndarray  # STAND / SIT_RIGHT / SIT_LEFT
    hand_ok: np.ndarray  # bool
    hand_xy: np.ndarray  # (T, 2) int
    thing_ok: np.ndarray  # (T, C) bool, C = len(OBJECT_CLASSES)
    thing_xy: np.ndarray  # (T, C, 2) int top-left of the best placement
    thing_variant: np.ndarray  # (T, C) 0: front to the right, 1: to the left
    colour_present: np.ndarray  # (T, C) bool: the class's colour covers at least MIN_SHOWN of its template
    u: int

    def person(self, t: int) -> PersonPlacement:
        hand = Placed(sprites(self.u).hand, *map(int, self.hand_xy[t])) if self.hand_ok[t] else None
        return PersonPlacement(int(self.head_xy[t, 0]), int(self.head_xy[t, 1]), int(self.facing[t]),
                               int(self.pose[t]), hand, self.u)

    def thing(self, t: int, k: int) -> Placed:
        mask = sprites(self.u).objects[k][int(self.thing_variant[t, k])]
        return Placed(mask, int(self.thing_xy[t, k, 0]), int(self.thing_xy[t, k, 1]))


def label_pixels(frames: np.ndarray) -> np.ndarray:
    """Palette index of every pixel of uint8 (T, H, W, 3) frames, -1 for background: (T, H, W)."""
    pixels = frames.astype(np.float32)
    palette = PALETTE.astype(np.float32)
    dist2 = (pixels * pixels).sum(-1)[..., None] - 2.0 * pixels @ palette.T + (palette * palette).sum(-1)
    nearest = dist2.argmin(axis=-1)
    close = np.take_along_axis(dist2, nearest[..., None], axis=-1)[..., 0] <= COLOUR_TOLERANCE**2
    return np.where((pixels.max(axis=-1) >= BACKGROUND_LEVEL) & close, nearest, -1)


class _Correlator:
    """corr(channel, template)[t, y, x] = pixels of `channel` under the template placed at (x, y), for every
    placement inside the frame, by FFT (circular, which is exact for placements inside the frame)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.side = labels.shape[1]
        channels = labels[:, None] == np.arange(NUM_COLOURS + 2)[None, :, None, None]
        channels[:, BG] = labels < 0
        channels[:, PERSON_ANY] = np.isin(labels, (HAIR_I, FACE_I, BODY_I, HAND_I))
        self.totals = channels.sum(axis=(2, 3))  # (T, C + 1)
        self.spectra = np.fft.rfft2(channels.astype(np.float64))

    def __call__(self, channel: int, template: np.ndarray) -> np.ndarray:
        h, w = template.shape
        padded = np.zeros((self.side, self.side))
        padded[:h, :w] = template
        corr = np.fft.irfft2(self.spectra[:, channel] * np.conj(np.fft.rfft2(padded)), s=(self.side, self.side))
        return np.rint(corr[:, : self.side - h + 1, : self.side - w + 1]).astype(np.int64)


def _best(scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, the best (variant, y, x) over equally shaped score maps (T, Y, X); ties go to the first."""
    stacked = np.stack(scores, axis=1)  # (T, V, Y, X)
    flat = stacked.reshape(len(stacked), -1).argmax(axis=1)
    return np.unravel_index(flat, stacked.shape[1:])


def _window_counts(labels: np.ndarray, placed: Placed, colour: int) -> tuple[int, int]:
    """(template pixels showing `colour`, template pixels on background or outside the frame) for one frame."""
    side = labels.shape[0]
    ys, xs = np.nonzero(placed.mask)
    ys, xs = ys + placed.y0, xs + placed.x0
    inside = (ys >= 0) & (ys < side) & (xs >= 0) & (xs < side)
    shown = labels[ys[inside], xs[inside]]
    return int((shown == colour).sum()), int((shown < 0).sum() + (~inside).sum())


def detect(frames: np.ndarray | torch.Tensor) -> tuple[HouseholdDetections, np.ndarray]:
    """The person's parts and every class's best placement in every frame; also returns the label map."""
    frames = as_thwc_uint8(frames)
    if frames.shape[1] != frames.shape[2]:
        raise ValueError(f"frames must be square (sprites scale with the side), got {frames.shape[1]}x{frames.shape[2]}")
    if frames.shape[1] == 16:
        frames = frames.repeat(2, axis=1).repeat(2, axis=2)
    labels = label_pixels(frames)
    T, side = labels.shape[:2]
    u = unit(side)
    kit, corr = sprites(u), _Correlator(labels)
    frame = np.arange(T)

    # head: hair half and face half side by side; the face half's side is the facing
    half, head = kit.head_half, np.ones((HEAD_UNITS * u, HEAD_UNITS * u), dtype=bool)
    hw = half.shape[1]
    hair, face, bg = corr(HAIR_I, half), corr(FACE_I, half), corr(BG, head)
    right = 2 * (hair[:, :, :-hw] + face[:, :, hw:]) - bg  # facing right: hair left, face right
    left = 2 * (face[:, :, :-hw] + hair[:, :, hw:]) - bg
    variant, hy, hx = _best([right, left])
    shown = np.where(variant == 0, hair[frame, hy, hx] + face[frame, hy, hx + hw],
                     face[frame, hy, hx] + hair[frame, hy, hx + hw])
    head_ok = (shown >= MIN_SHOWN_PART * head.sum()) & (bg[frame, hy, hx] <= MAX_ON_BACKGROUND * head.sum())
    facing = np.where(variant == 0, 1, -1)

    # body: under the head, in the pose that explains the body colour best
    pose, body_ok = np.zeros(T, dtype=np.int64), np.zeros(T, dtype=bool)
    for t in range(T):
        fits = []
        for p in range(len(kit.bodies)):
            placed = body_placement(int(hx[t]), int(hy[t]), p, u)
            shown_body, on_bg = _window_counts(labels[t], placed, BODY_I)
            fits.append((2 * shown_body - on_bg, shown_body, on_bg, placed.area))
        pose[t] = int(np.argmax([f[0] for f in fits]))
        _, shown_body, on_bg, area = fits[pose[t]]
        body_ok[t] = head_ok[t] and shown_body >= MIN_SHOWN * area and on_bg <= MAX_ON_BACKGROUND * area

    # hand and things: free placement
    hand_in, hand_bg = corr(HAND_I, kit.hand), corr(BG, kit.hand)
    _, ay, ax = _best([2 * hand_in - hand_bg])
    hand_area = kit.hand.sum()
    hand_ok = ((hand_in[frame, ay, ax] >= MIN_SHOWN_PART * hand_area)
               & (hand_bg[frame, ay, ax] <= MAX_ON_BACKGROUND * hand_area))

    C = len(OBJECT_CLASSES)
    thing_ok, present = np.zeros((T, C), dtype=bool), np.zeros((T, C), dtype=bool)
    thing_xy, thing_variant = np.zeros((T, C, 2), dtype=np.int64), np.zeros((T, C), dtype=np.int64)
    for k, (pair, (*_, has_front)) in enumerate(zip(kit.objects, OBJECT_SPRITES)):
        variants = pair if has_front else pair[:1]  # a thing without a front has one template
        colour, area = OBJECT_COLOUR0 + k, int(variants[0].sum())
        ins = [corr(colour, m) for m in variants]
        others = [area - i - corr(PERSON_ANY, m) for i, m in zip(ins, variants)]  # neither its colour nor the person's
        v, ty, tx = _best([2 * i - o for i, o in zip(ins, others)])
        shown_k = np.stack(ins)[v, frame, ty, tx]
        on_other = np.stack(others)[v, frame, ty, tx]
        total = corr.totals[:, colour]
        thing_ok[:, k] = ((shown_k >= MIN_SHOWN * area) & (on_other <= MAX_ON_BACKGROUND * area)
                          & (total - shown_k <= MAX_OUTSIDE * total))
        present[:, k] = total >= MIN_SHOWN * area
        thing_xy[:, k] = np.stack([tx, ty], axis=1)
        thing_variant[:, k] = v
    found = HouseholdDetections(head_ok, np.stack([hx, hy], axis=1), facing, body_ok, pose, hand_ok,
                                np.stack([ax, ay], axis=1), thing_ok, thing_xy, thing_variant, present, u)
    return found, labels


def thing_in_front(labels: np.ndarray, person: PersonPlacement, thing: Placed, colour: int) -> bool | None:
    """Where the thing's template overlaps the head's or body's and the hand's does not cover them: does the
    thing's colour show there more (True) or the person's (False)? None when neither (no such overlap)."""
    thing_px = person_px = 0
    for shared, x0, y0 in silhouette_overlap(person, thing):
        ys, xs = np.nonzero(shared)
        ys, xs = ys + y0, xs + x0
        inside = (ys >= 0) & (ys < labels.shape[0]) & (xs >= 0) & (xs < labels.shape[1])
        shown = labels[ys[inside], xs[inside]]
        thing_px += int((shown == colour).sum())
        person_px += int(np.isin(shown, PERSON_COLOURS).sum())
    if thing_px == person_px:
        return None
    return thing_px > person_px


# ----------------------------------------------------------------------------------------------
# Checking a video against its graphs


@dataclass
class HouseholdResult(ComplianceResult):
    """ComplianceResult plus accuracy per predicate family (FAMILIES)."""

    per_family: dict[str, float] = field(default_factory=dict)
    per_family_counts: dict[str, tuple[int, int]] = field(default_factory=dict)


def _class_table(vocab: Vocab) -> np.ndarray:
    """Household class of each vocabulary object: -1 the person, k the thing OBJECT_CLASSES[k]; ValueError else."""
    table = np.zeros(vocab.num_objects, dtype=np.int64)
    for i, name in enumerate(vocab.objects):
        if name == PERSON:
            table[i] = -1
        elif name in OBJECT_CLASSES:
            table[i] = OBJECT_CLASSES.index(name)
        else:
            table[i] = -2
    return table


def check_video(frames: np.ndarray | torch.Tensor, graphs: SceneGraph | Sequence[SceneGraph],
                vocab: Vocab | None = None) -> HouseholdResult:
    """Score frames against one graph per frame (or one graph for all); `vocab` default: the household world's."""
    vocab = vocab or household_vocab()
    found, labels = detect(frames)
    T = len(labels)
    graphs = [graphs] * T if isinstance(graphs, SceneGraph) else list(graphs)
    if len(graphs) != T:
        raise ValueError(f"need one graph per frame: {T} frames but {len(graphs)} graphs")
    table = _class_table(vocab)
    object_correct, objects, relation_correct, relation_total, extra = (np.zeros(T, dtype=np.int64) for _ in range(5))
    present = both_detected = both_correct = 0
    per_predicate: dict[str, list[int]] = {}
    for t, graph in enumerate(graphs):
        classes = table[graph.objs.numpy()]
        if (classes == -2).any():
            name = vocab.objects[int(graph.objs[int(np.argmax(classes == -2))])]
            raise ValueError(f"object class {name!r} is not a household class ({PERSON}, {', '.join(OBJECT_CLASSES)})")
        person_ok = bool(found.body_ok[t])
        ok = np.where(classes < 0, person_ok, found.thing_ok[t, np.maximum(classes, 0)])
        object_correct[t], objects[t] = int(ok.sum()), len(classes)
        present += int(np.where(classes < 0, found.head_ok[t], found.colour_present[t, np.maximum(classes, 0)]).sum())
        named = set(classes[classes >= 0].tolist())
        extra[t] = sum(1 for k in np.nonzero(found.thing_ok[t])[0] if k not in named)
        person = found.person(t)
        for s, p, o in graph.triples.tolist():
            name = vocab.predicates[p]
            if name not in FAMILY_OF:
                raise ValueError(f"no household rule for predicate {name!r} (known: {', '.join(PREDICATES)})")
            if classes[s] != -1 or classes[o] < 0:
                raise ValueError(f"household relations are person first: ({vocab.objects[graph.objs[s]]!r}, {name}, "
                                 f"{vocab.objects[graph.objs[o]]!r}) has no rule")
            k = int(classes[o])
            holds = False
            if person_ok and found.thing_ok[t, k]:
                thing = found.thing(t, k)
                in_front = thing_in_front(labels[t], person, thing, OBJECT_COLOUR0 + k)
                holds = name in relations(person, thing, in_front)
                both_detected += 1
                both_correct += int(holds)
            relation_correct[t] += int(holds)
            relation_total[t] += 1
            counts = per_predicate.setdefault(name, [0, 0])
            counts[0] += int(holds)
            counts[1] += 1
    return _result(object_correct, objects, relation_correct, relation_total, extra, per_predicate, found,
                   _ratio(present, objects.sum()), both_detected, both_correct)


def _result(object_correct, objects, relation_correct, relation_total, extra, per_predicate, found, colour_accuracy,
            both_detected, both_correct) -> HouseholdResult:
    families: dict[str, list[int]] = {}
    for name, (correct, total) in per_predicate.items():
        counts = families.setdefault(FAMILY_OF[name], [0, 0])
        counts[0] += correct
        counts[1] += total
    return HouseholdResult(
        object_accuracy=_ratio(object_correct.sum(), objects.sum()),
        relation_accuracy=_ratio(relation_correct.sum(), relation_total.sum()),
        extra_objects=float(extra.mean()),
        per_predicate={name: c / n for name, (c, n) in per_predicate.items()},
        object_correct_per_frame=object_correct, objects_per_frame=objects,
        relation_correct_per_frame=relation_correct, relations_per_frame=relation_total,
        extra_objects_per_frame=extra,
        per_predicate_counts={name: (c, n) for name, (c, n) in per_predicate.items()},
        detections=found, colour_accuracy=colour_accuracy,
        relations_detected=both_detected, relations_detected_correct=both_correct,
        per_family={name: c / n for name, (c, n) in families.items()},
        per_family_counts={name: (c, n) for name, (c, n) in families.items()},
    )


def score_videos(videos: Sequence[np.ndarray | torch.Tensor], graph_lists: Sequence[SceneGraph | Sequence[SceneGraph]],
                 vocab: Vocab | None = None) -> dict:
    """Compliance over many videos, as sg2video.eval.compliance.score_videos (means over videos; per predicate and
    per family pooled over every (frame, triple)), with `per_family` added."""
    if len(videos) != len(graph_lists):
        raise ValueError(f"need one graph list per video: {len(videos)} videos but {len(graph_lists)} graph lists")
    results = [check_video(v, g, vocab) for v, g in zip(videos, graph_lists)]

    def mean(values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def pooled(attr: str, order: Sequence[str]) -> dict[str, float]:
        sums: dict[str, list[int]] = {}
        for result in results:
            for name, (correct, total) in getattr(result, attr).items():
                counts = sums.setdefault(name, [0, 0])
                counts[0] += correct
                counts[1] += total
        return {name: sums[name][0] / sums[name][1] for name in order if name in sums}

    return {
        "object_accuracy": mean([r.object_accuracy for r in results]),
        "relation_accuracy": mean([r.relation_accuracy for r in results]),
        "extra_objects": mean([r.extra_objects for r in results]),
        "colour_accuracy": mean([r.colour_accuracy for r in results]),
        "relation_accuracy_detected": _ratio(sum(r.relations_detected_correct for r in results),
                                             sum(r.relations_detected for r in results)),
        "per_predicate": pooled("per_predicate_counts", PREDICATES),
        "per_family": pooled("per_family_counts", tuple(FAMILIES)),
        "num_videos": len(results),
    }
