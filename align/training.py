"""Training pieces: examples built from the base model's scores, their collator, and the trainer.

`SoftTargetTrainer` is the one class of the method: a `transformers.Trainer` whose loss is the
soft-target cross-entropy of docs/method.md ("Alignment") on the answer token (p* on Y_t's first token,
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
RETENTION_MODES = ("distill", "answer")


def build_examples(train_table: pd.DataFrame, target: float, current: float, tau: float,
                   boundary_sigma: float, boundary_floor: float, retention_share: float, hard: bool = False,
                   seed: int = 0, analysis: AnalysisConfig | None = None, blind: bool = False) -> tuple[list[dict], dict]:
    """Conflict examples with targets p* and weights, plus retention examples (unimodal answers); the conflicts
    are those the analysis reads (`analysis`: by default, both unimodal answers right). `hard`: each target is an
    answer drawn from p* (0 or 1), for methods that train answers, not distributions. `blind`: p* is replaced by
    its mean over the conflicts, the one share of text labels that uncertainty-blind fine-tuning draws."""
    analysis = analysis or AnalysisConfig()
    conflicts, counts = conflict_samples(train_table, analysis)
    if "first_token_shared" in conflicts:  # the loss acts on first tokens: answers sharing one give it no signal
        counts["first_token_shared"] = int(conflicts.first_token_shared.sum())
        conflicts = conflicts[~conflicts.first_token_shared.astype(bool)]
    if conflicts.empty:
        hint = (" Their answers share first tokens (first_token_shared) or whole tokens (answer_collision): the "
                "loss needs answers whose first tokens differ."
                if counts.get("answer_collision") or counts.get("first_token_shared") else "")
        need = (" the base model must answer both unimodal questions right on some conflicts;"
                if analysis.unimodal_correct else "")
        raise ValueError(f"no usable conflict samples in the training groups ({counts}):{need} use more groups or "
                         f"easier tiers.{hint}")
    d_rel = conflicts.d_rel_entropy.to_numpy()
    p_text = target_text_probability(d_rel, target, tau)
    if blind:
        p_text = np.full_like(p_text, p_text.mean())
    if hard:
        p_text = sample_hard_targets(p_text, seed)
    weights = boundary_weights(d_rel, current, target, boundary_sigma, boundary_floor)
    examples = [
        {"question": r.question, "context": r.text_context, "image_id": r.image_id,
         "token_text": int(r.token_text), "token_visual": int(r.token_visual), "p_text": float(p), "weight": float(w),
         "is_conflict": 1.0, "answer_token": int(r.token_text), "answer": r.answer_text, "other": r.answer_visual}
        for r, p, w in zip(conflicts.itertuples(), p_text, weights)]
    retention = retention_examples(train_table, len(examples), retention_share, seed)
    stats = {**counts, "conflict_examples": len(examples), "retention_examples": len(retention),
             "retention_text_only": sum(e["image_id"] is None for e in retention),
             "mean_p_text": float(p_text.mean()), "boundary_share": float((weights > 0.9).mean())}
    return examples + retention, stats


def retention_examples(train_table: pd.DataFrame, n_trained: int, retention_share: float, seed: int) -> list[dict]:
    """Unimodal answers as `retention_share` of all examples beside `n_trained` others, half image only and half
    text only (the smaller pool repeated): a group has many images but few text contexts, and retention that
    starves text only lets H_t drift, moving the very x-axis (dH_rel) the targets were set on
    (docs/method.md, "Retention")."""
    rng = np.random.default_rng(seed)
    image_only = train_table[train_table.top1_v.notna() & train_table.token_visual.notna()].drop_duplicates(["image_id", "question"])
    text_only = train_table[(train_table.condition == "conflict") & train_table.token_text.notna()].drop_duplicates(["text_context", "question"])
    n_keep = int(round(n_trained * retention_share / max(1e-9, 1 - retention_share)))
    # `other`: the answer the conflicting modality gives; the dpo variant rejects it on unimodal rows
    conflict_text = train_table[train_table.condition == "conflict"].groupby("image_id").answer_text.first()
    pools = [p for p in (
        [{"question": r.question, "context": "", "image_id": r.image_id, "answer_token": int(r.token_visual),
          "answer": r.answer_visual, "other": conflict_text.get(r.image_id)} for r in image_only.itertuples()],
        [{"question": r.question, "context": r.text_context, "image_id": None, "answer_token": int(r.token_text),
          "answer": r.answer_text, "other": r.answer_visual} for r in text_only.itertuples()]) if p]
    retention = []
    for k, pool in enumerate(pools):
        n = n_keep // len(pools) + (k < n_keep % len(pools))
        retention += [dict(pool[i]) for i in np.resize(rng.permutation(len(pool)), n)]  # cycles a small pool
    retention = [retention[i] for i in rng.permutation(len(retention))]
    for e in retention:
        e.update(token_text=0, token_visual=0, p_text=0.0, weight=1.0, is_conflict=0.0)
    return retention


def mixed_examples(recognition_rows: pd.DataFrame, train_table: pd.DataFrame, vlm, retention_share: float,
                   seed: int) -> tuple[list[dict], dict]:
    """Modality-mixed training instances (docs/method.md, "Conflict recognition"): each holds an image and a text
    that must be reconciled, the image_text recognition rows whose image the base model reads right, trained to
    answer whether they contradict each other; the soft loss with p* = 1 on "yes" for contradictions and 0 for
    consistent twins is their cross-entropy. The unimodal recognition rows keep what the model could already
    do, and retention examples keep the colour task's unimodal answers."""
    from data_gen.recognition import ANSWERS
    cross = recognition_rows[recognition_rows.evidence == "image_text"]
    # a contradiction with an image the model cannot read is not there for it to recognise: training on those
    # teaches a guess ("yes" half the time), so only images the base model answers right on their own are used
    seen = train_table.loc[train_table.pred_v.astype(str) == train_table.answer_visual.astype(str), "image_id"]
    perceivable = cross[cross.image_id.isin(set(seen))]
    if perceivable.empty:
        raise ValueError("no image_text recognition rows in the training split whose image the base model reads "
                         "right on its own; generate more groups or easier visual tiers")
    yes, no = vlm.first_token(ANSWERS[True]), vlm.first_token(ANSWERS[False])
    # the unimodal rows keep the recognition the model already has, as retention keeps its answers
    unimodal = recognition_rows[recognition_rows.evidence != "image_text"]
    examples = [
        {"question": r.question, "context": r.text_context, "image_id": None if pd.isna(r.image_id) else r.image_id,
         "token_text": yes, "token_visual": no, "p_text": float(r.contradiction), "weight": 1.0, "is_conflict": 1.0,
         "answer_token": yes if r.contradiction else no, "answer": r.answer, "other": ANSWERS[not r.contradiction]}
        for r in pd.concat([perceivable, unimodal]).itertuples()]
    retention = retention_examples(train_table, len(examples), retention_share, seed)
    stats = {"mixed_examples": len(perceivable), "unimodal_recognition_examples": len(unimodal),
             "unreadable_images_left_out": int(len(cross) - len(perceivable)),
             "contradictions": int(perceivable.contradiction.sum()), "retention_examples": len(retention)}
    return examples + retention, stats


def trl_dataset(examples: list[dict], vlm, data, kind: str):
    """The examples as TRL reads them: prompt-completion rows for `hard` (SFTTrainer), chosen/rejected
    rows for `dpo` (DPOTrainer): on conflicts chosen = the target modality's answer; on unimodal
    (retention) rows chosen = the right answer, rejected = the conflicting modality's answer, which
    keeps DPO from unlearning text-only answers."""
    from datasets import Dataset
    rows = []
    for e in examples:
        conflict = e["is_conflict"] > 0
        if kind == "dpo" and not conflict and not e["other"]:
            continue  # no conflicting answer to reject
        # conflicts: the target modality's answer (`answer` is the text's); unimodal rows: the right answer
        answer, other = (e["other"], e["answer"]) if conflict and e["p_text"] < 0.5 else (e["answer"], e["other"])
        row = {"prompt": vlm.prompt(e["question"], e["context"], with_image=e["image_id"] is not None),
               "images": [data.image(e["image_id"])] if e["image_id"] is not None else []}
        if kind == "hard":
            row["completion"] = answer
        else:
            row["chosen"], row["rejected"] = answer, other
        rows.append(row)
    for answer in {r[k] for r in rows for k in ("completion", "chosen", "rejected") if k in r}:
        _check_completion_token(vlm, answer)
    return Dataset.from_list(rows)


def _check_completion_token(vlm, answer: str) -> None:
    """TRL tokenizes completions on their own; that must give the token the scores are read from."""
    alone = vlm.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not alone or alone[0] != vlm.first_token(answer):
        raise ValueError(f"{vlm.name}: the answer {answer!r} tokenizes on its own as {alone}, but after the prompt its "
                         f"first token is {vlm.first_token(answer)}: TRL would train another token than the one "
                         f"measured; use method: soft for this model")


class ExampleDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


def target_tensors(examples: list[dict]) -> dict[str, torch.Tensor]:
    """The examples' targets as the tensors `SoftTargetTrainer` reads (token ids as long, the rest as float)."""
    kind = lambda key: torch.long if key in ("token_text", "token_visual", "answer_token") else torch.float32
    return {key: torch.tensor([e[key] for e in examples], dtype=kind(key)) for key in TARGET_KEYS}


class AlignmentCollator:
    """Prompts through the processor's chat template (left padding) + the target tensors. With
    `reference_inputs`, the unimodal (retention) rows are also encoded on their own, so the distillation
    reference runs on them only, not on the whole batch."""

    def __init__(self, vlm, data, dtype: torch.dtype = torch.float32, reference_inputs: bool = False):
        self.vlm, self.data, self.dtype, self.reference_inputs = vlm, data, dtype, reference_inputs

    def __call__(self, examples: list[dict]) -> dict:
        vlm = self.vlm
        prompts = [vlm.prompt(e["question"], e["context"], with_image=e["image_id"] is not None) for e in examples]
        images = [self.data.image(e["image_id"]) if e["image_id"] is not None else None for e in examples]
        batch = vlm.inputs(prompts, images, self.dtype)
        batch.update(target_tensors(examples))
        retained = [i for i, e in enumerate(examples) if not e["is_conflict"] > 0]
        if self.reference_inputs and retained:
            batch["reference_inputs"] = vlm.inputs([prompts[i] for i in retained], [images[i] for i in retained],
                                                   self.dtype)
        return batch


def soft_target_loss(logits: torch.Tensor, token_text, token_visual, p_text, weight, is_conflict, answer_token,
                     retention_weight: float = 1.0, reference_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Per row: conflicts -w [p* ln q(Y_t) + (1 - p*) ln q(Y_v)]; retention on unimodal rows.

    Retention is the cross-entropy to the base model's full answer distribution when
    `reference_logits` are given (KL to the base up to a constant): it keeps H_v and H_t, the
    x-axis the targets were set on, where the hard answer -ln q(answer) would sharpen them.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    take = lambda t: logp.gather(1, t[:, None])[:, 0]
    conflict = -weight * (p_text * take(token_text) + (1 - p_text) * take(token_visual))
    if reference_logits is None:
        retention = -take(answer_token)
    else:
        retention = -(torch.softmax(reference_logits.float(), dim=-1) * logp).sum(-1)
    return torch.where(is_conflict > 0, conflict, retention_weight * retention).mean()


class SoftTargetTrainer(Trainer):
    """`retention="distill"` keeps the base model's unimodal answer distributions (the adapter
    switched off gives the reference); `retention="answer"` trains the unimodal answers instead."""

    def __init__(self, *args, retention_weight: float = 1.0, retention: str = "distill", **kwargs):
        super().__init__(*args, **kwargs)
        if retention not in RETENTION_MODES:
            raise ValueError(f"retention must be one of {RETENTION_MODES}, got {retention!r}")
        self.retention_weight, self.retention = retention_weight, retention

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = {k: inputs.pop(k) for k in TARGET_KEYS}
        reference_inputs = inputs.pop("reference_inputs", None)
        outputs = model(**inputs, logits_to_keep=1)
        logits = outputs.logits[:, -1]
        reference = None
        if self.retention == "distill" and reference_inputs is not None:
            # the base's answer distribution on the retention rows only (the collator encoded them apart);
            # conflict rows keep zeros, which the loss never reads
            peft_model = self.accelerator.unwrap_model(model)
            with torch.no_grad(), peft_model.disable_adapter():
                retained = peft_model(**reference_inputs, logits_to_keep=1).logits[:, -1]
            reference = logits.detach().new_zeros(logits.shape)
            reference[targets["is_conflict"] == 0] = retained.to(reference.dtype)
        loss = soft_target_loss(logits, **targets, retention_weight=self.retention_weight,
                                reference_logits=reference)
        return (loss, outputs) if return_outputs else loss
