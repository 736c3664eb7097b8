"""Shared image-prefix reuse (docs/method.md, "Shared image prefixes").

Every prompt about one image (its image-only prompt and its image + text prompts of every text tier) starts with
the same tokens up to and including the image's tokens when the chat template puts the image first, as LLaVA's
does. That prefix, with the vision tower, runs once per image; each prompt's rest (its suffix: context, question,
"ASSISTANT:") runs as a continuation over the prefix's KV cache. Suffixes are left-padded, so the answer position
is the last one for every row, and get explicit position ids, so each token keeps the distance to the image it
has in the whole prompt (padding in the middle of a row is masked and skipped by the positions).

`split_at_image` decides per batch: prompts that differ before their image (text first, as in the organism's
template) return None and take the whole-prompt path, as do families whose attention is not a plain causal
mask over positions (`Family.shares_image_prefix`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImagePrefixBatch:
    """Prompts that share their image prefix: the prefix text (up to and including the image block), the
    image of each prefix row, and per prompt its prefix row and suffix token ids."""
    head: str
    images: list
    rows: list[int]
    suffixes: list[list[int]]


def split_at_image(vlm, prompts: list[str], images: list) -> ImagePrefixBatch | None:
    """The prompts' shared image prefix and their suffixes; None where they cannot share one (a family that
    forbids it, a template that puts text before the image, or not exactly one image per prompt)."""
    if not vlm.family.shares_image_prefix:
        return None
    mark, end = vlm.family.image_placeholder(vlm.processor), vlm.family.image_block_end(vlm.processor)
    if any(p.count(mark) != 1 or end not in p[p.find(mark):] for p in prompts):
        return None
    heads = {p[:p.find(end, p.find(mark)) + len(end)] for p in prompts}
    if len(heads) != 1:
        return None
    # the suffix's tokens as the whole prompt has them: the processor tokenises the text after the image block's
    # last (special) token exactly as after the unexpanded placeholder, so no boundary merges are missed
    mark_id, end_id = (vlm.tokenizer.convert_tokens_to_ids(t) for t in (mark, end))
    ids = vlm.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if any(row.count(mark_id) != 1 or end_id not in row[row.index(mark_id):] for row in ids):
        return None
    suffixes = [row[row.index(end_id, row.index(mark_id)) + 1:] for row in ids]
    if not all(suffixes):
        return None
    order: dict[int, int] = {}
    rows = [order.setdefault(id(image), len(order)) for image in images]
    unique = list({id(image): image for image in images}.values())
    return ImagePrefixBatch(heads.pop(), unique, rows, suffixes)


def encode_prefixes(vlm, split: ImagePrefixBatch) -> dict:
    return vlm.encode([split.head] * len(split.images), split.images)


def suffix_inputs(vlm, split: ImagePrefixBatch, prefix: dict, starts: torch.Tensor) -> dict:
    """Model inputs of the suffixes over the prefixes' cache: left-padded ids, the prefix's attention mask joined
    to the suffix's, and positions that continue each row's prefix (`starts`: the prefix's next position)."""
    device = prefix["input_ids"].device
    length = max(len(s) for s in split.suffixes)
    pad = vlm.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (length - len(s)) + s for s in split.suffixes], device=device)
    mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in split.suffixes], device=device)
    rows = torch.tensor(split.rows, device=device)
    offsets = torch.tensor([length - len(s) for s in split.suffixes], device=device)
    positions = (starts[rows, None] + torch.arange(length, device=device) - offsets[:, None]).clamp(min=0)
    attention = torch.cat([prefix["attention_mask"][rows], mask.to(prefix["attention_mask"].dtype)], dim=1)
    return {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "rows": rows,
            "next_positions": starts[rows] + torch.tensor([len(s) for s in split.suffixes], device=device)}


def prefix_starts(vlm, prefix: dict) -> torch.Tensor:
    """Per prefix row, the position id of the first suffix token: the family's (multimodal RoPE), else the
    padded prefix length (positions count every prefix token, left padding included, as in a whole prompt)."""
    starts = vlm.family.next_positions(vlm.model, prefix)
    if starts is None:
        n, length = prefix["input_ids"].shape
        starts = torch.full((n,), length, device=prefix["input_ids"].device)
    return starts


def matches_whole_prompts(vlm, split: ImagePrefixBatch, prefix: dict, prompts: list[str]) -> bool:
    """Prefix + suffix tokens equal what the processor makes of each whole prompt with its image (checked on one
    batch per run: a processor whose image expansion depends on the text after it would fail here)."""
    for j, prompt in enumerate(prompts):
        row = split.rows[j]
        head = prefix["input_ids"][row][prefix["attention_mask"][row].bool()].tolist()
        whole = vlm.inputs([prompt], [split.images[row]])["input_ids"][0].tolist()
        if head + split.suffixes[j] != whole:
            return False
    return True
