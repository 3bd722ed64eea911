"""The household world's episodes (docs/household_world.md, "Scenes and activities"): the state of a person and
the things around them, played one frame at a time, and the room they are in.

A clip is a window of an *episode*: a scene (furniture on the floor, small things on the floor, a table top or a
sofa seat, or in the hand) and a script of phases (walk, turn, reach, grip, carry, raise, put down, sit, stand up,
wait: sg2video.data.household_activities). The graphs are not written by the script: the world computes them from
each frame's placements with the relation rules, so a graph always says what its frame shows. Everything is drawn
from the generator passed in, so an episode is a pure function of the clip's seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sg2video.data.household_sprites import (FLOOR_UNITS, HAND_UNITS, HEAD_TOP_UNITS, OBJECT_CLASSES, SEATS,
                                             SIT_LEFT, SIT_RIGHT, STAND, orient_index, sprites)

FURNITURE = ("table", *SEATS)
CLASS_ID = {name: k for k, name in enumerate(OBJECT_CLASSES)}
# the hand's place relative to the torso's left column and the head's top, in units, for a person facing right
# (facing left mirrors it about the torso's middle): at rest on the chest; carrying in front of the body or at
# its side
REST, CARRY_FRONT, CARRY_SIDE = (3, 6), (2, 4), (4, 4)
REACH_UNITS = (6, 8)  # how far from the torso's left column a reaching hand is put (its left column, facing right)


def thing_size(u: int, cls: int, orient: int) -> tuple[int, int]:
    """(width, height) in pixels of class `cls`'s template."""
    h, w = sprites(u).objects[cls][orient_index(orient)].shape
    return w, h


@dataclass
class Episode:
    """The state of an episode and the frames played so far.

    Person: `px` (torso's left column), `facing` (+1 right, -1 left), `pose` (STAND / SIT_RIGHT / SIT_LEFT), the hand
    `(rx, ry)` relative to (px, head top) in the facing-right frame, `held` (object index or -1) with its `grip`
    offset (object top-left minus hand top-left, facing-right frame). Objects: top-left `x`, `y`, depth `z` (-1
    behind the person's plane, +1 in front of it). `frames`: one row per frame, see `snap`.
    """

    u: int
    classes: list[int]
    orients: list[int]
    x: list[int]
    y: list[int]
    z: list[int]
    px: int = 0
    facing: int = 1
    pose: int = STAND
    hand: tuple[int, int] = (0, 0)
    held: int = -1
    grip: tuple[int, int] = (0, 0)
    frames: list[tuple] = field(default_factory=list)

    @property
    def head_y(self) -> int:
        return HEAD_TOP_UNITS * self.u

    def size(self, k: int) -> tuple[int, int]:
        return thing_size(self.u, self.classes[k], self.orients[k])

    def hand_xy(self) -> tuple[int, int]:
        """The hand's top-left pixel: `hand` mirrored about the torso's middle when facing left."""
        rx, ry = self.hand
        hand_w = HAND_UNITS * self.u
        return (self.px + rx if self.facing > 0 else self.px + 4 * self.u - hand_w - rx), self.head_y + ry

    def snap(self) -> None:
        """Play one frame: a held object follows the hand; the row is (person (6,), objects x, y, z, orient), the
        person's (px, facing, pose, hand x, hand y, held)."""
        hx, hy = self.hand_xy()
        if self.held >= 0:
            w, _ = self.size(self.held)
            gx, gy = self.grip
            self.x[self.held] = hx + gx if self.facing > 0 else hx + HAND_UNITS * self.u - gx - w
            self.y[self.held] = hy + gy
        person = (self.px, self.facing, self.pose, hx, hy, self.held)
        self.frames.append((person, list(self.x), list(self.y), list(self.z), list(self.orients)))

    # -- phases ----------------------------------------------------------------------------------

    def wait(self, n: int) -> None:
        for _ in range(n):
            self.snap()

    def walk_to(self, target: int, speed: float) -> None:
        """Walk at `speed` pixels a frame, facing the way it goes (the last frame lands on `target`)."""
        start = self.px
        if target != start:
            self.facing = 1 if target > start else -1
        steps = math.ceil(abs(target - start) / speed)
        for i in range(1, steps + 1):
            self.px = start + round((target - start) * i / steps)
            self.snap()

    def turn(self) -> None:
        """Turn round; a held thing turns with the hand (mirrored about it, so the hand keeps its grip)."""
        self.facing = -self.facing
        if self.held >= 0:
            self.orients[self.held] = -self.orients[self.held]
        self.snap()

    def hand_to(self, rx: int, ry: int, steps: int) -> None:
        (x0, y0), steps = self.hand, max(1, steps)
        for i in range(1, steps + 1):
            self.hand = (x0 + round((rx - x0) * i / steps), y0 + round((ry - y0) * i / steps))
            self.snap()

    def take(self, k: int) -> None:
        """The hand, resting on object k's top, closes on it (one unit down, over it): from this frame on the
        object moves with the hand, in front of the body."""
        self.hand = (self.hand[0], self.hand[1] + self.u)
        hx, hy = self.hand_xy()
        w, _ = self.size(k)
        gx = self.x[k] - hx if self.facing > 0 else hx + HAND_UNITS * self.u - w - self.x[k]
        self.held, self.grip, self.z[k] = k, (gx, self.y[k] - hy), 1
        self.snap()

    def let_go(self, z: int) -> None:
        self.z[self.held], self.held = z, -1

    def sit(self, orient: int) -> None:
        self.pose = SIT_RIGHT if orient > 0 else SIT_LEFT
        self.snap()

    def stand(self) -> None:
        self.pose = STAND
        self.snap()


# ----------------------------------------------------------------------------------------------
# Scenes


class Rejected(Exception):
    """The scene or script cannot be laid out as drawn: the clip is drawn again."""


def pick(rng: np.random.Generator, options) -> object:
    return options[int(rng.integers(len(options)))]


def randint(rng: np.random.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(rng.integers(lo, hi + 1))


@dataclass
class Scene:
    """The objects of an episode before it starts, and where small ones may rest: `surfaces[k]` for furniture k is
    (x lo, x hi, top row y, depth) of the part a thing can stand on."""

    u: int
    classes: list[int] = field(default_factory=list)
    orients: list[int] = field(default_factory=list)
    x: list[int] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    z: list[int] = field(default_factory=list)
    surfaces: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)

    @property
    def floor(self) -> int:
        return FLOOR_UNITS * self.u

    @property
    def side(self) -> int:
        return 32 * self.u

    def _columns_free(self, x0: int, x1: int, rows: tuple[int, int]) -> bool:
        """No placed object's box meets columns [x0, x1] within rows [y0, y1] (boxes: a cheap, strict test)."""
        for k in range(len(self.classes)):
            w, h = self.size(k)
            if x0 <= self.x[k] + w - 1 and x1 >= self.x[k] and rows[0] <= self.y[k] + h - 1 and rows[1] >= self.y[k]:
                return False
        return True

    def size(self, k: int) -> tuple[int, int]:
        return thing_size(self.u, self.classes[k], self.orients[k])

    def add(self, rng: np.random.Generator, name: str, on: int | None = None, x: int | None = None) -> int:
        """Put class `name` on the floor (furniture, or a small thing with `on=None`) or on furniture `on`'s surface,
        at `x` or at a free random place; returns its index."""
        cls, u = CLASS_ID[name], self.u
        orient = pick(rng, (1, -1))
        w, h = thing_size(u, cls, orient)
        if on is None:
            lo, hi, top, z = 0, self.side - w, self.floor, pick(rng, (1, -1))
        else:
            lo, hi, top, z = self.surfaces[on]
            hi -= w - 1
        if hi < lo or (x is not None and not lo <= x <= hi):
            raise Rejected("no room there")
        for _ in range(20):
            x0 = randint(rng, lo, hi) if x is None else x
            if self._columns_free(x0, x0 + w - 1, (top - h, top - 1)):
                break
        else:
            raise Rejected("no free place")
        k = len(self.classes)
        self.classes.append(cls)
        self.orients.append(orient)
        self.x.append(x0)
        self.y.append(top - h)
        self.z.append(z)
        if name == "table":
            self.surfaces[k] = (x0, x0 + w - 1, top - h, z)
        elif name == "sofa/couch":  # the seat, not the backrest (2 units at the back)
            back = 2 * u
            self.surfaces[k] = (x0 + back if orient > 0 else x0, x0 + w - 1 if orient > 0 else x0 + w - 1 - back,
                                self.floor - 4 * u, z)
        return k

    def add_small(self, rng: np.random.Generator, name: str) -> int:
        """A small thing on a random surface (a table top, a sofa seat) or on the floor."""
        spots = [None, *self.surfaces]
        return self.add(rng, name, on=pick(rng, spots))


def seat_position(scene: Scene, k: int, rng: np.random.Generator) -> int:
    """Torso column `px` of a person sitting on seat k: back against the backrest, thighs on the seat."""
    u, x0, orient = scene.u, scene.x[k], scene.orients[k]
    if OBJECT_CLASSES[scene.classes[k]] == "chair":
        return x0 + u if orient > 0 else x0
    return x0 + randint(rng, 2 * u, 5 * u) if orient > 0 else x0 + randint(rng, 3 * u, 6 * u)


def walk_speed(rng: np.random.Generator, u: int) -> float:
    return float(rng.uniform(0.5, 1.25)) * u


def walk_range(u: int) -> tuple[int, int]:
    """Torso columns a person keeps to: room for a hand on either side and for thighs sitting either way."""
    return 3 * u, 32 * u - 7 * u


def clamp_px(ep: Episode, px: int) -> int:
    lo, hi = walk_range(ep.u)
    return min(max(px, lo), hi)


def approach(ep: Episode, rng: np.random.Generator, px: int, facing: int, farthest: int) -> None:
    """Start up to `farthest` pixels before `px` (within the room), so walking there faces `facing`."""
    ep.px, ep.facing = clamp_px(ep, px - facing * randint(rng, 0, farthest)), facing
    ep.wait(randint(rng, 0, 2))
    ep.walk_to(px, walk_speed(rng, ep.u))
    ep.facing = facing


def reach(ep: Episode, rx: int, ry: int) -> None:
    """Put the hand out at chest height (or at the target's, if higher), then down onto the target."""
    ep.hand_to(rx, min(ry, REST[1] * ep.u), 1)
    ep.hand_to(rx, ry, 1)


def retract(ep: Episode) -> None:
    """The way back: up to chest height, then in to rest."""
    ep.hand_to(ep.hand[0], min(ep.hand[1], REST[1] * ep.u), 1)
    ep.hand_to(REST[0] * ep.u, REST[1] * ep.u, 1)


def walk_off(ep: Episode, rng: np.random.Generator) -> None:
    """What people do after the main act: wait, turn round, walk on, or turn and walk away."""
    choice = randint(rng, 0, 3)
    if choice == 0:
        ep.wait(randint(rng, 2, 4))
        return
    if choice >= 2:
        ep.turn()
    if choice != 2:
        ep.walk_to(clamp_px(ep, ep.px + ep.facing * randint(rng, 2 * ep.u, 10 * ep.u)), walk_speed(rng, ep.u))
    ep.wait(randint(rng, 0, 2))


def start_episode(scene: Scene, px: int, facing: int) -> Episode:
    return Episode(scene.u, list(scene.classes), list(scene.orients), list(scene.x), list(scene.y), list(scene.z),
                   px=px, facing=facing, hand=(REST[0] * scene.u, REST[1] * scene.u))


def hand_over(ep: Episode, k: int, facing: int) -> tuple[int, int]:
    """(hx, ry) of a hand right above the near end of object k, touching it, for a person facing `facing`."""
    u, hand_w = ep.u, HAND_UNITS * ep.u
    mask = sprites(u).objects[ep.classes[k]][orient_index(ep.orients[k])]
    left = 0 if facing > 0 else mask.shape[1] - hand_w  # the hand's columns within the object: its near end
    top = ep.y[k] + int(np.argmax(mask[:, left:left + hand_w].any(axis=1)))  # highest object row under the hand
    return ep.x[k] + left, top - hand_w - ep.head_y


def torso_for(ep: Episode, hx: int, rx: int, facing: int) -> int:
    """The torso column `px` that puts the hand's left column at `hx` with the hand `rx` out (facing-right frame)."""
    return hx - rx if facing > 0 else hx + HAND_UNITS * ep.u - 4 * ep.u + rx


def stand_to_reach(ep: Episode, k: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(facing, px, rx, ry): where to stand, facing which way, to lay the hand on object k's near end (`hand_over`);
    a side whose standing place is out of the room is not taken."""
    u = ep.u
    rx = randint(rng, REACH_UNITS[0] * u, REACH_UNITS[1] * u)
    lo, hi = walk_range(u)
    options = []
    for facing in (1, -1):
        hx, ry = hand_over(ep, k, facing)
        px = torso_for(ep, hx, rx, facing)
        if lo <= px <= hi:
            options.append((facing, px, rx, ry))
    if not options:
        raise Rejected("out of reach")
    return pick(rng, options)


def fill(scene: Scene, rng: np.random.Generator, n: int) -> None:
    """Other things in the room up to `n` objects: classes not there yet, at most two pieces of furniture."""
    while len(scene.classes) < n:
        used = {OBJECT_CLASSES[c] for c in scene.classes}
        furniture = sum(name in FURNITURE for name in used)
        options = [c for c in OBJECT_CLASSES if c not in used and (c not in FURNITURE or furniture < 2)]
        name = pick(rng, options)
        if name in FURNITURE:
            scene.add(rng, name)
        else:
            scene.add_small(rng, name)
