"""Polygon shapes and a layered label map: each object's full mask and who is visible where.

Images are flat-coloured (no anti-aliasing), so every pixel belongs to exactly one object
or the background and tier properties can be measured back from the masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw


def _regular(n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    outer = _regular(2 * points)
    return [(x * (1 if k % 2 == 0 else inner), y * (1 if k % 2 == 0 else inner)) for k, (x, y) in enumerate(outer)]


_CROSS = [(-1, -0.33), (-0.33, -0.33), (-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33),
          (1, 0.33), (0.33, 0.33), (0.33, 1), (-0.33, 1), (-0.33, 0.33), (-1, 0.33)]
UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "circle": _regular(32),
    "triangle": _regular(3),
    "pentagon": _regular(5),
    "star": _star(),
    "hexagon": _regular(6),
    "diamond": [(0, -1), (0.7, 0), (0, 1), (-0.7, 0)],
    "cross": _CROSS,
}


def polygon_mask(shape: str, size: float, angle_deg: float = 0.0) -> np.ndarray:
    """Boolean mask of `shape` whose bounding box's longer side is about `size` pixels."""
    # Quantised so crowded scenes reuse rasterised masks (half-pixel sizes, whole degrees).
    return _polygon_mask(shape, round(size * 2) / 2, round(angle_deg))


@lru_cache(maxsize=8192)
def _polygon_mask(shape: str, size: float, angle_deg: float) -> np.ndarray:
    pts = np.asarray(UNIT_POLYGONS[shape], dtype=float)
    a = math.radians(angle_deg)
    pts = pts @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    pts -= pts.min(axis=0)
    pts *= (size - 1) / max(pts.max(axis=0).max(), 1e-9)
    w, h = (int(math.ceil(v)) + 1 for v in pts.max(axis=0))
    img = Image.new("1", (w, h), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in pts], fill=1)
    mask = np.asarray(img, dtype=bool)
    mask.flags.writeable = False  # shared through the cache
    return mask


@dataclass
class Placed:
    """An object's full (unoccluded) mask stored as a crop at (y, x)."""
    y: int
    x: int
    crop: np.ndarray

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        m = np.zeros(shape, dtype=bool)
        h, w = self.crop.shape
        m[self.y:self.y + h, self.x:self.x + w] = self.crop
        return m

    def bbox(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.crop)
        return (int(self.x + xs.min()), int(self.y + ys.min()), int(self.x + xs.max()) + 1, int(self.y + ys.max()) + 1)


@dataclass
class LabelMap:
    """Top-most owner per pixel (-1 = background); objects go on top of or beneath all others.

    `visible[k]` counts object k's visible pixels, kept up to date so placement checks stay
    local to the candidate's crop instead of scanning the canvas.
    """
    height: int
    width: int
    objects: list[Placed] = field(default_factory=list)

    def __post_init__(self):
        self.top = np.full((self.height, self.width), -1, dtype=np.int32)
        self.visible = np.zeros(0, dtype=np.int64)

    def fits(self, crop: np.ndarray, y: int, x: int) -> bool:
        h, w = crop.shape
        return 0 <= y and 0 <= x and y + h <= self.height and x + w <= self.width

    def cover(self, crop: np.ndarray, y: int, x: int, on_top: bool) -> tuple[np.ndarray, int]:
        """Pixels each existing object would lose, and pixels the candidate would show."""
        h, w = crop.shape
        region = self.top[y:y + h, x:x + w]
        if not on_top:  # count_nonzero: several times faster than a bool sum, and placement calls this ~10^5 times
            return np.zeros(len(self.objects), dtype=np.int64), int(np.count_nonzero(crop & (region == -1)))
        hit = region[crop]
        return np.bincount(hit[hit >= 0], minlength=len(self.objects)), int(np.count_nonzero(crop))

    def add(self, crop: np.ndarray, y: int, x: int, on_top: bool) -> int:
        lost, shown = self.cover(crop, y, x, on_top)
        h, w = crop.shape
        region = self.top[y:y + h, x:x + w]
        k = len(self.objects)
        region[crop if on_top else crop & (region == -1)] = k
        self.visible = np.append(self.visible - lost, shown)
        self.objects.append(Placed(y, x, crop))
        return k

    def overlaps(self, index: int, crop: np.ndarray, y: int, x: int) -> bool:
        """Whether a candidate's full mask shares a pixel with object `index`'s full mask."""
        o = self.objects[index]
        oh, ow = o.crop.shape
        h, w = crop.shape
        y0, x0 = max(y, o.y), max(x, o.x)
        y1, x1 = min(y + h, o.y + oh), min(x + w, o.x + ow)
        if y0 >= y1 or x0 >= x1:
            return False
        a = crop[y0 - y:y1 - y, x0 - x:x1 - x]
        b = o.crop[y0 - o.y:y1 - o.y, x0 - o.x:x1 - o.x]
        return bool((a & b).any())


def patch_owners(top: np.ndarray, patch: int) -> np.ndarray:
    """An owner map (`LabelMap.top`) cut into patches, row-major as a ViT orders them: (patches, patch * patch)."""
    grid = top.shape[0] // patch
    owners = top[:grid * patch, :grid * patch].reshape(grid, patch, grid, patch).transpose(0, 2, 1, 3)
    return owners.reshape(grid * grid, patch * patch)


def place_apart(canvas: int, n: int, draw, rng: np.random.Generator, tries: int = 500) -> list[tuple]:
    """`n` objects placed on a square canvas without touching, in a random order, so that an object's size and place
    do not depend on its index (the asked object is index 0, and a question-blind reader must not find it by
    where or how large it is). `draw(k, attempt)` gives object k's (mask, extra) at that attempt (it may shrink
    with the attempts). Returns (mask, extra, y, x) per object, in index order."""
    lm, placed = LabelMap(canvas, canvas), {}
    for k in (int(i) for i in rng.permutation(n)):
        for attempt in range(tries):
            mask, extra = draw(k, attempt)
            h, w = mask.shape
            if h > canvas or w > canvas:
                continue
            y, x = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
            if not any(lm.overlaps(j, np.pad(mask, 1), y - 1, x - 1) for j in range(len(lm.objects))):
                break
        else:
            raise RuntimeError(f"could not place {n} objects apart on a {canvas}px canvas; use a larger --image_size")
        lm.add(mask, y, x, on_top=True)
        placed[k] = (mask, extra, y, x)
    return [placed[k] for k in range(n)]
