"""Cross-modal attention imbalance (docs/method.md, "Conflict recognition and attention imbalance").

For a decoder layer, heads h and the answer position's query q, modality m's contribution to the attention
output is u_m = W_O,h sum_{j in m} alpha[h, q, j] v[h, j] over m's key tokens, U_m = mean over h of ||u_m||,
and the imbalance R = U_vision / (U_vision + U_text): 0.5 is balance, near 0 the image is ignored.
`modality_contributions` is the formula on plain tensors; `attention_by_modality` reads alpha and v off a
model's forward (eager attention, hooks on each decoder layer's attention and value projection).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

MODALITIES = ("vision", "text", "instruction")  # image tokens, the evidence text, everything else attended


def modality_contributions(weights: torch.Tensor, values: torch.Tensor, w_o: torch.Tensor,
                           masks: torch.Tensor) -> torch.Tensor:
    """U_m: (batch, modalities) from one layer.

    weights: (batch, heads, keys) attention probabilities of the answer query; values: (batch, heads, keys, d)
    per-head value vectors; w_o: (hidden, heads * d) the output projection; masks: (modalities, batch, keys)."""
    heads, d = values.shape[1], values.shape[-1]
    per_modality = torch.einsum("bhk,mbk,bhkd->mbhd", weights.float(), masks.float(), values.float())
    u = torch.einsum("mbhd,ohd->mbho", per_modality, w_o.float().view(-1, heads, d))
    return u.norm(dim=-1).mean(-1).T


def imbalance_ratio(u_vision, u_text) -> np.ndarray:
    """R = U_vision / (U_vision + U_text), NaN where both are zero."""
    u_vision, u_text = np.asarray(u_vision, dtype=float), np.asarray(u_text, dtype=float)
    total = u_vision + u_text
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, u_vision / total, np.nan)


def context_masks(vlm, batch: dict, contexts: list[str]) -> torch.Tensor:
    """(modalities, batch, keys) boolean masks: image tokens, the tokens of each row's context, the rest attended."""
    ids, attended = batch["input_ids"], batch["attention_mask"].bool()
    vision = ids == vlm.image_token_id
    text = torch.zeros_like(vision)
    for row, context in enumerate(contexts):
        if context:
            start, end = find_span(vlm.tokenizer, ids[row].tolist(), context)
            text[row, start:end] = True
    return torch.stack([vision, text, attended & ~vision & ~text])


def find_span(tokenizer, ids: list[int], text: str) -> tuple[int, int]:
    """[start, end) of `text`'s tokens in `ids` (its last occurrence). A subword tokenizer may merge the first or
    last token with its neighbour, so the inner tokens are matched and the span widened by one on each side."""
    for variant in (text, " " + text, "\n" + text):
        sub = tokenizer(variant, add_special_tokens=False)["input_ids"]
        for core, pad in ((sub, 0), (sub[1:-1], 1)):
            if not core:
                continue
            for start in range(len(ids) - len(core), -1, -1):
                if ids[start:start + len(core)] == core:
                    return max(0, start - pad), min(len(ids), start + len(core) + pad)
    raise ValueError(f"the context {text!r} is not found in the prompt's tokens; the chat template changed it")


@contextmanager
def eager_attention(model: torch.nn.Module):
    """Attention probabilities are only materialised by the eager implementation."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


def capture_attention(vlm, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per decoder layer, from one forward with eager attention: the answer query's attention weights
    (batch, heads, keys), the per-head values (batch, heads, keys, d) and the output projection W_O."""
    captured = [{} for _ in vlm.attention_modules]
    handles = []
    for store, attention in zip(captured, vlm.attention_modules):
        handles.append(attention.register_forward_hook(
            lambda _m, _a, out, store=store: store.__setitem__("weights", out[1][:, :, -1])))
        handles.append(attention.v_proj.register_forward_hook(
            lambda _m, _a, out, store=store: store.__setitem__("values", out)))
    try:
        with eager_attention(vlm.model):
            vlm.model(**batch, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for store, attention in zip(captured, vlm.attention_modules):
        weights = store["weights"]
        b, keys = weights.shape[0], weights.shape[-1]
        values = store["values"].view(b, keys, -1, attention.head_dim).transpose(1, 2)  # (b, kv heads, keys, d)
        values = values.repeat_interleave(weights.shape[1] // values.shape[1], dim=1)  # grouped-query attention
        layers.append((weights, values, attention.o_proj.weight))
    return layers


@torch.no_grad()
def attention_by_modality(vlm, batch: dict, contexts: list[str]) -> np.ndarray:
    """U_m per row and decoder layer for the answer position of encoded prompts (`vlm.encode`), each holding its
    context: (batch, layers, modalities)."""
    masks = context_masks(vlm, batch, contexts)
    layers = [modality_contributions(w, v, w_o, masks) for w, v, w_o in capture_attention(vlm, batch)]
    return torch.stack(layers, 1).cpu().numpy()
