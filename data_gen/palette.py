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


def with_article(noun: str) -> str:
    """'a ball', 'an apple', 'an orange cup'."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
