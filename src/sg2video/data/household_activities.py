"""Charades-like activities of the household world (docs/household_world.md, "Scenes and activities"): each lays
out a scene around what it needs and plays its script on an Episode (sg2video.data.household_scene)."""
from __future__ import annotations

import numpy as np

from sg2video.data.household_scene import (CARRY_FRONT, CARRY_SIDE, HAND_UNITS, Episode, Rejected, Scene,
                                           approach, clamp_px, fill, hand_over, pick, randint, reach, retract,
                                           seat_position, stand_to_reach, start_episode, walk_off, walk_range,
                                           walk_speed)
from sg2video.data.household_sprites import OBJECT_CLASSES, SEATS, SIT_LEFT, SIT_RIGHT, SMALL_CLASSES, STAND

ACTIVITIES = ("pick_up", "put_down", "sit_down", "stand_up", "look_around", "touch")
ACTIVITY_WEIGHTS = (0.25, 0.15, 0.2, 0.1, 0.15, 0.15)  # drawn before the scene; a rejected episode draws again


def _support(scene: Scene, rng: np.random.Generator, n: int) -> int | None:
    """Furniture for a small thing to rest on (a table mostly), when the clip has room for it; None: the floor."""
    if n >= 2 and rng.random() < 0.8:
        return scene.add(rng, pick(rng, ("table", "table", "sofa/couch")))
    return None


def pick_up(scene: Scene, rng: np.random.Generator, n: int) -> Episode:
    """Walk to a thing, put the hand on it (touching), close it (holding), lift it; maybe raise it over the head."""
    u = scene.u
    k = scene.add(rng, pick(rng, SMALL_CLASSES), on=_support(scene, rng, n))
    fill(scene, rng, n)
    ep = start_episode(scene, 0, 1)
    facing, px, rx, ry = stand_to_reach(ep, k, rng)
    approach(ep, rng, px, facing, 12 * u)
    reach(ep, rx, ry)
    ep.wait(randint(rng, 0, 2))
    ep.take(k)
    ep.wait(randint(rng, 0, 1))
    carry = pick(rng, (CARRY_FRONT, CARRY_SIDE))
    carry_y = carry[1] * u + max(0, -ep.grip[1])  # a thing gripped low hangs clear of the head
    ep.hand_to(carry[0] * u, carry_y, 2)
    if rng.random() < 0.5:  # raise it over the head (out past the face) and bring it down
        ep.hand_to(4 * u, carry_y, 1)
        ep.hand_to(4 * u, -ep.grip[1] - ep.size(k)[1], 2)
        ep.wait(randint(rng, 1, 3))
        ep.hand_to(4 * u, carry_y, 2)
    walk_off(ep, rng)
    return ep


def put_down(scene: Scene, rng: np.random.Generator, n: int) -> Episode:
    """Carry a thing to a table (or the floor), lower it onto it (holding), let go (touching), hand back."""
    u = scene.u
    support = _support(scene, rng, n)
    k = scene.add(rng, pick(rng, SMALL_CLASSES), on=support)  # where it will be put down
    fill(scene, rng, n)
    ep = start_episode(scene, 0, 1)
    rest_z = scene.surfaces[support][3] if support is not None else pick(rng, (1, -1))
    # where the hand, closed on the near end of its top, puts it down: as pick_up's grip, played backwards
    facing, px, rx, ry = stand_to_reach(ep, k, rng)
    ep.held, ep.grip, ep.z[k] = k, (0, ep.y[k] - (ep.head_y + ry + u)), 1
    carry_y = 4 * u + max(0, -ep.grip[1])  # a thing gripped low hangs clear of the head
    ep.hand = (pick(rng, (CARRY_FRONT, CARRY_SIDE))[0] * u, carry_y)
    approach(ep, rng, px, facing, 14 * u)
    reach(ep, rx, ry + u)
    ep.wait(randint(rng, 0, 1))
    ep.let_go(rest_z)
    ep.hand_to(rx, ry, 1)
    ep.wait(randint(rng, 0, 2))
    retract(ep)
    walk_off(ep, rng)
    return ep


def _seat_scene(scene: Scene, rng: np.random.Generator, n: int) -> tuple[int, bool]:
    """A seat, often with a table at its front (sitting at the table), and other things; (seat, table in front)."""
    u = scene.u
    seat = scene.add(rng, pick(rng, SEATS))
    at_table = n >= 2 and rng.random() < 0.6
    if at_table:
        w, _ = scene.size(seat)
        gap = randint(rng, 0, 2 * u)
        x = scene.x[seat] + w + gap if scene.orients[seat] > 0 else scene.x[seat] - 12 * u - gap
        if x < 0 or x + 12 * u > scene.side:
            raise Rejected("no room for the table")
        scene.add(rng, "table", x=x)
    fill(scene, rng, n)
    return seat, at_table


def _seated_act(ep: Episode, rng: np.random.Generator, seat: int) -> None:
    """Sitting: touch something within reach, turn the head away and back, or just sit."""
    u, choice = ep.u, rng.random()
    if choice < 0.4:
        reachable = []
        for k in range(len(ep.classes)):
            hx, ry = hand_over(ep, k, ep.facing)
            rx = hx - ep.px if ep.facing > 0 else ep.px + 4 * u - HAND_UNITS * u - hx
            if k != seat and 4 * u <= rx <= 9 * u and 2 * u <= ry <= 12 * u:
                reachable.append((rx, ry))
        if reachable:
            reach(ep, *pick(rng, reachable))
            ep.wait(randint(rng, 1, 3))
            retract(ep)
            return
    if choice < 0.7:
        ep.wait(randint(rng, 1, 3))
        ep.turn()
        ep.wait(randint(rng, 1, 3))
        if rng.random() < 0.5:
            ep.turn()
    ep.wait(randint(rng, 1, 3))


def sit_down(scene: Scene, rng: np.random.Generator, n: int) -> Episode:
    """Walk up to a seat from its front, turn round and sit down (sitting_on); or, with a table at its front, come
    from behind it; then do something seated."""
    u = scene.u
    seat, at_table = _seat_scene(scene, rng, n)
    orient = scene.orients[seat]
    px = seat_position(scene, seat, rng)
    ep = start_episode(scene, px, orient)
    approach(ep, rng, px, orient if at_table else -orient, 14 * u)
    if ep.facing != orient:
        ep.wait(randint(rng, 0, 1))
        ep.turn()
    ep.sit(orient)
    _seated_act(ep, rng, seat)
    return ep


def stand_up(scene: Scene, rng: np.random.Generator, n: int) -> Episode:
    """Sit for a while (maybe doing something), get up and walk off."""
    u = scene.u
    seat, _ = _seat_scene(scene, rng, n)
    orient = scene.orients[seat]
    ep = start_episode(scene, seat_position(scene, seat, rng), orient)
    ep.pose = SIT_RIGHT if orient > 0 else SIT_LEFT
    _seated_act(ep, rng, seat)
    ep.stand()
    ep.wait(randint(rng, 0, 1))
    ep.walk_to(clamp_px(ep, ep.px + ep.facing * randint(rng, 3 * u, 12 * u)), walk_speed(rng, u))
    ep.wait(randint(rng, 0, 2))
    return ep


def look_around(scene: Scene, rng: np.random.Generator, n: int) -> Episode:
    """Stand (or sit) among the things and look from one to another, now and then stepping aside."""
    u = scene.u
    fill(scene, rng, n)
    seats = [k for k, c in enumerate(scene.classes) if OBJECT_CLASSES[c] in SEATS]
    if seats and rng.random() < 0.4:
        seat = seats[0]
        ep = start_episode(scene, seat_position(scene, seat, rng), pick(rng, (1, -1)))
        ep.pose = SIT_RIGHT if scene.orients[seat] > 0 else SIT_LEFT
    else:
        ep = start_episode(scene, randint(rng, *walk_range(u)), pick(rng, (1, -1)))
    for _ in range(randint(rng, 2, 4)):
        ep.wait(randint(rng, 1, 4))
        if ep.pose == STAND and rng.random() < 0.3:
            ep.walk_to(clamp_px(ep, ep.px + randint(rng, -6 * u, 6 * u)), walk_speed(rng, u))
        else:
            ep.turn()
    ep.wait(randint(rng, 0, 2))
    return ep


def touch(scene: Scene, rng: np.random.Generator, n: int) -> Episode:
    """Walk to something and lay the hand on it for a while (touching), then take the hand back."""
    u = scene.u
    fill(scene, rng, n)
    k = randint(rng, 0, len(scene.classes) - 1)
    ep = start_episode(scene, 0, 1)
    facing, px, rx, ry = stand_to_reach(ep, k, rng)
    approach(ep, rng, px, facing, 12 * u)
    reach(ep, rx, ry)
    ep.wait(randint(rng, 1, 4))
    retract(ep)
    walk_off(ep, rng)
    return ep


SCRIPTS = {"pick_up": pick_up, "put_down": put_down, "sit_down": sit_down, "stand_up": stand_up,
           "look_around": look_around, "touch": touch}
assert tuple(SCRIPTS) == ACTIVITIES


def play(rng: np.random.Generator, u: int, num_objects: int) -> tuple[Episode, str]:
    """One episode with `num_objects` things besides the person; raises Rejected when it cannot be laid out."""
    activity = ACTIVITIES[int(rng.choice(len(ACTIVITIES), p=ACTIVITY_WEIGHTS))]
    return SCRIPTS[activity](Scene(u), rng, num_objects), activity
