"""Colours, shapes, neutral objects and the object-to-colour knowledge base (docs/method.md, "Conflict data")."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "yellow": (240, 220, 20),
    "blue": (30, 70, 220),
    "green": (30, 170, 50),
    "purple": (140, 40, 190),
    "orange": (250, 140, 10),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "pentagon", "star", "hexagon", "diamond", "cross")

# Objects without an inherent colour, for the indirect-simple tier ("same as a {B}. The {B} is {T}.").
NEUTRAL_OBJECTS: tuple[str, ...] = ("ball", "cup", "box", "pen", "hat", "kite", "book", "chair")


@dataclass(frozen=True)
class KnowledgeObject:
    name: str
    distribution: dict[str, float]

    @property
    def dominant(self) -> str:
        return max(self.distribution, key=self.distribution.get)

    @property
    def ambiguity(self) -> float:
        """Entropy (nats) of the object's colour distribution: 0 for unambiguous objects."""
        return max(0.0, -sum(p * math.log(p) for p in self.distribution.values() if p > 0))


@lru_cache(maxsize=1)
def knowledge_base() -> dict[str, KnowledgeObject]:
    raw = json.loads(resources.files("data_gen").joinpath("knowledge_base.json").read_text())
    kb = {}
    for name, dist in raw["objects"].items():
        unknown = set(dist) - set(COLORS)
        if unknown or abs(sum(dist.values()) - 1) > 1e-6:
            raise ValueError(f"knowledge_base.json: object {name!r} has colours {unknown or ''} "
                             f"or probabilities not summing to 1; fix the entry")
        kb[name] = KnowledgeObject(name, dict(dist))
    return kb


def objects_with_dominant(color: str) -> list[KnowledgeObject]:
    return [o for o in knowledge_base().values() if o.dominant == color]


def draw_scene_colors(rng, visible: list[bool], color_visual: str, palette: tuple[str, ...]) -> list[str]:
    """Each object's colour (object 0, the asked one, gets the image's colour `color_visual`); the others draw
    from `palette`, every colour but the text's.

    Where the image's colour is in the palette, the colours of the objects the image shows are drawn alike,
    one of the colours shown is picked uniformly, its label is swapped with the image's colour, and the asked
    object trades colours with one object of that colour. So, given the scene, the answer is a uniform pick among
    the colours shown and no count of colours tells it (docs/method.md, "Conflict data"). Otherwise (a palette
    without the image's colour) the others draw from the palette independently."""
    colors = [palette[i] for i in rng.integers(len(palette), size=len(visible))]
    if color_visual not in palette:
        return [color_visual] + colors[1:]
    shown_objects = [k for k, v in enumerate(visible) if v or k == 0]
    shown = sorted({colors[k] for k in shown_objects})
    picked = shown[rng.integers(len(shown))]
    swap = {picked: color_visual, color_visual: picked}
    colors = [swap.get(c, c) for c in colors]
    same = [k for k in shown_objects if colors[k] == color_visual]
    k = same[rng.integers(len(same))]
    colors[0], colors[k] = colors[k], colors[0]
    return colors


def with_article(noun: str) -> str:
    """'a ball', 'an apple', 'an orange cup'."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
