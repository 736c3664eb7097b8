"""Shape pre-training of the organism's vision tower (phase 0 of `align.organism build`).

A tiny ViT trained from scratch only through the colour question never learns *which* object
is asked: given "What color is the star?" on a two-object scene it settles on "one of the
colours present" (loss ~ln 2), and on a fixed image set it memorizes instead. Measured: a
4-layer 128-wide tower reached chance (0.12) shape accuracy on held-out single objects after
1,000 steps of "What shape is the {colour} object?", even with fresh scenes every step.
Dense supervision gives the tower shape: every patch token learns the shape and the colour of
the object it covers (linear heads, discarded afterwards); shape reached 90 % accuracy on object
patches in 1,200 steps. On its own it is not enough: the decoder still did not bind the asked
shape to its colour in 800-1,200 steps. With the tower frozen, fresh scenes and `grounding_loss`
it does: image-only accuracy on tiers 1-4 went .80/.77/.63/.65 with an 800-step constant-lr
phase 0 (73 % patch accuracy) and .98/.99/.96/.95 with this one (full builds). The colour head
matters: trained on shape alone the tower drops colour, and a decoder on a frozen shape-only
tower cannot answer the colour question at all (measured).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from data_gen.colors import BACKGROUND, INSTRUCTION, question, render_color_scene, sample_group
from data_gen.palette import COLORS, SHAPES
from data_gen.raster import LabelMap, patch_owners, polygon_mask
from data_gen.tiers import COLOR_TIERS

SHAPE_BACKGROUND = len(SHAPES)  # the heads' extra class for patches no object covers
COLOR_BACKGROUND = len(COLORS)
LARGE_TARGET_TIERS = 5  # visual tiers 0-4: large targets, no occlusion
MIN_COVER = 1 / 8  # a patch is labelled with an object that covers at least this share of it


def labelled_scene(rng: np.random.Generator, canvas: int, patch: int, max_objects: int = 5,
                   all_tiers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A scene of 1..max_objects non-overlapping shapes at the large-target sizes (tiers 0-4), or with
    `all_tiers` at the sizes and (up to) the crowding of a random visual tier.

    Returns the RGB image and, per patch (row-major, as the ViT orders them), the shape index
    and the colour index of the object covering most of it, or the background classes.
    """
    lm, shapes, colors = LabelMap(canvas, canvas), [], []
    tier = COLOR_TIERS[int(rng.integers(len(COLOR_TIERS)))] if all_tiers else COLOR_TIERS[0]
    lo, hi = tier.size_px(canvas)
    max_objects = max(max_objects, tier.distractors + 1) if all_tiers else max_objects
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(30):  # rejection-sample a free spot; a crowded canvas just gets fewer objects
            shape = int(rng.integers(len(SHAPES)))
            crop = polygon_mask(SHAPES[shape], rng.uniform(lo, hi), rng.uniform(-15, 15))
            h, w = crop.shape
            y, x = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
            if (lm.top[y:y + h, x:x + w][crop] < 0).all():
                lm.add(crop, y, x, on_top=True)
                shapes.append(shape)
                colors.append(int(rng.integers(len(COLORS))))
                break
    palette = np.array([*COLORS.values(), BACKGROUND], dtype=np.uint8)
    image = palette[np.array(colors + [len(COLORS)])[lm.top]]  # owner -1 picks the background row
    owners = patch_owners(lm.top, patch)
    counts = (owners[:, :, None] == np.arange(len(shapes))).sum(1)  # (patches, objects): pixels each covers
    covered = counts.max(1) >= MIN_COVER * patch * patch
    main = counts.argmax(1)
    shape_labels = np.where(covered, np.array(shapes)[main], SHAPE_BACKGROUND)
    color_labels = np.where(covered, np.array(colors)[main], COLOR_BACKGROUND)
    return image, shape_labels, color_labels


def color_presence(images: np.ndarray, patch: int) -> np.ndarray:
    """(batch, patches, colours), row-major patches: 1 where the patch shows any pixel of that palette colour."""
    b, h, w, _ = images.shape
    grid = h // patch
    palette = np.array(list(COLORS.values()), dtype=np.uint8)
    match = (images[:, :grid * patch, :grid * patch, None, :] == palette).all(-1)  # (b, H, W, colours)
    return match.reshape(b, grid, patch, grid, patch, -1).any((2, 4)).reshape(b, grid * grid, -1).astype(np.float32)


def pretrain_shapes(tower: torch.nn.Module, image_processor, steps: int, *, canvas: int, patch: int,
                    feature_layer: int = -2, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                    background_weight: float = 0.1, all_tiers: bool = False, presence: bool = False,
                    progress=None) -> list[float]:
    """Train `tower` (a CLIP vision model) to put each patch's object shape and colour in its token.

    Reads the same hidden layer LLaVA feeds the projector (`vision_feature_layer`), and
    normalizes pixels exactly as the processor does. With `presence` the colour head learns every colour
    a patch shows (multi-label), not only its main object's, so a target smaller than a patch keeps its
    colour in the token. Returns the loss per step.
    """
    hidden = tower.config.hidden_size
    heads = torch.nn.ModuleList([torch.nn.Linear(hidden, len(SHAPES) + 1),
                                 torch.nn.Linear(hidden, len(COLORS) + (0 if presence else 1))])
    params = [*tower.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    # warm-up, then cosine to 5 %: the decay is worth as much as half again as many steps (measured)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 100) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))))
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    rng = np.random.default_rng([seed, 11])
    losses = []
    tower.train()
    for _ in (progress or range)(steps):
        images, shapes, colors = zip(*(labelled_scene(rng, canvas, patch, all_tiers=all_tiers) for _ in range(batch_size)))
        pixels = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255 - mean) / std
        tokens = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[feature_layer][:, 1:]  # no CLS
        shape_target = torch.from_numpy(np.stack(shapes)).flatten()
        # background patches are most patches and trivially easy: down-weight them
        weight = torch.where(shape_target == SHAPE_BACKGROUND, background_weight, 1.0)
        loss = 0.0
        for head, target in zip(heads, (shape_target, torch.from_numpy(np.stack(colors)).flatten())):
            if presence and head is heads[1]:  # every colour shown, one binary decision each
                shown = torch.from_numpy(color_presence(np.stack(images), patch)).flatten(0, 1)
                per_patch = torch.nn.functional.binary_cross_entropy_with_logits(
                    head(tokens).flatten(0, 1), shown, reduction="none").sum(-1)
            else:
                per_patch = torch.nn.functional.cross_entropy(head(tokens).flatten(0, 1), target, reduction="none")
            loss = loss + (per_patch * weight).sum() / weight.sum()
        losses.append(optimizer_step(loss, opt, sched, params))
    return losses


def optimizer_step(loss: torch.Tensor, opt, sched, params: list, max_norm: float = 1.0) -> float:
    """One clipped AdamW step, as every organism phase takes it; returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    sched.step()
    return loss.item()


def grounded_scenes(rng: np.random.Generator, n: int, canvas: int, patch: int, seed: int,
                    tiers: int = LARGE_TARGET_TIERS, shared_colors: bool = False) -> list[tuple]:
    """Freshly rendered colour scenes of visual tiers 0..tiers-1 (default: the large targets) with the asked
    object's patches.

    With `shared_colors` distractors take any of the six colours (the datasets' palette leaves out the text's
    colour, which these scenes have none of); either way the target's colour is a uniform pick among the colours
    shown (docs/method.md, "Conflict data"), so only binding answers.

    Groups come from `seed`'s stream, which the datasets (their own seed) never draw, so no
    held-out scene is seen. Each item: (image, "", question, answer colour, target-patch mask).
    A fixed image set is memorized long before binding is learnt; fresh scenes cannot be.
    """
    items = []
    for _ in range(n):
        group = sample_group(int(rng.integers(2 ** 31)), seed)
        if shared_colors:
            group = dataclasses.replace(group, distractor_colors=tuple(COLORS))
        tier = COLOR_TIERS[int(rng.integers(tiers))]
        scene = render_color_scene(group, tier, canvas, seed)
        target_share = (patch_owners(scene.labels.top, patch) == 0).mean(-1)  # object 0 is the target
        mask = target_share >= MIN_COVER
        mask[target_share.argmax()] = True  # a small or occluded target may cover no patch by MIN_COVER
        items.append((scene.image, "", f"{question(group.shape)} {INSTRUCTION}", group.color_visual,
                      mask.astype(np.float32)))
    return items


def box_patches(box: list[int], canvas: int, patch: int) -> np.ndarray:
    """Patches (row-major) the target's bounding box covers by at least MIN_COVER, and always the one it covers most.

    Grounding labels for stored dataset images, which keep the target's box but not its mask."""
    x0, y0, x1, y1 = box
    edges = np.arange(0, canvas + 1, patch)
    cover_x = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None)
    cover_y = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None)
    share = np.outer(cover_y, cover_x).ravel() / patch ** 2
    mask = share >= MIN_COVER
    mask[share.argmax()] = True
    return mask.astype(np.float32)


def grounding_loss(hidden: torch.Tensor, input_ids: torch.Tensor, image_token_id: int, target_patches: torch.Tensor,
                   head: torch.nn.Module) -> torch.Tensor:
    """Binary cross-entropy of "this image token is the asked object", read from a decoder layer.

    Direct supervision of the first half of binding (which patches the question names); the
    colour answer then only has to read those patches. `hidden` is one decoder layer's output.
    """
    tokens = hidden[input_ids == image_token_id].view(len(target_patches), -1, hidden.shape[-1])
    return torch.nn.functional.binary_cross_entropy_with_logits(head(tokens).squeeze(-1), target_patches)


def attention_grounding_loss(attention: torch.Tensor, input_ids: torch.Tensor, image_token_id: int,
                             target_patches: torch.Tensor, position: int = -1) -> torch.Tensor:
    """-ln of the share of the image attention that lands on the asked object, at one query position.

    For templates with the image first, where image tokens cannot see the question: the answer position has to
    find the asked object itself. `attention` is one decoder layer's weights (batch, heads, queries, keys); only the
    split *within* the image is supervised, so how much the answer reads the image against the text stays free."""
    weights = attention[:, :, position, :].float().mean(1)  # (batch, keys)
    image = weights[input_ids == image_token_id].view(len(target_patches), -1)
    share = (image * target_patches).sum(-1) / image.sum(-1).clamp_min(1e-9)
    return -torch.log(share.clamp_min(1e-6)).mean()
