"""The household world's pieces (docs/household_world.md): palette, sprites, vocabulary and the relation rules.

Geometry is in full-resolution pixels of a frame of side S = 32u: every sprite is a bitmap in *units* scaled by
u = S // 32, so one scene is the same picture at 32, 64 and 128 (only positions get finer). A placed template is
a mask and its top-left corner (`Placed`). The relation rules take placed templates and are shared: the world
applies them to the placements it drew, the checker (sg2video.eval.household_checker) to the placements it
recovers from pixels. What the rules do not decide is who is in front (the world: its depth coordinate; the
checker: which colour shows where the two overlap) and where the head faces (the world: its state; the checker:
which side of the head the face colour is on).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from sg2video.graphs import Vocab

PERSON = "person"
# Action Genome's own names, in its class-file order; each: colour, bitmap (facing right / front to the right),
# and whether it has a front (a facing variant, mirrored). Furniture is 7 units tall at most, its top a row under
# the reach of a hand resting on the chest; seats are 4 units high, the height of a sitting person's shins.
OBJECT_SPRITES: tuple[tuple[str, tuple[int, int, int], tuple[str, ...], bool], ...] = (
    ("book", (255, 0, 0), ("#####", "#####"), False),
    ("box", (255, 128, 0), ("#..#", "#..#", "####"), False),
    ("chair", (128, 0, 255), ("#....",) * 3 + ("#####",) + ("#...#",) * 3, True),  # backrest behind the seat
    ("cup/glass/bottle", (255, 255, 255), (".#.", "###", "###", "###"), False),  # a bottle: neck up
    ("laptop", (0, 255, 255), ("#....",) * 3 + ("#####",), True),  # open, screen at the back
    ("phone/camera", (128, 128, 128), ("###", "###"), False),
    ("sofa/couch", (0, 255, 0), ("##" + "." * 10,) * 3 + ("#" * 12,) * 4, True),  # backrest behind the seat
    ("table", (255, 0, 255), ("#" * 12,) * 2 + ("#" + "." * 10 + "#",) * 5, False),
)
OBJECT_CLASSES = tuple(name for name, *_ in OBJECT_SPRITES)
SMALL_CLASSES = ("book", "box", "cup/glass/bottle", "laptop", "phone/camera")  # carried in the hand
SEATS = ("chair", "sofa/couch")
# the person's parts: hair and face are the two halves of the head (the face half is the side it faces)
HAIR, FACE, BODY, HAND = (128, 64, 0), (255, 200, 150), (0, 128, 255), (255, 255, 0)
PALETTE = np.array([HAIR, FACE, BODY, HAND] + [rgb for _, rgb, *_ in OBJECT_SPRITES], dtype=np.uint8)  # (12, 3)
HAIR_I, FACE_I, BODY_I, HAND_I = range(4)
PERSON_COLOURS = (HAIR_I, FACE_I, BODY_I)  # the silhouette that depth is decided against (not the hand)
OBJECT_COLOUR0 = 4  # palette index of object class k (index into OBJECT_CLASSES) is OBJECT_COLOUR0 + k

BODY_STAND = ("####",) * 6 + (".##.",) * 6  # torso over two legs
BODY_SIT = ("####...",) * 6 + ("#######",) * 2 + (".....##",) * 4  # torso, thighs forward, shins down
STAND, SIT_RIGHT, SIT_LEFT = range(3)  # body poses; a sitting body's thighs point to its seat's front
HEAD_UNITS, HAND_UNITS = 4, 2  # head 4 x 4 (two 2 x 4 halves), hand 2 x 2
FLOOR_UNITS, HEAD_TOP_UNITS = 30, 14  # floor line (first row below everything) and head top, in units
HIP_UNITS, SEAT_UNITS = 10, 12  # rows below the head top: end of the torso; the seat's top (a sitting body's bottom)

PREDICATES = ("looking_at", "not_looking_at", "above", "beneath", "in_front_of", "behind", "on_the_side_of",
              "holding", "sitting_on", "touching")  # Action Genome's relationship-file order
FAMILIES = {"attention": ("looking_at", "not_looking_at"), "spatial": ("above", "beneath", "on_the_side_of"),
            "depth": ("in_front_of", "behind"), "contact": ("holding", "sitting_on", "touching")}
FAMILY_OF = {p: family for family, names in FAMILIES.items() for p in names}
LOOK_MARGIN_UNITS = 2  # attention needs the object's centre this far to one side of the head's centre


def household_vocab() -> Vocab:
    """`person` and the 8 object classes (Action Genome's names), and the 10 predicates."""
    return Vocab(objects=[PERSON, *OBJECT_CLASSES], predicates=list(PREDICATES))


def unit(size: int) -> int:
    """Pixels per sprite unit of a frame of side `size` (a multiple of 32; 16 renders at 32, see the world)."""
    if size % 32:
        raise ValueError(f"the household world needs a frame side that is a multiple of 32 (or 16), got {size}")
    return size // 32


def _bitmap(rows: tuple[str, ...], u: int, mirror: bool = False) -> np.ndarray:
    mask = np.array([[c == "#" for c in row] for row in rows], dtype=bool)
    mask = mask[:, ::-1] if mirror else mask
    return np.kron(mask, np.ones((u, u), dtype=bool))


@dataclass(frozen=True)
class SpriteSet:
    """Every template at one unit size: bool masks (h, w), pixel [y, x]."""

    head_half: np.ndarray
    bodies: tuple[np.ndarray, np.ndarray, np.ndarray]  # STAND, SIT_RIGHT, SIT_LEFT
    hand: np.ndarray
    objects: tuple[tuple[np.ndarray, np.ndarray], ...]  # per class: (facing right, facing left)


@functools.lru_cache(maxsize=8)
def sprites(u: int) -> SpriteSet:
    objects = tuple((_bitmap(rows, u), _bitmap(rows, u, mirror=front)) for _, _, rows, front in OBJECT_SPRITES)
    return SpriteSet(
        head_half=np.ones((HEAD_UNITS * u, HEAD_UNITS * u // 2), dtype=bool),
        bodies=(_bitmap(BODY_STAND, u), _bitmap(BODY_SIT, u), _bitmap(BODY_SIT, u, mirror=True)),
        hand=np.ones((HAND_UNITS * u, HAND_UNITS * u), dtype=bool),
        objects=objects,
    )


def orient_index(orient: int) -> int:
    """+1 (front to the right) -> 0, -1 -> 1: the index into `SpriteSet.objects[k]`."""
    return 0 if orient > 0 else 1


# ----------------------------------------------------------------------------------------------
# Placed templates


@dataclass(frozen=True)
class Placed:
    """A template `mask` (h, w) with its top-left pixel at (x0, y0)."""

    mask: np.ndarray
    x0: int
    y0: int

    @property
    def x1(self) -> int:  # last column, inclusive
        return self.x0 + self.mask.shape[1] - 1

    @property
    def y1(self) -> int:  # last row, inclusive
        return self.y0 + self.mask.shape[0] - 1

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def overlap_mask(a: Placed, b: Placed) -> tuple[np.ndarray, int, int]:
    """The pixels both templates cover, as a bool window and its top-left (x, y); empty window when none."""
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1, y1 = min(a.x1, b.x1), min(a.y1, b.y1)
    if x1 < x0 or y1 < y0:
        return np.zeros((0, 0), dtype=bool), x0, y0
    wa = a.mask[y0 - a.y0: y1 - a.y0 + 1, x0 - a.x0: x1 - a.x0 + 1]
    wb = b.mask[y0 - b.y0: y1 - b.y0 + 1, x0 - b.x0: x1 - b.x0 + 1]
    return wa & wb, x0, y0


def overlap(a: Placed, b: Placed) -> int:
    return int(overlap_mask(a, b)[0].sum())


def grown(box: Placed, by: int) -> Placed:
    """The template's bounding box grown by `by` pixels on every side, filled."""
    h, w = box.mask.shape
    return Placed(np.ones((h + 2 * by, w + 2 * by), dtype=bool), box.x0 - by, box.y0 - by)


@dataclass(frozen=True)
class PersonPlacement:
    """The person's parts in one frame: the head (top-left, facing +1 right / -1 left), body pose and hand."""

    head_x: int
    head_y: int
    facing: int
    pose: int
    hand: Placed | None  # None: no hand found (the checker), so no hand contact
    u: int

    @property
    def head(self) -> Placed:
        side = HEAD_UNITS * self.u
        return Placed(np.ones((side, side), dtype=bool), self.head_x, self.head_y)

    @property
    def body(self) -> Placed:
        return body_placement(self.head_x, self.head_y, self.pose, self.u)

    def hair_face(self) -> tuple[Placed, Placed]:
        """The two halves of the head: hair on the back side, face on the side the head faces."""
        half = sprites(self.u).head_half
        left, right = Placed(half, self.head_x, self.head_y), Placed(half, self.head_x + half.shape[1], self.head_y)
        return (left, right) if self.facing > 0 else (right, left)


def body_placement(head_x: int, head_y: int, pose: int, u: int) -> Placed:
    """The body hangs under the head, torso columns under the head's; a left-sitting body's thighs reach left."""
    x0 = head_x - 3 * u if pose == SIT_LEFT else head_x
    return Placed(sprites(u).bodies[pose], x0, head_y + HEAD_UNITS * u)


def person_box(person: PersonPlacement) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) of head, body and hand: the person's layout box."""
    parts = [person.head, person.body] + ([person.hand] if person.hand is not None else [])
    return (min(p.x0 for p in parts), min(p.y0 for p in parts), max(p.x1 for p in parts), max(p.y1 for p in parts))


# ----------------------------------------------------------------------------------------------
# The relation rules (docs/household_world.md, "Relations"): person first, as in Action Genome


def attention(person: PersonPlacement, obj: Placed) -> str | None:
    """looking_at / not_looking_at by the side of the head the object's centre is on; None within the margin."""
    head = person.head
    twice_dx = (obj.x0 + obj.x1) - (head.x0 + head.x1)  # doubled centre difference: integers
    margin = 2 * LOOK_MARGIN_UNITS * person.u
    if person.facing * twice_dx >= margin:
        return "looking_at"
    if person.facing * twice_dx <= -margin:
        return "not_looking_at"
    return None


def silhouette_overlap(person: PersonPlacement, obj: Placed) -> list[tuple[np.ndarray, int, int]]:
    """Where the object's template meets the head's and the body's and the hand's does not cover them (there
    the hand shows, whoever is in front): per part a bool window and its top-left (x, y)."""
    windows = []
    for part in (person.head, person.body):
        shared, x0, y0 = overlap_mask(obj, part)
        if person.hand is not None and shared.any():
            covered, hx0, hy0 = overlap_mask(Placed(shared, x0, y0), person.hand)
            shared = shared.copy()
            shared[hy0 - y0: hy0 - y0 + covered.shape[0], hx0 - x0: hx0 - x0 + covered.shape[1]] &= ~covered
        windows.append((shared, x0, y0))
    return windows


def spatial(person: PersonPlacement, obj: Placed, obj_in_front: bool | None) -> str | None:
    """The one spatial relation: in_front_of / behind when the object overlaps the silhouette outside the hand
    (who is in front is `obj_in_front`; None there: undecided), else above / beneath / on_the_side_of by the
    object's centre."""
    if any(shared.any() for shared, _, _ in silhouette_overlap(person, obj)):
        if obj_in_front is None:
            return None
        return "in_front_of" if obj_in_front else "behind"
    u, top = person.u, person.head_y
    hip = person.head_y + HIP_UNITS * u - 1  # the torso's last row
    if obj.y0 + obj.y1 < 2 * top:
        return "above"
    box = person_box(PersonPlacement(person.head_x, person.head_y, person.facing, person.pose, None, u))
    if obj.y0 + obj.y1 > 2 * hip and obj.x0 <= box[2] and obj.x1 >= box[0]:
        return "beneath"
    return "on_the_side_of"


def seat_row(person: PersonPlacement) -> int:
    """The row a sitting body rests on: right under its thighs."""
    return person.head_y + SEAT_UNITS * person.u


def contacts(person: PersonPlacement, obj: Placed) -> list[str]:
    """holding: the hand's template overlaps the object's; touching: it does not, but the hand's box grown by u
    meets it; sitting_on: the body sits and the object carries the hips: it has a pixel on the seat row (right
    under the thighs) below the torso (the head's columns)."""
    found = []
    if person.hand is not None:
        if overlap(person.hand, obj):
            found.append("holding")
        elif overlap(grown(person.hand, person.u), obj):
            found.append("touching")
    if person.pose != STAND:
        row, hips = seat_row(person), person.head
        x0, x1 = max(hips.x0, obj.x0), min(hips.x1, obj.x1)
        if obj.y0 <= row <= obj.y1 and x0 <= x1 and obj.mask[row - obj.y0, x0 - obj.x0: x1 - obj.x0 + 1].any():
            found.append("sitting_on")
    return found


def relations(person: PersonPlacement, obj: Placed, obj_in_front: bool | None) -> list[str]:
    """Every relation (person, p, object) that holds, in the order attention, spatial, contact."""
    found = [attention(person, obj), spatial(person, obj, obj_in_front)]
    return [p for p in found if p is not None] + contacts(person, obj)
