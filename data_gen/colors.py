"""Colour-recognition conflict scenes and rows (docs/method.md, "Conflict data")."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .blind_readers import label_map_readers
from .palette import (COLOR_NAMES, COLORS, NEUTRAL_OBJECTS, SHAPES, draw_scene_colors, knowledge_base,
                      objects_with_dominant, with_article)
from .raster import LabelMap, place_apart, polygon_mask
from .tiers import COLOR_TIERS, CONTROLS, D_T, TEXT_TIERS, VisualTier

INSTRUCTION = "Please use one word to answer this question."
MIN_VISIBLE_TARGET = 0.6  # an occluded target keeps at least this share of its pixels visible
MIN_VISIBLE_DISTRACTOR = 0.25
BACKGROUND = (235, 235, 235)


@dataclass(frozen=True)
class ColorGroup:
    """What every tier of one group shares: target, answers, and the text's objects."""
    group: int
    shape: str  # the target's shape
    absent_shape: str  # never drawn: the image-irrelevant control asks about it
    other_shape: str  # a distractor shape the text-irrelevant control talks about
    color_visual: str  # Y_v
    color_text: str  # Y_t
    neutral_object: str
    knowledge_object: str
    distractor_colors: tuple[str, ...]  # the palette distractors draw from: every colour but Y_t
    distractor_shapes: tuple[str, ...]


def sample_group(group: int, seed: int) -> ColorGroup:
    rng = np.random.default_rng([seed, group, 1])
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    cv, ct = (COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), 2, replace=False))
    kb = objects_with_dominant(ct)
    return ColorGroup(
        group=group, shape=shapes[0], absent_shape=shapes[1], other_shape=shapes[2],
        color_visual=cv, color_text=ct,
        neutral_object=NEUTRAL_OBJECTS[rng.integers(len(NEUTRAL_OBJECTS))],
        knowledge_object=kb[rng.integers(len(kb))].name,
        distractor_colors=tuple(c for c in COLOR_NAMES if c != ct),
        distractor_shapes=tuple(shapes[2:]),
    )


@dataclass
class Scene:
    image: Image.Image
    labels: LabelMap  # object 0 is the target
    colors: list[str]
    overlapping: list[bool]  # per distractor, as placed (tests re-measure from masks)

    @property
    def target_box(self) -> tuple[int, int, int, int]:
        return self.labels.objects[0].bbox()

    def measured(self) -> dict:
        """Tier properties measured on the rendered masks."""
        lm = self.labels
        target = lm.objects[0]
        ov = [lm.overlaps(0, o.crop, o.y, o.x) for o in lm.objects[1:]]
        x0, y0, x1, y1 = target.bbox()
        vis = np.asarray(lm.visible)
        return {
            "n_distractors": len(lm.objects) - 1,
            "occlusion_share": float(np.mean(ov)) if ov else 0.0,
            "target_size": max(x1 - x0, y1 - y0) / max(lm.height, lm.width),
            "target_visible": float(vis[0] / target.crop.sum()),
            "min_distractor_visible_px": int(vis[1:].min()) if len(vis) > 1 else 0,
        }


def render_color_scene(g: ColorGroup, tier: VisualTier, canvas: int, seed: int) -> Scene:
    rng = np.random.default_rng([seed, g.group, 2, tier.d_v])
    lo, hi = tier.size_px(canvas)
    shapes = [g.shape] + [g.distractor_shapes[i] for i in rng.integers(len(g.distractor_shapes), size=tier.distractors)]
    lm = LabelMap(canvas, canvas)
    if not tier.overlapping:  # every object drawn alike: size from the tier's band, placed apart in random order
        def draw(k: int, attempt: int):
            return polygon_mask(shapes[k], max(3.0, rng.uniform(lo, hi) * 0.9 ** (attempt // 50)), rng.uniform(-15, 15)), None
        for crop, _, y, x in place_apart(canvas, len(shapes), draw, rng):
            lm.add(crop, y, x, on_top=True)
        flags = [False] * tier.distractors
    else:  # the distractors are placed around the target, a given share of them overlapping it
        size = rng.uniform(lo, hi)
        crop = polygon_mask(g.shape, size, rng.uniform(-15, 15))
        h, w = crop.shape
        lm.add(crop, int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1)), on_top=True)
        flags = [True] * tier.overlapping + [False] * (tier.distractors - tier.overlapping)
        flags = [flags[i] for i in rng.permutation(len(flags))]
        for shape, overlapping in zip(shapes[1:], flags):
            _place_distractor(lm, rng, shape, rng.uniform(lo, hi), overlapping)
    colors = draw_scene_colors(rng, list(lm.visible > 0), g.color_visual, g.distractor_colors)
    palette = np.array([COLORS[c] for c in colors] + [BACKGROUND], dtype=np.uint8)
    pixels = palette[lm.top]  # index -1 picks the background row
    return Scene(Image.fromarray(pixels, "RGB"), lm, colors, flags)


def _place_distractor(lm: LabelMap, rng: np.random.Generator, shape: str, size: float, overlapping: bool):
    """Rejection-sample a position with the right overlap; prefer placements that hide nobody.

    Hard rule: the target keeps MIN_VISIBLE_TARGET of its pixels (a distractor that would hide
    more goes beneath). Soft rule, dropped in crowded tiers after a few tries: earlier
    distractors keep MIN_VISIBLE_DISTRACTOR of their pixels.
    """
    target = lm.objects[0]
    ys, xs = np.nonzero(target.crop)
    target_area = len(ys)
    areas = np.array([np.count_nonzero(o.crop) for o in lm.objects])
    target_size = max(target.crop.shape)
    fallback, hidden = None, None
    for attempt in range(200):
        if attempt and attempt % 25 == 0:
            size = max(3.0, size * 0.85)
        crop = polygon_mask(shape, size, rng.uniform(-15, 15))
        h, w = crop.shape
        if overlapping:  # centre near a random target pixel
            k = rng.integers(target_area)
            r = rng.uniform(0.3, 0.6) * (size + target_size) / 2
            a = rng.uniform(0, 2 * math.pi)
            y = int(round(target.y + ys[k] + r * math.sin(a) - h / 2))
            x = int(round(target.x + xs[k] + r * math.cos(a) - w / 2))
        else:
            y, x = int(rng.integers(0, lm.height - h + 1)), int(rng.integers(0, lm.width - w + 1))
        if not lm.fits(crop, y, x) or lm.overlaps(0, crop, y, x) != overlapping:
            continue
        for on_top in (True, False):
            lost, shown = lm.cover(crop, y, x, on_top)
            visible = lm.visible - lost
            if visible[0] < MIN_VISIBLE_TARGET * target_area:
                continue
            if shown >= MIN_VISIBLE_DISTRACTOR * np.count_nonzero(crop) and (
                    visible[1:] >= MIN_VISIBLE_DISTRACTOR * areas[1:]).all():
                lm.add(crop, y, x, on_top)
                return
            if fallback is None and shown > 0:
                fallback = (crop, y, x, on_top)
            hidden = hidden or (crop, y, x, on_top)
        if fallback is not None and attempt >= 20:
            break
    # last resort on tiny canvases: beneath the others, possibly hidden (its mask still counts)
    fallback = fallback or hidden
    if fallback is None:
        raise RuntimeError(f"could not place a {shape} distractor on a {lm.width}px canvas; use a larger --image_size")
    lm.add(*fallback)


def question(shape: str) -> str:
    return f"What color is the {shape}?"


def text_context(text_tier: str, shape: str, color: str, neutral: str, knowledge: str) -> str:
    """Text tiers 0-2 (docs/method.md, "Conflict data"), shared with the attribute task."""
    if text_tier == "original":
        return ""
    if text_tier == "direct":
        return f"The {shape} is {color}."
    if text_tier == "indirect_simple":
        return f"The {shape}'s color is the same as {with_article(neutral)}. The {neutral} is {color}."
    if text_tier == "indirect_knowledge":
        return f"The {shape}'s color is the same as {with_article(knowledge)}."
    raise ValueError(f"unknown text tier {text_tier!r}; use one of {TEXT_TIERS}")


def tier_rows(task: str, text_tiers: tuple[str, ...], image_id: str, group: int, d_v: int, target: str,
              absent: str, irrelevant: str, color_visual: str, color_text: str, knowledge_object: str,
              context_of) -> list[dict]:
    """One row per text tier and control for a (group, visual tier) image; shared by both tasks.

    `context_of(tier, asked)` writes the text of the non-control tiers; `absent` is never drawn
    (image-irrelevant control) and `irrelevant` is drawn but not asked (text-irrelevant control).
    """
    kobj = knowledge_base()[knowledge_object]
    rows = []
    for tier in text_tiers + CONTROLS:
        asked, answer_visual, answer_text = target, color_visual, color_text
        if tier == "text_irrelevant":
            context = f"The {irrelevant} is {color_text}."
        elif tier == "image_irrelevant":
            asked, answer_visual = absent, None
            context = f"The {absent} is {color_text}."
        else:
            context = context_of(tier, asked)
        if tier == "original":
            answer_text = None
        knowledge = tier == "indirect_knowledge"
        rows.append({
            "id": f"{image_id}-{tier}", "image_id": image_id, "group": group, "task": task,
            "question": f"{question(asked)} {INSTRUCTION}", "text_context": context,
            "answer_visual": answer_visual, "answer_text": answer_text,
            "d_v": d_v, "d_t": D_T[tier], "text_tier": tier,
            "condition": tier if tier in CONTROLS else ("no_conflict" if tier == "original" else "conflict"),
            "target": asked,
            "knowledge_object": knowledge_object if knowledge else None,
            "text_ambiguity": kobj.ambiguity if knowledge else 0.0,
        })
    return rows


def color_rows(g: ColorGroup, d_v: int, image_id: str) -> list[dict]:
    return tier_rows("colors", TEXT_TIERS, image_id, g.group, d_v, g.shape, g.absent_shape, g.other_shape,
                     g.color_visual, g.color_text, g.knowledge_object,
                     lambda tier, asked: text_context(tier, asked, g.color_text, g.neutral_object, g.knowledge_object))


def render_color_group(args: tuple[int, int, int]) -> tuple[list[dict], list[dict]]:
    """All images and rows of one group (a picklable unit of work for a process pool)."""
    group, seed, canvas = args
    g = sample_group(group, seed)
    images, rows = [], []
    for tier in COLOR_TIERS:
        scene = render_color_scene(g, tier, canvas, seed)
        image_id = f"c{group:05d}-v{tier.d_v:02d}"
        images.append({"image_id": image_id, "image": scene.image, "target_box": list(scene.target_box),
                       **scene.measured(), "readers": {"d_v": tier.d_v, **label_map_readers(scene.labels, scene.colors)}})
        rows += color_rows(g, tier.d_v, image_id)
    return images, rows
