"""What each visual tier leaves readable to a patch-based vision tower, measured on the rendered scenes, no model.

Two signals per tier, for a canvas and a patch size:

- `target_patch_share`: the largest share of one patch the asked object's visible pixels fill (mean over
  groups). Binding, "which token is the asked shape", reads this: a target that owns most of a token can be found
  by its shape; one that owns an eighth of a token shares it with its occluders.
- `rarest_color_accuracy`: the accuracy of a reader that ignores the question and answers the colour shown in the
  fewest patches (ties split evenly). The datasets keep both answer colours off the distractors (docs/method.md),
  so the target's colour is the one drawn once: in a crowded scene it is the rarest, and counting colours answers
  without finding the shape.

A model's image-only accuracy by tier is bounded by what these signals allow; where binding's signal falls in one
step and counting's rises, a model can show a cliff or an inverted ladder that no training fixes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .colors import render_color_scene, sample_group
from .raster import patch_owners
from .tiers import COLOR_TIERS


def scene_readability(owners: np.ndarray, colors: list[str]) -> tuple[float, float]:
    """(target's largest share of one patch, the rarest-colour reader's expected accuracy) for one scene.

    `owners` is `patch_owners` of its label map (object 0 the target, -1 the background); `colors` the objects'
    colours in the same order."""
    target_share = float((owners == 0).mean(-1).max())
    shown = [set(np.unique(p[p >= 0]).tolist()) for p in owners]  # objects visible in each patch
    patches_by_color: dict[str, int] = {}
    for objects in shown:
        for color in {colors[k] for k in objects}:
            patches_by_color[color] = patches_by_color.get(color, 0) + 1
    fewest = min(patches_by_color.values())
    rarest = [c for c, n in patches_by_color.items() if n == fewest]
    return target_share, (colors[0] in rarest) / len(rarest)


def tier_readability(image_size: int, patch: int, groups: int = 100, seed: int = 0) -> pd.DataFrame:
    """One row per visual tier: the two signals (module docstring) averaged over `groups` colour groups."""
    if image_size % patch:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch ({patch})")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    sampled = [sample_group(g, seed) for g in range(groups)]  # each tier renders the same groups
    rows = []
    for tier in tqdm(COLOR_TIERS, desc="rendering tiers", unit="tier"):  # ~3 s a tier at 64 px, 200 groups
        measured = []
        for group in sampled:
            scene = render_color_scene(group, tier, image_size, seed)
            measured.append(scene_readability(patch_owners(scene.labels.top, patch), scene.colors))
        share, rarest = np.mean(measured, axis=0)
        rows.append({"d_v": tier.d_v, "target_patch_share": float(share), "rarest_color_accuracy": float(rarest)})
    return pd.DataFrame(rows)
