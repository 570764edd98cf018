"""A seeded synthetic video world: coloured shapes that move, bounce, appear, disappear, collide and
change colour. `sample_scene` draws a scene (pure data), `render` turns it into uint8 frames.

Everything is a function of the seed, so a scene, its frames and its description are reproducible.
Positions are in [0, 1] canvas units, so one scene renders at any resolution and frame count.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230), "yellow": (235, 215, 40),
    "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (240, 240, 240), "cyan": (40, 210, 220),
}
SIZES = {"small": 0.07, "large": 0.12}  # radius, canvas units
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (24, 24, 32)


@dataclasses.dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str
    start: tuple[float, float]  # (x, y) centre at its first visible step
    direction: str | None  # None: stays still
    speed: float  # canvas units per step
    appear: int  # first visible step
    vanish: int  # first step it is gone (== steps: stays to the end)
    recolour: tuple[int, str] | None  # (step, new colour)


@dataclasses.dataclass(frozen=True)
class Event:
    step: int
    kind: str  # "appear" | "vanish" | "recolour" | "collide"
    who: tuple[int, ...]  # indices into Scene.things
    colour: str | None = None  # new colour of a recolour


@dataclasses.dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    steps: int
    centres: np.ndarray  # [steps, n, 2]
    events: tuple[Event, ...]  # in step order

    def visible(self, i: int, step: int) -> bool:
        t = self.things[i]
        return t.appear <= step < t.vanish

    def colour_at(self, i: int, step: int) -> str:
        t = self.things[i]
        return t.recolour[1] if t.recolour and step >= t.recolour[0] else t.colour


def sample_scene(rng: np.random.Generator, steps: int = 32, max_things: int = 3) -> Scene:
    """Draw 1..max_things objects with distinct (colour, shape) and their timelines, then simulate."""
    n = int(rng.integers(1, max_things + 1))
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = rng.choice(len(pairs), size=n, replace=False)
    used = {pairs[j] for j in chosen}
    things = []
    for j in chosen:
        colour, shape = pairs[j]
        size = str(rng.choice(list(SIZES)))
        appear = int(rng.integers(1, steps // 3)) if rng.random() < 0.3 else 0
        vanish = int(rng.integers(2 * steps // 3, steps)) if rng.random() < 0.3 else steps
        recolour = None
        if rng.random() < 0.35:
            free = [c for c in COLOURS if (c, shape) not in used]
            new = str(rng.choice(free))
            used.add((new, shape))
            quarter = (vanish - appear) // 4  # away from the ends, so both colours are seen
            recolour = (int(rng.integers(appear + quarter, vanish - quarter)), new)
        direction = None if rng.random() < 0.15 else str(rng.choice(list(DIRECTIONS)))
        r = SIZES[size]
        for _ in range(100):  # start clear of the others
            start = tuple(float(v) for v in rng.uniform(r + 0.05, 1 - r - 0.05, size=2))
            if all(np.hypot(start[0] - o.start[0], start[1] - o.start[1]) > r + SIZES[o.size] + 0.05 for o in things):
                break
        things.append(Thing(shape, colour, size, start, direction, float(rng.uniform(0.015, 0.03)),
                            appear, vanish, recolour))
    return simulate(tuple(things), steps)


def simulate(things: tuple[Thing, ...], steps: int) -> Scene:
    """Move every object along its direction, bouncing off the walls; two visible objects that come
    into contact while approaching collide: both reverse (a still object stays still), one `collide`
    event per contact."""
    n = len(things)
    pos = np.array([t.start for t in things], np.float64).reshape(n, 2)
    vel = np.array([np.multiply(DIRECTIONS[t.direction], t.speed) if t.direction else (0.0, 0.0)
                    for t in things], np.float64).reshape(n, 2)
    radius = np.array([SIZES[t.size] for t in things])
    centres = np.zeros((steps, n, 2))
    events = []
    touching = set()
    for step in range(steps):
        alive = [i for i, t in enumerate(things) if t.appear <= step < t.vanish]
        events += [Event(step, "appear", (i,)) for i in alive if things[i].appear == step and step > 0]
        events += [Event(step, "vanish", (i,)) for i, t in enumerate(things) if t.vanish == step]
        events += [Event(step, "recolour", (i,), things[i].recolour[1]) for i in alive
                   if things[i].recolour and things[i].recolour[0] == step]
        for a in alive:
            for b in alive:
                if a < b:
                    close = np.linalg.norm(pos[a] - pos[b]) < radius[a] + radius[b]
                    approaching = np.dot(vel[a] - vel[b], pos[a] - pos[b]) < 0
                    if close and approaching and (a, b) not in touching:
                        events.append(Event(step, "collide", (a, b)))
                        vel[[a, b]] *= -1
                    (touching.add if close else touching.discard)((a, b))
        centres[step] = pos
        for i in alive:  # objects move only while visible
            pos[i] += vel[i]
            for axis in range(2):
                if not radius[i] <= pos[i, axis] <= 1 - radius[i]:
                    vel[i, axis] *= -1
                    pos[i, axis] = np.clip(pos[i, axis], radius[i], 1 - radius[i])
    return Scene(things, steps, centres, tuple(events))


def shape_mask(shape: str, dx, dy, r: float):
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":  # apex up
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        thin = r / 3
        return ((np.abs(dx) <= thin) & (np.abs(dy) <= r)) | ((np.abs(dy) <= thin) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def frame_steps(scene: Scene, frames: int) -> np.ndarray:
    """The simulation steps that `frames` rendered frames show: spread uniformly over the scene."""
    return np.linspace(0, scene.steps - 1, frames).round().astype(int)


def pixel_centres(height: int, width: int):
    """(ys, xs) [height, width]: each pixel's centre in canvas units."""
    return np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")


def render(scene: Scene, frames: int, height: int, width: int) -> np.ndarray:
    """[frames, height, width, 3] uint8: `frames` samples spread uniformly over the scene's steps."""
    ys, xs = pixel_centres(height, width)
    out = np.empty((frames, height, width, 3), np.uint8)
    for f, step in enumerate(frame_steps(scene, frames)):
        img = np.empty((height, width, 3), np.uint8)
        img[:] = BACKGROUND
        for i, t in enumerate(scene.things):
            if scene.visible(i, step):
                cx, cy = scene.centres[step, i]
                img[shape_mask(t.shape, xs - cx, ys - cy, SIZES[t.size])] = COLOURS[scene.colour_at(i, step)]
        out[f] = img
    return out
