"""Ground-truth descriptions of synthetic scenes, written from templates with real variety (synonyms,
two clause orders, optional details), and the reverse: `parse` re-derives the facts from a text, so a
description can be checked against its scene and a model's output scored (`recall`).

Facts name an object by its first colour and shape ("red", "circle"), which is unique in a scene.
"""

from __future__ import annotations

import re

import numpy as np

from sparrow_jax.synthetic.world import COLOURS, SHAPES, Scene

SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
MOVE = ("moving {d}", "which moves {d}", "sliding {d}", "drifting {d}", "heading {d}")
MOVE_MAIN = ("moves {d}", "slides {d}", "drifts {d}", "heads {d}", "travels {d}")
DIRECTION_WORDS = {"left": ("left", "to the left"), "right": ("right", "to the right"),
                   "up": ("up", "upward"), "down": ("down", "downward")}
STILL = ("that stays still", "resting in place", "standing still", "that does not move")
STILL_MAIN = ("stays still", "does not move", "rests in place", "stands still")
APPEAR = ("appears", "shows up", "comes into view", "enters the scene")
VANISH = ("disappears", "vanishes", "fades away", "leaves the scene")
RECOLOUR = ("turns {c}", "changes to {c}", "becomes {c}", "changes colour to {c}")
COLLIDE = ("collides with", "bumps into", "hits", "crashes into")
THEN = ("Then", "After that", "Next", "Later", "Soon after")
INTRO = ("The video shows {x}.", "There is {x}.", "We see {x}.", "The clip starts with {x}.")
EMPTY = ("The video starts empty.", "At first the scene is empty.", "Nothing is visible at the start.")
QUIET = ("Nothing else happens.", "Nothing else changes.", "That is all that happens.")
REGIONS = ("top left", "top right", "bottom left", "bottom right", "top", "bottom", "left", "right", "centre")
PROMPTS = ("Describe the video.", "What happens in this video?", "Describe what you see in the clip.",
           "Tell me what happens in the video.")


def region(x: float, y: float) -> str:
    h = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    v = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    return f"{v} {h}".strip() or "centre"


def facts(scene: Scene) -> tuple[set, set]:
    """(required facts every description states, optional facts a description may state)."""
    required, optional = set(), set()
    for t in scene.things:
        name = (t.colour, t.shape)
        required.add(("object", *name, t.size))
        required.add(("moves", *name, t.direction) if t.direction else ("still", *name))
        optional.add(("at", *name, region(*t.start)))
        if t.appear > 0:
            required.add(("appear", *name))
        if t.vanish < scene.steps:
            required.add(("vanish", *name))
        if t.recolour:
            required.add(("recolour", *name, t.recolour[1]))
    for e in scene.events:
        if e.kind == "collide":
            a, b = sorted((scene.things[i].colour, scene.things[i].shape) for i in e.who)
            required.add(("collide", *a, *b))
    return required, optional


def describe(scene: Scene, rng: np.random.Generator) -> str:
    pick = lambda options: str(options[rng.integers(len(options))])  # noqa: E731

    def noun(i, step, article=False):
        t = scene.things[i]
        colour = scene.colour_at(i, step)
        if not article:
            return f"the {colour} {t.shape}"
        size = pick(SIZE_WORDS[t.size])
        where = f" in the {region(*t.start)}" if rng.random() < 0.3 else ""
        return f"{'an' if size[0] in 'aeiou' else 'a'} {size} {colour} {t.shape}{where}"

    def motion(i, main):
        d = scene.things[i].direction
        if d is None:
            return pick(STILL_MAIN if main else STILL)
        return pick(MOVE_MAIN if main else MOVE).format(d=pick(DIRECTION_WORDS[d]))

    sentences = []
    first = [i for i, t in enumerate(scene.things) if t.appear == 0]
    if not first:
        sentences.append(pick(EMPTY))
    elif rng.random() < 0.5:  # objects with their motion inline
        sentences.append(pick(INTRO).format(x=_join([f"{noun(i, 0, True)} {motion(i, False)}" for i in first])))
    else:  # objects first, then what each does
        sentences.append(pick(INTRO).format(x=_join([noun(i, 0, True) for i in first])))
        sentences += [f"{_cap(noun(i, 0))} {motion(i, True)}." for i in first]
    for k, e in enumerate(scene.events):
        lead = "Finally," if k == len(scene.events) - 1 and k > 0 else pick(THEN) + ","
        i = e.who[0]
        if e.kind == "appear":
            body = f"{noun(i, e.step, True)} {pick(APPEAR)}, {motion(i, False)}"
        elif e.kind == "vanish":
            body = f"{noun(i, e.step - 1)} {pick(VANISH)}"
        elif e.kind == "recolour":
            body = f"{noun(i, e.step - 1)} {pick(RECOLOUR).format(c=e.colour)}"
        else:
            body = f"{noun(i, e.step)} {pick(COLLIDE)} {noun(e.who[1], e.step)}"
        sentences.append(f"{lead} {body}.")
    if not scene.events:
        sentences.append(pick(QUIET))
    return " ".join(sentences)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


_WORD = lambda options: "|".join(sorted((re.escape(o) for o in options), key=len, reverse=True))  # noqa: E731
_SIZE = {w: size for size, words in SIZE_WORDS.items() for w in words}
_MENTION = re.compile(rf"\b(?:(a|an|the) )(?:({_WORD(_SIZE)}) )?({_WORD(COLOURS)}) ({_WORD(SHAPES)})"
                      rf"(?: in the ({_WORD(REGIONS)}))?")
_DIR = {w: d for d, words in DIRECTION_WORDS.items() for w in words}
_MOVES = re.compile(rf"\b(?:{_WORD([m.split(' ')[-2] for m in MOVE + MOVE_MAIN])}) ({_WORD(_DIR)})\b")
_STILL = re.compile(_WORD(STILL + STILL_MAIN))
_APPEAR, _VANISH, _COLLIDE = (re.compile(rf"\b(?:{_WORD(w)})\b") for w in (APPEAR, VANISH, COLLIDE))
_RECOLOUR = re.compile(rf"\b(?:{_WORD([r.split(' {')[0] for r in RECOLOUR])}) ({_WORD(COLOURS)})\b")


def parse(text: str) -> set:
    """The facts a description states (the inverse of `describe`, tolerant of unknown sentences)."""
    found, alias, names = set(), {}, []  # alias: current (colour, shape) -> first (colour, shape)
    for clause in re.split(r"[.;]|, | and | while ", text.lower()):
        mentions = list(_MENTION.finditer(clause))
        if not mentions:  # "..., moving left": the previous clause's subject goes on
            if names:
                _predicates(clause, names[0], found, alias)
            continue
        names = []
        for m in mentions:
            current = (m.group(3), m.group(4))
            name = alias.setdefault(current, current)
            names.append(name)
            if m.group(2):
                found.add(("object", *name, _SIZE[m.group(2)]))
            if m.group(5):
                found.add(("at", *name, m.group(5)))
        rest = clause[mentions[0].end():]
        if len(names) > 1 and _COLLIDE.search(rest):
            found.add(("collide", *min(names[:2]), *max(names[:2])))
        else:
            _predicates(rest, names[0], found, alias)
    return found


def _predicates(rest: str, subject: tuple, found: set, alias: dict) -> None:
    """What a clause says its subject does."""
    if _APPEAR.search(rest):
        found.add(("appear", *subject))
    if _VANISH.search(rest):
        found.add(("vanish", *subject))
    if m := _RECOLOUR.search(rest):
        found.add(("recolour", *subject, m.group(1)))
        alias[(m.group(1), subject[1])] = subject
    if m := _MOVES.search(rest):
        found.add(("moves", *subject, _DIR[m.group(1)]))
    elif _STILL.search(rest):
        found.add(("still", *subject))


def recall(text: str, scene: Scene) -> float:
    """Share of the scene's required facts that `text` states."""
    return recall_of_facts(text, facts(scene)[0])


def recall_of_facts(text: str, required) -> float:
    """Share of `required` facts (tuples, or lists as in a manifest) that `text` states."""
    required = {tuple(f) for f in required}
    return len(required & parse(text)) / len(required)
