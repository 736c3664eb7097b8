"""Finding and calibrating a steering vector (docs/method.md, "Steering"): the training-free methods' pieces.

The preference direction is the difference of mean answer-position hidden states between the base's
text-following and vision-following conflicts of the training groups, at the decoder layer where that difference
best separates held-out groups. Its strength alpha is calibrated on the calibration groups until the realized
balance point reaches b*.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eval.scoring import hidden_at_answer


@torch.no_grad()
def answer_hidden_states(vlm, data, rows: pd.DataFrame, batch_size: int = 32) -> np.ndarray:
    """(rows, layers, hidden): each decoder layer's output at the answer position of each row's image + text
    prompt."""
    out = []
    keys = list(zip(rows.image_id, rows.text_context, rows.question))
    for i in tqdm(range(0, len(keys), batch_size), desc="hidden states", unit="batch"):
        chunk = keys[i:i + batch_size]
        enc = vlm.encode([vlm.prompt(q, ctx) for _, ctx, q in chunk], [data.image(img) for img, _, _ in chunk])
        with hidden_at_answer(vlm, lens=True) as captured:
            vlm.model(**enc, logits_to_keep=1)
        out.append(torch.stack(captured).float().permute(1, 0, 2).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(vlm.layers), 0))


def separation_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties halved (the Mann-Whitney AUC)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def preference_direction(hidden: np.ndarray, follows_text, groups, layer: int | None = None) -> tuple[np.ndarray, int, list[float]]:
    """(direction, layer, held-out AUC per layer): mean(text-following) - mean(vision-following) at `layer`, or at
    the layer whose direction, fitted on one half of the groups, best separates the other half (both halves
    averaged). The last layer is never chosen by default: its output goes straight to the output head, so a shift
    there is one fixed logit bias for every input, not a preference the later layers act on."""
    follows_text = np.asarray(follows_text, dtype=bool)
    if follows_text.all() or not follows_text.any():
        side = "text" if follows_text.all() else "image"
        raise ValueError(f"every one of the {len(follows_text)} training conflicts follows the {side}: a preference "
                         f"direction needs both kinds; use more training groups or harder tiers")
    halves = pd.factorize(np.asarray(groups))[0] % 2 == 0
    aucs = []
    for k in range(hidden.shape[1]):
        fold = []
        for fit in (halves, ~halves):
            ht, yt = hidden[fit, k], follows_text[fit]
            if yt.all() or not yt.any() or fit.all():
                continue
            d = ht[yt].mean(0) - ht[~yt].mean(0)
            fold.append(separation_auc(hidden[~fit, k] @ d, follows_text[~fit]))
        aucs.append(float(np.nanmean(fold)) if fold else float("nan"))
    candidates = aucs[:-1] if len(aucs) > 1 else aucs
    chosen = int(np.nanargmax(candidates)) if layer is None else layer
    if not 0 <= chosen < hidden.shape[1]:
        raise ValueError(f"steer_layer {layer} does not exist: the model has {hidden.shape[1]} decoder layers")
    h = hidden[:, chosen]
    return h[follows_text].mean(0) - h[~follows_text].mean(0), chosen, aucs


def next_strength(target: float, tried: list[float], realized: list[float | None], limit: float) -> float:
    """The next alpha: a secant step through the last two measured (alpha, balance point) pairs, at most four times
    the last alpha; where the balance point did not move the right way, the last alpha doubled; where the last alpha
    left no curve (None: the model stopped answering either modality), halfway back to the last one that did. Kept
    in [-limit, limit]."""
    a = tried[-1]
    if realized[-1] is None:
        good = [t for t, r in zip(tried, realized) if r is not None]
        return float((good[-1] + a) / 2) if good else a / 2
    measured = [(t, r) for t, r in zip(tried, realized) if r is not None]
    step = None
    if len(measured) >= 2 and abs(measured[-1][0] - measured[-2][0]) > 1e-9:
        slope = (measured[-1][1] - measured[-2][1]) / (measured[-1][0] - measured[-2][0])
        if slope > 1e-3:
            step = (target - realized[-1]) / slope
    nxt = a + step if step is not None else 2 * a
    if abs(nxt) > 4 * abs(a) > 0:
        nxt = 4 * a if np.sign(nxt) == np.sign(a) else nxt
    return float(np.clip(nxt, -limit, limit))
