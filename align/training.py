"""Training pieces: examples built from the base model's scores, their collator, and the trainer.

`SoftTargetTrainer` is the one class of the method: a `transformers.Trainer` whose loss is the
soft-target cross-entropy of DESIGN.md section 6 on the answer token (p* on Y_t's first token,
1 - p* on Y_v's), weighted toward boundary cases, plus a retention term on unimodal samples.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from transformers import Trainer

from eval.analysis import AnalysisConfig, conflict_samples

from .targets import boundary_weights, sample_hard_targets, target_text_probability

TARGET_KEYS = ("token_text", "token_visual", "p_text", "weight", "is_conflict", "answer_token")


def build_examples(train_table: pd.DataFrame, target: float, current: float, tau: float,
                   boundary_sigma: float, boundary_floor: float, retention_share: float, loss_type: str,
                   seed: int = 0) -> tuple[list[dict], dict]:
    """Conflict examples with targets p* and weights, plus retention examples (unimodal answers)."""
    conflicts, counts = conflict_samples(train_table, AnalysisConfig())
    if conflicts.empty:
        hint = (" Their answers share first tokens with each other (answer_collision): use answers whose first "
                "tokens differ." if counts.get("answer_collision") else "")
        raise ValueError(f"no usable conflict samples in the training groups ({counts}): the base model must answer "
                         f"both unimodal questions right on some conflicts; use more groups or easier tiers.{hint}")
    d_rel = conflicts.d_rel_entropy.to_numpy()
    p_text = target_text_probability(d_rel, target, tau)
    if loss_type == "hard":
        p_text = sample_hard_targets(p_text, seed)
    weights = boundary_weights(d_rel, current, target, boundary_sigma, boundary_floor)
    examples = [
        {"question": r.question, "context": r.text_context, "image_id": r.image_id,
         "token_text": int(r.token_text), "token_visual": int(r.token_visual), "p_text": float(p), "weight": float(w),
         "is_conflict": 1.0, "answer_token": int(r.token_text)}
        for r, p, w in zip(conflicts.itertuples(), p_text, weights)]
    rng = np.random.default_rng(seed)
    image_only = train_table[train_table.top1_v.notna() & train_table.token_visual.notna()].drop_duplicates(["image_id", "question"])
    text_only = train_table[(train_table.condition == "conflict") & train_table.token_text.notna()].drop_duplicates(["text_context", "question"])
    n_keep = int(round(len(examples) * retention_share / max(1e-9, 1 - retention_share)))
    retention = [
        {"question": r.question, "context": "", "image_id": r.image_id, "answer_token": int(r.token_visual)}
        for r in image_only.itertuples()] + [
        {"question": r.question, "context": r.text_context, "image_id": None, "answer_token": int(r.token_text)}
        for r in text_only.itertuples()]
    retention = [retention[i] for i in rng.permutation(len(retention))[:n_keep]]
    for e in retention:
        e.update(token_text=0, token_visual=0, p_text=0.0, weight=1.0, is_conflict=0.0)
    stats = {**counts, "conflict_examples": len(examples), "retention_examples": len(retention),
             "mean_p_text": float(p_text.mean()), "boundary_share": float((weights > 0.9).mean())}
    return examples + retention, stats


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


class AlignmentCollator:
    """Prompts through the processor's chat template (left padding) + the target tensors."""

    def __init__(self, vlm, data, dtype: torch.dtype = torch.float32):
        self.vlm, self.data, self.dtype = vlm, data, dtype

    def __call__(self, examples: list[dict]) -> dict:
        vlm = self.vlm
        prompts = [vlm.prompt(e["question"], e["context"], with_image=e["image_id"] is not None) for e in examples]
        images = [self.data.image(e["image_id"]) for e in examples if e["image_id"] is not None]
        kwargs = dict(text=prompts, padding=True, return_tensors="pt")
        if images:
            kwargs["images"] = images
        batch = dict(vlm.processor(**kwargs))
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        for key in TARGET_KEYS:
            kind = torch.long if key in ("token_text", "token_visual", "answer_token") else torch.float32
            batch[key] = torch.tensor([e[key] for e in examples], dtype=kind)
        return batch


def soft_target_loss(logits: torch.Tensor, token_text, token_visual, p_text, weight, is_conflict, answer_token,
                     retention_weight: float = 1.0) -> torch.Tensor:
    """Per row: conflicts -w [p* ln q(Y_t) + (1 - p*) ln q(Y_v)]; retention -ln q(answer)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    take = lambda t: logp.gather(1, t[:, None])[:, 0]
    conflict = -weight * (p_text * take(token_text) + (1 - p_text) * take(token_visual))
    retention = -retention_weight * take(answer_token)
    return torch.where(is_conflict > 0, conflict, retention).mean()


class SoftTargetTrainer(Trainer):
    def __init__(self, *args, retention_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.retention_weight = retention_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = {k: inputs.pop(k) for k in TARGET_KEYS}
        outputs = model(**inputs, logits_to_keep=1)
        loss = soft_target_loss(outputs.logits[:, -1], **targets, retention_weight=self.retention_weight)
        return (loss, outputs) if return_outputs else loss
