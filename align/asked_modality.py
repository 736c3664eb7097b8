"""Asked-modality alignment examples and their collator (docs/method.md, "Audio-visual conflicts").

Every AV row whose asked modality is present becomes one example whose answer is that modality's class: the
frames' class when the question asks about the visual content, the sound's when it asks about the audio, whatever
the other modality or a caption says. `SoftTargetTrainer` trains them with its answer term (-ln q(answer)).
"""
from __future__ import annotations

import pandas as pd
import torch

from data_gen.av import AVData

from .training import target_tensors


def asked_modality_examples(rows: pd.DataFrame, vlm, conditions: list[str]) -> tuple[list[dict], dict]:
    """One example per row of `conditions` with a target; stats count them by condition."""
    trained = rows[rows.condition.isin(conditions) & (rows.target != "")]
    if trained.empty:
        raise ValueError(f"no rows of conditions {conditions} with a target in the training split; generate more "
                         f"groups or train on other conditions")
    examples = [{"clip_id": r.clip_id, "question": r.question, "caption": r.caption, "appendix": r.appendix,
                 "answer": r.target, "answer_token": vlm.first_token(r.target), "token_text": 0, "token_visual": 0,
                 "p_text": 0.0, "weight": 1.0, "is_conflict": 0.0} for r in trained.itertuples()]
    return examples, {"examples": len(examples), **trained.condition.value_counts().sort_index().to_dict()}


class AVCollator:
    """Each example's clip (frames, and its sound where it has one) and prompt through the processor, plus the
    target tensors `SoftTargetTrainer` reads."""

    def __init__(self, vlm, data: AVData, dtype: torch.dtype = torch.float32):
        self.vlm, self.data, self.dtype = vlm, data, dtype

    def __call__(self, examples: list[dict]) -> dict:
        clips = [self.data.clip(e["clip_id"]) for e in examples]
        prompts = [self.vlm.av_prompt(e["question"], len(frames), audio is not None, e["caption"], e["appendix"])
                   for e, (frames, audio) in zip(examples, clips)]
        batch = self.vlm.av_inputs(prompts, [f for f, _ in clips], [a for _, a in clips], self.dtype)
        return {**batch, **target_tensors(examples)}
