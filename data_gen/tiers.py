"""Visual difficulty tiers (docs/method.md, "Conflict data"), expressed relative to the canvas.

Sizes are the side of the target's bounding box as a fraction of the canvas side.
Tiers 0-4 come from "80-200 px on an 800x600 canvas" (fraction of the 600 px short
side); tiers 5-13 from "x % of image" on 224 px canvases, read as a fraction of the side.
"""
from __future__ import annotations

from dataclasses import dataclass

# Below this the shape is no longer drawable; documented clamp for small canvases.
MIN_TARGET_PX = 5


@dataclass(frozen=True)
class VisualTier:
    d_v: int
    size_band: tuple[float, float]  # fraction of the canvas side
    distractors: int
    occlusion_rate: float  # share of distractors that overlap the target

    def size_px(self, canvas: int) -> tuple[float, float]:
        lo, hi = (max(f * canvas, MIN_TARGET_PX) for f in self.size_band)
        return lo, max(hi, lo)

    @property
    def overlapping(self) -> int:
        return round(self.occlusion_rate * self.distractors)


_LARGE = (80 / 600, 200 / 600)
COLOR_TIERS: tuple[VisualTier, ...] = (
    *(VisualTier(i, _LARGE, i, 0.0) for i in range(5)),
    VisualTier(5, (0.20, 0.40), 7, 0.5),
    VisualTier(6, (0.20, 0.40), 10, 0.8),
    VisualTier(7, (0.05, 0.10), 7, 0.5),
    VisualTier(8, (0.05, 0.10), 11, 0.8),
    VisualTier(9, (0.04, 0.06), 20, 0.3),
    VisualTier(10, (0.04, 0.06), 30, 0.6),
    VisualTier(11, (0.04, 0.06), 40, 0.5),
    VisualTier(12, (0.04, 0.06), 55, 0.6),
    VisualTier(13, (0.04, 0.06), 70, 0.7),
)


@dataclass(frozen=True)
class AttributeTier:
    d_v: int
    objects: tuple[int, int]  # inclusive range of object count, target included
    size_band: tuple[float, float]


ATTRIBUTE_TIERS: tuple[AttributeTier, ...] = (
    AttributeTier(0, (3, 4), (0.22, 0.28)),
    AttributeTier(1, (6, 8), (0.20, 0.26)),
    AttributeTier(2, (6, 8), (0.11, 0.14)),
    AttributeTier(3, (10, 12), (0.11, 0.14)),
)

# Text tiers. Integers follow docs/method.md; the rest are the no-conflict baseline and controls.
TEXT_TIERS = ("original", "direct", "indirect_simple", "indirect_knowledge")
ATTRIBUTE_TEXT_TIERS = TEXT_TIERS + ("spatial",)
CONTROLS = ("text_irrelevant", "image_irrelevant")
D_T = {"original": -1, "direct": 0, "indirect_simple": 1, "indirect_knowledge": 2, "spatial": 3,
       "text_irrelevant": -1, "image_irrelevant": -1}
