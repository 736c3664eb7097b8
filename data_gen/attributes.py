"""Attribute-recognition scenes (CLEVR-like, rendered procedurally) and rows (docs/method.md, "Conflict data").

Objects are spheres, cubes and cylinders in metal (specular highlight) or rubber (matte);
exactly one object has the asked (material, shape) pair, and the question asks its colour.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .blind_readers import label_map_readers
from .colors import text_context, tier_rows
from .palette import COLOR_NAMES, COLORS, NEUTRAL_OBJECTS, draw_scene_colors, objects_with_dominant, with_article
from .raster import LabelMap, place_apart
from .tiers import ATTRIBUTE_TEXT_TIERS, ATTRIBUTE_TIERS, AttributeTier

SOLIDS = ("sphere", "cube", "cylinder")
MATERIALS = ("metal", "rubber")
PAIRS = tuple((m, s) for m in MATERIALS for s in SOLIDS)
OPPOSITE = {"left": "right", "right": "left"}
_LIGHT = np.array([-0.5, -0.6, 0.62]) / np.linalg.norm([-0.5, -0.6, 0.62])


@dataclass(frozen=True)
class AttributeGroup:
    group: int
    target: tuple[str, str]  # (material, solid)
    absent: tuple[str, str]  # never drawn: asked by the image-irrelevant control
    distractor_pairs: tuple[tuple[str, str], ...]
    color_visual: str
    color_text: str
    distractor_colors: tuple[str, ...]  # the palette distractors draw from: every colour but Y_t
    neutral_objects: tuple[str, str]
    knowledge_object: str
    position: str


def name(pair: tuple[str, str]) -> str:
    return f"{pair[0]} {pair[1]}"


def sample_group(group: int, seed: int) -> AttributeGroup:
    rng = np.random.default_rng([seed, group, 11])
    pairs = [PAIRS[i] for i in rng.permutation(len(PAIRS))]
    cv, ct = (COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 2, replace=False))
    kb = objects_with_dominant(ct)
    n1, n2 = (NEUTRAL_OBJECTS[i] for i in rng.choice(len(NEUTRAL_OBJECTS), 2, replace=False))
    return AttributeGroup(
        group=group, target=pairs[0], absent=pairs[1], distractor_pairs=tuple(pairs[2:]),
        color_visual=cv, color_text=ct, distractor_colors=tuple(c for c in COLOR_NAMES if c != ct),
        neutral_objects=(n1, n2), knowledge_object=kb[rng.integers(len(kb))].name,
        position=("left", "right")[rng.integers(2)],
    )


@lru_cache(maxsize=512)
def solid_sprite(solid: str, material: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shading) of a solid in a size x size box; shading in [0, 1], specular above 1."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    if solid == "sphere":
        dx, dy = (xx - 0.5) / 0.5, (yy - 0.5) / 0.5
        mask = dx ** 2 + dy ** 2 <= 1
        nz = np.sqrt(np.clip(1 - dx ** 2 - dy ** 2, 0, 1))
        normal_dot = np.clip(dx * _LIGHT[0] + dy * _LIGHT[1] + nz * _LIGHT[2], 0, 1)
        spec_dot = normal_dot
    elif solid == "cylinder":
        e = 0.16
        dx = (xx - 0.5) / 0.4
        body = (np.abs(dx) <= 1) & (yy >= e) & (yy <= 1 - e)
        top = dx ** 2 + ((yy - e) / e) ** 2 <= 1
        bottom = dx ** 2 + ((yy - 1 + e) / e) ** 2 <= 1
        mask = body | top | bottom
        nz = np.sqrt(np.clip(1 - dx ** 2, 0, 1))
        normal_dot = np.where(top, 0.95, np.clip(dx * _LIGHT[0] + nz * _LIGHT[2], 0, 1))
        spec_dot = np.where(top, 0.0, normal_dot / np.hypot(_LIGHT[0], _LIGHT[2]))  # brightest vertical line
    elif solid == "cube":
        img = Image.new("L", (size, size), 0)
        d = ImageDraw.Draw(img)
        s, k = size - 1, 0.28 * (size - 1)
        d.polygon([(0, k), (s - k, k), (s - k, s), (0, s)], fill=1)  # front
        d.polygon([(0, k), (k, 0), (s, 0), (s - k, k)], fill=2)  # top
        d.polygon([(s - k, k), (s, 0), (s, s - k), (s - k, s)], fill=3)  # side
        faces = np.asarray(img)
        mask = faces > 0
        normal_dot = np.choose(faces, [0.0, 0.7, 0.95, 0.45])
        spec_dot = np.where(faces == 1, 1 - np.hypot(xx - 0.25, yy - 0.45), 0.0)
    else:
        raise ValueError(f"unknown solid {solid!r}; use one of {SOLIDS}")
    if material == "metal":
        shading = 0.15 + 0.85 * normal_dot ** 1.5 + 1.2 * np.clip(spec_dot, 0, 1) ** 40
    else:
        shading = 0.45 + 0.5 * normal_dot
    return mask, shading


@dataclass
class AttributeScene:
    image: Image.Image
    labels: LabelMap  # object 0 is the target
    pairs: list[tuple[str, str]]
    colors: list[str]

    def measured(self) -> dict:
        target = self.labels.objects[0]
        x0, y0, x1, y1 = target.bbox()
        return {"n_distractors": len(self.labels.objects) - 1, "occlusion_share": 0.0,
                "target_size": max(x1 - x0, y1 - y0) / self.labels.width,
                "target_visible": float(self.labels.visible[0] / target.crop.sum())}


def render_attribute_scene(g: AttributeGroup, tier: AttributeTier, canvas: int, seed: int) -> AttributeScene:
    rng = np.random.default_rng([seed, g.group, 12, tier.d_v])
    n = int(rng.integers(tier.objects[0], tier.objects[1] + 1))
    lo, hi = (max(4, f * canvas) for f in tier.size_band)
    pairs = [g.target] + [g.distractor_pairs[i] for i in rng.integers(len(g.distractor_pairs), size=n - 1)]

    def draw(k: int, attempt: int):
        material, solid = pairs[k]
        return solid_sprite(solid, material, int(round(rng.uniform(lo, hi) * (0.9 ** (attempt // 100)))))
    lm, shadings = LabelMap(canvas, canvas), []
    for mask, shading, y, x in place_apart(canvas, n, draw, rng):
        lm.add(mask, y, x, on_top=True)
        shadings.append(shading)
    colors = draw_scene_colors(rng, [True] * n, g.color_visual, g.distractor_colors)
    ramp = np.linspace(215, 165, canvas)[:, None, None]  # floor lit from above
    pixels = np.broadcast_to(ramp, (canvas, canvas, 3)).copy()
    for k, (obj, shading) in enumerate(zip(lm.objects, shadings)):
        h, w = obj.crop.shape
        base = np.asarray(COLORS[colors[k]], dtype=float)
        rgb = np.clip(shading[..., None] * base + np.clip(shading - 1, 0, None)[..., None] * 255, 0, 255)
        region = pixels[obj.y:obj.y + h, obj.x:obj.x + w]
        region[obj.crop] = rgb[obj.crop]
    return AttributeScene(Image.fromarray(pixels.astype(np.uint8), "RGB"), lm, pairs, colors)


def spatial_context(g: AttributeGroup, asked: str) -> str:
    """Text tier 3: the answer needs one spatial inference step."""
    s1, s2 = g.neutral_objects
    return (f"There is {with_article(g.color_text + ' ' + s1)}; on the {g.position} of the {s1} is {with_article(s2)}. "
            f"The {asked}'s color is the same as the object {OPPOSITE[g.position]} of the {s2}.")


def attribute_rows(g: AttributeGroup, d_v: int, image_id: str) -> list[dict]:
    def context_of(tier: str, asked: str) -> str:
        if tier == "spatial":
            return spatial_context(g, asked)
        return text_context(tier, asked, g.color_text, g.neutral_objects[0], g.knowledge_object)
    return tier_rows("attributes", ATTRIBUTE_TEXT_TIERS, image_id, g.group, d_v, name(g.target), name(g.absent),
                     name(g.distractor_pairs[0]), g.color_visual, g.color_text, g.knowledge_object, context_of)


def render_attribute_group(args: tuple[int, int, int]) -> tuple[list[dict], list[dict]]:
    group, seed, canvas = args
    g = sample_group(group, seed)
    images, rows = [], []
    for tier in ATTRIBUTE_TIERS:
        scene = render_attribute_scene(g, tier, canvas, seed)
        image_id = f"a{group:05d}-v{tier.d_v:02d}"
        images.append({"image_id": image_id, "image": scene.image, "target_box": list(scene.labels.objects[0].bbox()),
                       **scene.measured(), "readers": {"d_v": tier.d_v, **label_map_readers(scene.labels, scene.colors)}})
        rows += attribute_rows(g, tier.d_v, image_id)
    return images, rows
