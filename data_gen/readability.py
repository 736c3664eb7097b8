"""What each visual tier leaves readable to a patch-based vision tower, measured on the rendered scenes, no model.

Per tier, for a canvas and a patch size:

- `target_patch_share`: the largest share of one patch the asked object's visible pixels fill (mean over
  groups). Binding, "which token is the asked shape", reads this: a target that owns most of a token can be found
  by its shape; one that owns an eighth of a token shares it with its occluders.
- the blind readers (data_gen/blind_readers.py) beside `chance`: what answering without the question would score.

A model's image-only accuracy by tier is bounded by what binding's signal allows; where it falls, a model that
cannot find the shape should answer at the blind readers' chance, no better and no worse.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .blind_readers import label_map_readers
from .colors import render_color_scene, sample_group
from .raster import patch_owners
from .tiers import COLOR_TIERS


def target_patch_share(owners: np.ndarray) -> float:
    """The largest share of one patch the target (object 0) fills; `owners` is `patch_owners` of a label map."""
    return float((owners == 0).mean(-1).max())


def tier_readability(image_size: int, patch: int, groups: int = 100, seed: int = 0) -> pd.DataFrame:
    """One row per visual tier: the target's patch share and the blind readers, averaged over `groups` colour groups."""
    if image_size % patch:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch ({patch})")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    sampled = [sample_group(g, seed) for g in range(groups)]  # each tier renders the same groups
    rows = []
    for tier in tqdm(COLOR_TIERS, desc="rendering tiers", unit="tier"):
        for group in sampled:
            scene = render_color_scene(group, tier, image_size, seed)
            rows.append({"d_v": tier.d_v, "target_patch_share": target_patch_share(patch_owners(scene.labels.top, patch)),
                         **label_map_readers(scene.labels, scene.colors)})
    return pd.DataFrame(rows).groupby("d_v").mean().reset_index()
