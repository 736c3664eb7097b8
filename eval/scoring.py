"""Scoring engine (docs/method.md): one per-sample table from batched forwards.

For each row and condition (image only "v", text only "t", image + text "m") it records, at
the answer position, the full-vocabulary entropy and the other uncertainty indices, the top-1
token and the first answer tokens' probabilities and logits; for "m" also the logit lens at
that position only. Each distinct (image, question) and (text, question) input is scored once, and
where the chat template puts the image first, each image's shared prefix (vision tower and image tokens)
runs once for all its prompts (eval/prefix.py). Results go to shards written atomically, so a killed run
resumes where it stopped.
"""
from __future__ import annotations

import copy
import json
import logging
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers.modeling_outputs import CausalLMOutputWithPast

from data_gen import ConflictData, samples_frame
from data_gen.files import write_parquet, write_text

from . import uncertainty
from .models.steering import steered
from .stats import relative_uncertainty
from .processes import Processes, processes
from .prefix import (ImagePrefixBatch, encode_prefixes, matches_whole_prompts, prefix_starts,
                     split_at_image, suffix_inputs)
from .sharded import check_same_run

log = logging.getLogger(__name__)
CONDITIONS = ("v", "t", "m")  # image only, text only, image + text
# the forward's KV-cache argument and output: `cache` since transformers 5.25 (`past_key_values` there warns on every
# run), `past_key_values` before
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class ScoreConfig:
    batch_size: int = 32
    shard_inputs: int = 256  # distinct inputs per shard (about): the most a crash can lose
    lens: bool = True
    conditions: tuple[str, ...] = CONDITIONS  # e.g. ("v", "t") when only unimodal scores are needed
    share_prefix: bool = True  # each image's prefix runs once for all its prompts, where the template allows

    def __post_init__(self):
        if self.batch_size < 1 or self.shard_inputs < 1:
            raise ValueError(f"batch size and shard_inputs must be >= 1, got {self.batch_size} and {self.shard_inputs}")
        unknown = set(self.conditions) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"unknown scoring conditions {sorted(unknown)}; use a subset of {CONDITIONS}")


@dataclass
class Candidates:
    """The dataset's answers as the model writes them, and the token sequence each one is scored on.

    An answer's score is the log-probability of its whole token sequence (docs/method.md, "Whole answers").
    Where one answer's tokens begin another's ("sky" / "sky blue"), the shorter one is scored with the end
    of answer appended, so every candidate names a disjoint set of continuations. Answers with identical
    tokens cannot be told apart: `collisions` lists them.
    """
    answers: list[str]
    token_ids: list[tuple[int, ...]]
    end_id: int | None = None

    @classmethod
    def of(cls, vlm, answers) -> "Candidates":
        answers = sorted({a for a in answers if a})
        return cls(answers, [tuple(vlm.answer_ids(a)) for a in answers], vlm.answer_end_id)

    @cached_property
    def first_tokens(self) -> list[int]:
        return [ids[0] for ids in self.token_ids]

    @cached_property
    def distinct_first_tokens(self) -> list[int]:
        return sorted(set(self.first_tokens))

    @cached_property
    def sequences(self) -> list[tuple[int, ...]]:
        """What each candidate is scored on: its tokens, plus the end of answer where it begins a longer one."""
        return [ids + (self.end_id,) if self.end_id is not None and any(_begins(ids, o) for o in self.token_ids)
                else ids for ids in self.token_ids]

    @cached_property
    def continued(self) -> list[int]:
        """Candidates whose score needs tokens after the first (a forward over the answer)."""
        return [i for i, seq in enumerate(self.sequences) if len(seq) > 1]

    def collisions(self) -> dict[tuple[int, ...], list[str]]:
        """Answers that cannot be told apart: identical sequences (or a prefix with no end-of-answer token)."""
        by_sequence: dict[tuple[int, ...], list[str]] = {}
        for a, seq in zip(self.answers, self.sequences):
            by_sequence.setdefault(seq, []).append(a)
        clashes = {seq: a for seq, a in by_sequence.items() if len(a) > 1}
        if self.end_id is None:  # nothing marks where an answer stops: a prefix cannot be told from its extension
            for answer, seq in zip(self.answers, self.sequences):
                longer = [a for a, o in zip(self.answers, self.sequences) if _begins(seq, o)]
                if longer:
                    clashes[seq] = [answer, *longer]
        return clashes

    def index(self, answer: str | None) -> int:
        return self.answers.index(answer) if _text(answer) else -1


def _begins(short: tuple, long: tuple) -> bool:
    """`short` is a proper prefix of `long`."""
    return len(long) > len(short) and long[:len(short)] == short


def _text(x) -> str:
    """Missing values come back from Arrow as None or NaN: both mean no text."""
    return x if isinstance(x, str) else ""


def _select_rows(cache, rows: torch.Tensor):
    """A copy of the KV cache holding `rows` of its batch (repeats allowed); the original stays intact."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(rows)
    return sub


@dataclass
class Prefix:
    """What a batch's prompts leave for their continuations: the KV cache, the attention mask, and (for
    multimodal RoPE) each row's next position id."""
    cache: object
    attention_mask: torch.Tensor
    next_positions: torch.Tensor | None = None


def continuation_logprobs(vlm, prefix: Prefix, rows: list[int], sequences: list[tuple[int, ...]]) -> torch.Tensor:
    """sum_{k>=2} log p(s_k | prompt of row r, s_<k) for each (row r, sequence s), teacher-forced in one batch.

    The prompt's KV cache is reused, so only the answer tokens run; answers are right-padded, which a
    causal decoder never attends to before the real tokens."""
    device = prefix.attention_mask.device
    length = max(len(s) for s in sequences) - 1
    pad = vlm.tokenizer.pad_token_id
    inputs = torch.tensor([list(s[:-1]) + [pad] * (length - len(s) + 1) for s in sequences], device=device)
    targets = torch.tensor([list(s[1:]) + [-1] * (length - len(s) + 1) for s in sequences], device=device)
    index = torch.tensor(rows, device=device)
    mask = torch.cat([prefix.attention_mask[index], (targets >= 0).to(prefix.attention_mask.dtype)], dim=1)
    positions = {} if prefix.next_positions is None else {
        "position_ids": prefix.next_positions[index, None] + torch.arange(length, device=device)}
    out = vlm.model(input_ids=inputs, attention_mask=mask, **{CACHE: _select_rows(prefix.cache, index)},
                    use_cache=True, **positions)
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets >= 0, picked, 0.0).sum(1)


def whole_answer_logprobs(vlm, first_logp: torch.Tensor, prefix: Prefix, cands: Candidates, required: list[set[int]],
                          chunk: int, per_round: int = 4) -> torch.Tensor:
    """log P(whole answer | prompt), (rows, candidates); NaN where a candidate provably cannot be the best.

    Single-token answers are read off the first position. Longer ones run as continuations, best first by
    their first token's log-probability, which bounds their score: a candidate whose bound is below the best
    score found is never run, unless `required` (a row's own answers are always scored)."""
    scores = torch.full((first_logp.shape[0], len(cands.answers)), float("nan"), device=first_logp.device)
    for i, seq in enumerate(cands.sequences):
        if len(seq) == 1:
            scores[:, i] = first_logp[:, seq[0]]
    if not cands.continued:
        return scores
    first_of = torch.tensor(cands.first_tokens, device=first_logp.device)
    bound = first_logp[:, first_of[cands.continued]].tolist()
    while True:  # the bookkeeping runs on the CPU; the device sees one batch per chunk of pairs
        best = torch.nan_to_num(scores, nan=-float("inf")).max(1).values.tolist()
        unscored = torch.isnan(scores[:, cands.continued]).tolist()
        pairs = []
        for r, (row_bound, row_best, row_open) in enumerate(zip(bound, best, unscored)):
            open_ = [(b, i) for b, i, o in zip(row_bound, cands.continued, row_open) if o]
            pairs += [(r, i) for _, i in open_ if i in required[r]]
            pairs += [(r, i) for b, i in sorted(open_, reverse=True)[:per_round] if b >= row_best and i not in required[r]]
        if not pairs:
            return scores
        for k in range(0, len(pairs), chunk):
            rows, cols = (torch.tensor(x, device=scores.device) for x in zip(*pairs[k:k + chunk]))
            rest = continuation_logprobs(vlm, prefix, rows.tolist(), [cands.sequences[i] for i in cols.tolist()])
            scores[rows, cols] = first_logp[rows, first_of[cols]] + rest


@contextmanager
def hidden_at_answer(vlm, lens: bool):
    """Collects each decoder layer's output at the last position (the answer position) during a forward."""
    captured = []

    def hook(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden[:, -1])

    handles = [layer.register_forward_hook(hook) for layer in vlm.layers] if lens else []
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def with_image_features(vlm, batch: dict, images: list | None, cache: dict | None = None) -> dict:
    """The encoded batch with each distinct image (the same object) through the tower once, where the family can
    take precomputed features (`Family.with_image_features`); `cache` (id(image) -> features) carries them across
    batches. Unchanged where the family cannot, or a row has no image."""
    if not vlm.family.reuses_image_features or not images or any(image is None for image in images):
        return batch
    cache = {} if cache is None else cache
    new: dict[int, int] = {}  # id(image) -> its first row in this batch
    for row, image in enumerate(images):
        if id(image) not in cache:
            new.setdefault(id(image), row)
    if new:
        cache.update(zip(new, vlm.family.image_features(vlm.model, batch["pixel_values"][list(new.values())])))
    return vlm.family.with_image_features(batch, [cache[id(image)] for image in images])


@torch.no_grad()
def forward_answer_position(vlm, prompts: list[str], images: list | None, cands: Candidates, lens: bool,
                            required: list[set[int]] | None = None, chunk: int = 32,
                            batch: dict | None = None, features: dict | None = None,
                            strengths=None) -> dict[str, np.ndarray]:
    """Answer-position statistics and whole-answer scores of one batch; the lens projects the last position only.
    `batch`: the prompts already encoded (`vlm.encode`), when the caller needs the tensors too; `features`: image
    features computed by earlier batches (`with_image_features`); `strengths`: each prompt's steering strength
    (eval/models/steering.py), where the model carries a steering."""
    enc = batch if batch is not None else with_image_features(vlm, vlm.encode(prompts, images), images, features)
    # steering first: its hook runs before the lens reads the layer's output
    with steered(vlm, strengths), hidden_at_answer(vlm, lens) as captured:
        out = vlm.model(**enc, logits_to_keep=1, use_cache=bool(cands.continued))
    prefix = Prefix(getattr(out, CACHE), enc["attention_mask"],
                    vlm.family.next_positions(vlm.model, enc) if cands.continued else None)
    return answer_statistics(vlm, out.logits[:, -1], captured, prefix, cands, required, chunk)


@torch.no_grad()
def forward_shared_prefix(vlm, split: ImagePrefixBatch, cands: Candidates, lens: bool,
                          required: list[set[int]] | None = None, chunk: int = 32,
                          prefix: dict | None = None) -> dict[str, np.ndarray]:
    """`forward_answer_position` for prompts that share their image prefix: the prefixes run once (one row per
    image), then every prompt's suffix over a copy of its image's KV cache. `prefix`: `encode_prefixes(split)`."""
    pre = prefix if prefix is not None else encode_prefixes(vlm, split)
    cache = getattr(vlm.model(**pre, use_cache=True, logits_to_keep=1), CACHE)
    suffix = suffix_inputs(vlm, split, pre, prefix_starts(vlm, pre))
    cache.batch_select_indices(suffix["rows"])  # one cache row per suffix (an image's row repeated)
    with hidden_at_answer(vlm, lens) as captured:
        out = vlm.model(input_ids=suffix["input_ids"], attention_mask=suffix["attention_mask"],
                        position_ids=suffix["position_ids"], **{CACHE: cache},
                        use_cache=bool(cands.continued), logits_to_keep=1)
    continuation = Prefix(getattr(out, CACHE), suffix["attention_mask"], suffix["next_positions"])
    return answer_statistics(vlm, out.logits[:, -1], captured, continuation, cands, required, chunk)


def answer_statistics(vlm, logits: torch.Tensor, captured: list[torch.Tensor], prefix: Prefix, cands: Candidates,
                      required: list[set[int]] | None, chunk: int) -> dict[str, np.ndarray]:
    """Everything the table records at the answer position, from its logits and (lens) each layer's hidden state."""
    logits = logits.float()
    first = torch.tensor(cands.first_tokens, device=logits.device)
    res = {name: index(logits) for name, index in uncertainty.INDICES.items()}
    logp = torch.log_softmax(logits, dim=-1)
    top1 = logits.argmax(-1)
    answer_logp = whole_answer_logprobs(vlm, logp, prefix, cands, required or [set() for _ in logits], chunk)
    # the model's answer: the candidate with the highest whole-answer probability, if its top-1 token begins
    # that candidate; otherwise the model starts to write something else ("other")
    best = torch.nan_to_num(answer_logp, nan=-float("inf")).argmax(1)
    starts_best = top1 == first[best]
    res.update(candidate_entropy=uncertainty.candidate_entropy(logits[:, cands.distinct_first_tokens]), top1=top1,
               cand_logit=logits[:, first], cand_prob=logp.exp()[:, first], answer_logprob=answer_logp,
               answer=torch.where(starts_best, best, -1))
    if captured:
        hidden = torch.stack(captured)  # (layers, batch, dim): the answer position after each layer
        lens_logits = vlm.head(vlm.final_norm(hidden)).float()
        res["lens_top1"] = lens_logits.argmax(-1).T  # (batch, layers)
        res["lens_cand_logit"] = lens_logits[..., first].permute(1, 0, 2)  # (batch, layers, candidates)
        res["final_logits"] = logits
        res["lens_last_logits"] = lens_logits[-1]
    return {k: v.cpu().numpy() for k, v in res.items()}


def distinct_inputs(rows: pd.DataFrame, conditions=CONDITIONS) -> dict[tuple, set[str]]:
    """Distinct inputs: (kind, image_id, context, question) -> the answers its rows ask about."""
    jobs: dict[tuple, set[str]] = {}
    for r in rows.itertuples():
        image_id = _text(r.image_id) or None
        ctx = _text(r.text_context)
        visual, text = {_text(r.answer_visual)} - {""}, {_text(r.answer_text)} - {""}
        if image_id:
            jobs.setdefault(("v", image_id, "", r.question), set()).update(visual)
        if ctx:
            jobs.setdefault(("t", None, ctx, r.question), set()).update(text)
            if image_id:
                jobs.setdefault(("m", image_id, ctx, r.question), set()).update(visual | text)
    return {k: v for k, v in jobs.items() if k[0] in conditions}


def score_rows(vlm, data: ConflictData, rows: pd.DataFrame, cands: Candidates, cfg: ScoreConfig,
               progress: tqdm | None = None) -> pd.DataFrame:
    """Score the distinct inputs of `rows` once each, then assemble the per-row table."""
    jobs = distinct_inputs(rows, cfg.conditions)
    results: dict[tuple, dict] = {}
    steering = getattr(vlm, "steering", None)
    if steering is not None and "m" in cfg.conditions and not {"v", "t"} <= set(cfg.conditions):
        raise ValueError("a steered model is scored with its image-only and text-only prompts too (the strength of "
                         "uncertainty steering reads their entropies); score every condition")
    # a steered image + text prompt and its unsteered image-only prompt no longer share their image prefix
    share = cfg.share_prefix and steering is None
    pending = _score_shared_prefixes(vlm, data, jobs, cands, cfg, results, progress) if share else jobs
    # batch like with like (image or not, lens or not) and sort by length to limit padding; each image is loaded
    # and (where the family allows) through the tower once for all its prompts
    loaded, features = {}, {}
    for kind in CONDITIONS:
        keys = sorted((k for k in pending if k[0] == kind), key=lambda k: len(k[2]) + len(k[3]))
        for i in range(0, len(keys), cfg.batch_size):
            chunk = keys[i:i + cfg.batch_size]
            prompts = [vlm.prompt(q, ctx, with_image=img is not None) for _, img, ctx, q in chunk]
            required = [{cands.index(a) for a in jobs[key]} for key in chunk]
            out = forward_answer_position(vlm, prompts, load_images(data, chunk, loaded), cands,
                                          lens=cfg.lens and kind == "m", required=required, chunk=cfg.batch_size,
                                          features=features,
                                          strengths=steering_strengths(steering, chunk, results) if kind == "m" else None)
            _record(results, chunk, out)
            if progress is not None:
                progress.update(len(chunk))
    return assemble(rows, results, cands, vlm)


def steering_strengths(steering, chunk: list[tuple], results: dict) -> np.ndarray | None:
    """Each image + text input's steering strength, from its own image-only and text-only entropies (scored first:
    `score_rows` runs the conditions in the order v, t, m)."""
    if steering is None:
        return None
    entropy = lambda key: results[key]["entropy"] if key in results else np.nan
    return steering.strengths(relative_uncertainty([entropy(("v", img, "", q)) for _, img, _, q in chunk],
                                                   [entropy(("t", None, ctx, q)) for _, _, ctx, q in chunk]))


def load_images(data: ConflictData, chunk: list[tuple], loaded: dict | None = None) -> list | None:
    """Each input's image, one object per distinct image (the engine shares work by identity; `loaded` keeps them
    across batches); None: text only."""
    if chunk[0][1] is None:
        return None
    loaded = {} if loaded is None else loaded
    for img in dict.fromkeys(k[1] for k in chunk):
        if img not in loaded:
            loaded[img] = data.image(img)
    return [loaded[k[1]] for k in chunk]


def image_batches(jobs, batch_size: int) -> list[list[tuple]]:
    """The image prompts of `jobs` (image only, image + text) in batches of about `batch_size`, never splitting one
    image's prompts (a batch grows past the size only for an image with more prompts than that)."""
    by_image: dict[str, list[tuple]] = {}
    for key in jobs:
        if key[0] in ("v", "m"):
            by_image.setdefault(key[1], []).append(key)
    batches, current = [], []
    for keys in by_image.values():
        if current and len(current) + len(keys) > batch_size:
            batches.append(current)
            current = []
        current += keys
    return batches + ([current] if current else [])


def _record(results: dict, chunk: list[tuple], out: dict) -> None:
    """Each input's outputs; the lens only for image + text inputs (a batch runs it when any of its inputs needs
    it)."""
    for j, key in enumerate(chunk):
        results[key] = {k: v[j] for k, v in out.items() if key[0] == "m" or k not in LENS_OUTPUTS}


LENS_OUTPUTS = ("lens_top1", "lens_cand_logit", "final_logits", "lens_last_logits")
_WHOLE_PROMPTS_LOGGED: set[str] = set()


def _score_shared_prefixes(vlm, data: ConflictData, jobs: dict, cands: Candidates, cfg: ScoreConfig,
                           results: dict, progress: tqdm | None) -> dict:
    """Score the image prompts (image only and image + text) image by image, each image's prefix once; about
    `cfg.batch_size` prompts per forward. Returns the jobs left for the whole-prompt path: text-only ones, and
    all of them where the prompts cannot share their image prefix (checked on the first batch)."""
    for n, chunk in enumerate(image_batches(jobs, cfg.batch_size)):
        prompts = [vlm.prompt(q, ctx, with_image=True) for _, _, ctx, q in chunk]
        split = split_at_image(vlm, prompts, load_images(data, chunk))
        prefix = encode_prefixes(vlm, split) if split is not None else None
        if n == 0 and (split is None or not matches_whole_prompts(vlm, split, prefix, prompts)):
            if vlm.name not in _WHOLE_PROMPTS_LOGGED:  # once per model, not once per shard
                _WHOLE_PROMPTS_LOGGED.add(vlm.name)
                log.info("%s: prompts do not share an image prefix (text before the image, or a family that "
                         "cannot reuse one); scoring whole prompts", vlm.name)
            return jobs
        lens = cfg.lens and any(k[0] == "m" for k in chunk)
        required = [{cands.index(a) for a in jobs[key]} for key in chunk]
        _record(results, chunk, forward_shared_prefix(vlm, split, cands, lens, required, cfg.batch_size, prefix))
        if progress is not None:
            progress.update(len(chunk))
    return {k: v for k, v in jobs.items() if k[0] == "t"}


def assemble(rows: pd.DataFrame, results: dict, cands: Candidates, vlm) -> pd.DataFrame:
    decode = lambda t: vlm.tokenizer.decode([int(t)]).strip()
    collided = {a for answers in cands.collisions().values() for a in answers}
    records = []
    for r in rows.itertuples():
        rec = {k: getattr(r, k) for k in ("id", "image_id", "group", "split", "task", "d_v", "d_t", "text_tier",
                                          "condition", "question", "text_context", "answer_visual", "answer_text",
                                          "text_ambiguity")}
        iv, it = cands.index(r.answer_visual), cands.index(r.answer_text)
        tv = cands.first_tokens[iv] if iv >= 0 else None
        tt = cands.first_tokens[it] if it >= 0 else None
        # whole answers that cannot be told apart leave the analysis; a shared first token only blinds the lens
        rec["answer_collision"] = bool(iv >= 0 and it >= 0 and (cands.sequences[iv] == cands.sequences[it]
                                                                or {r.answer_visual, r.answer_text} & collided))
        rec["first_token_shared"] = bool(tv is not None and tv == tt)
        ctx, image_id = _text(r.text_context), _text(r.image_id)
        keys = {"v": ("v", image_id, "", r.question) if image_id else None,
                "t": ("t", None, ctx, r.question) if ctx else None,
                "m": ("m", image_id, ctx, r.question) if ctx and image_id else ("v", image_id, "", r.question)}
        for c, key in keys.items():
            res = results.get(key) if key else None
            if res is None:
                continue
            for stat in ("entropy", "one_minus_max_p", "top2_margin", "candidate_entropy"):
                rec[f"{stat}_{c}"] = float(res[stat])
            rec[f"top1_{c}"] = int(res["top1"])
            answer = int(res["answer"])
            rec[f"pred_{c}"] = cands.answers[answer] if answer >= 0 else decode(res["top1"])
            for side, idx in (("visual", iv), ("text", it)):
                if idx >= 0:
                    rec[f"p_{side}_{c}"] = float(res["cand_prob"][idx])
                    rec[f"logit_{side}_{c}"] = float(res["cand_logit"][idx])
                    rec[f"logp_{side}_{c}"] = float(res["answer_logprob"][idx])
            if c == "m" and "lens_top1" in res:
                rec["lens_top1"] = [int(t) for t in res["lens_top1"]]
                if iv >= 0 and it >= 0 and not rec["first_token_shared"]:
                    rec["lens_diff"] = [float(x) for x in res["lens_cand_logit"][:, it] - res["lens_cand_logit"][:, iv]]
        rec["token_visual"], rec["token_text"] = tv, tt
        records.append(rec)
    return pd.DataFrame.from_records(records)


def plan_shards(rows: pd.DataFrame, conditions, shard_inputs: int) -> list[np.ndarray]:
    """Row positions of each shard: whole groups packed until a shard holds about `shard_inputs` distinct inputs,
    so a crash loses at most that much whatever the split size. A group larger than that is cut between its
    images (the group's text-only inputs are then scored once per piece)."""
    order = rows.sort_values(["group", "image_id"], kind="stable", na_position="last")
    units = []  # (row positions, input keys): whole groups, or the images of a group too large for one shard
    for _, group in order.groupby("group", sort=False):
        keys = set(distinct_inputs(group, conditions))
        if len(keys) <= shard_inputs:
            units.append((rows.index.get_indexer(group.index), keys))
        else:
            units += [(rows.index.get_indexer(image.index), set(distinct_inputs(image, conditions)))
                      for _, image in group.groupby(group.image_id.fillna(""), sort=False)]
    shards, current, seen = [], [], set()
    for positions, keys in units:
        if current and len(seen | keys) > shard_inputs:
            shards.append(np.concatenate(current))
            current, seen = [], set()
        current.append(positions)
        seen |= keys
    if current:
        shards.append(np.concatenate(current))
    return shards


def run_info(vlm, data: ConflictData, cfg: ScoreConfig, cands: Candidates, seed: int | None) -> dict:
    import importlib.metadata as md
    versions = {}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "modality-alignment"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "model": vlm.name, "architecture": vlm.arch, "revision": vlm.revision,
        "dtype": str(next(vlm.model.parameters()).dtype).replace("torch.", ""),
        "dataset": data.info.get("path"), "dataset_fingerprint": data.fingerprint, "dataset_info": data.info,
        "splits": sorted(set(data.samples["split"])), "seed": seed, "score_config": asdict(cfg),
        "candidates": dict(zip(cands.answers, cands.token_ids)), "answer_end_id": cands.end_id,
        "answer_collisions": list(cands.collisions().values()),
        "num_layers": len(vlm.layers), "versions": versions, "python": platform.python_version(),
    }


def score_dataset(vlm, data: ConflictData, out: str | Path | None = None, cfg: ScoreConfig | None = None,
                  seed: int | None = None) -> pd.DataFrame | None:
    """Score all rows of `data` into out/samples.parquet (+ run.json), resumably and data-parallel.

    Under `accelerate launch` each process takes every n-th shard; the main process merges.
    Returns the merged table on the main process, None elsewhere. With `out=None` nothing is written: one
    process scores every shard in memory (no resume).
    """
    state = processes()
    cfg = cfg or ScoreConfig()
    rows = samples_frame(data.samples)
    if rows.empty:
        raise ValueError("the dataset has no rows to score; check the split you selected")
    cands = Candidates.of(vlm, [_text(a) for a in pd.concat([rows.answer_visual, rows.answer_text])])
    if cands.collisions():
        log.warning("answers with identical tokens cannot be told apart: %s; their rows are flagged "
                    "answer_collision and left out of the analysis", list(cands.collisions().values()))
    shards = plan_shards(rows, cfg.conditions, cfg.shard_inputs)
    if out is None:
        if state.count > 1:
            raise ValueError("scoring under several processes needs an output directory to merge their shards; "
                             "give output_dir")
        tables = score_shards(vlm, data, rows, shards, range(len(shards)), cands, cfg, state)
        table = in_dataset_order(pd.concat(tables, ignore_index=True), rows)
        return pa.Table.from_pandas(table, preserve_index=False).to_pandas()  # the values a saved table reads back
    out = Path(out)
    shard_dir = out / "shards"
    info = json.loads(json.dumps(run_info(vlm, data, cfg, cands, seed), default=str))  # as it reads back
    info_path = out / "run.json"
    check_same_run(out, info, ("model", "dataset_fingerprint", "splits", "score_config", "revision"))
    shard_dir.mkdir(parents=True, exist_ok=True)
    mine = [k for k in range(len(shards)) if k % state.count == state.index]
    todo = [k for k in mine if not (shard_dir / f"shard-{k:05d}.parquet").exists()]
    if state.is_main:
        write_text(info_path, json.dumps(info, indent=2, default=str))
        if len(todo) < len(mine):
            log.info("resuming: %d of %d shards already scored", len(mine) - len(todo), len(mine))
    score_shards(vlm, data, rows, shards, todo, cands, cfg, state,
                 keep=lambda k, table: write_parquet(table, shard_dir / f"shard-{k:05d}.parquet"))
    state.wait()
    if not state.is_main:
        return None
    table = pd.concat([pd.read_parquet(shard_dir / f"shard-{k:05d}.parquet") for k in range(len(shards))],
                      ignore_index=True)
    table = in_dataset_order(table, rows)
    write_parquet(table, out / "samples.parquet")
    return table


def score_shards(vlm, data: ConflictData, rows: pd.DataFrame, shards: list[np.ndarray], todo, cands: Candidates,
                 cfg: ScoreConfig, state: Processes, keep=None) -> list[pd.DataFrame]:
    """Score the shards `todo` under one progress bar; `keep(k, table)` stores each as it finishes (a crash then
    loses at most one), else the tables are returned."""
    todo = list(todo)
    n_inputs = sum(len(distinct_inputs(rows.iloc[shards[k]], cfg.conditions)) for k in todo)
    t0, tables = time.time(), []
    with tqdm(total=n_inputs, desc=f"scoring [{state.index}]", unit="input", disable=not todo) as bar:
        for k in todo:
            table = score_rows(vlm, data, rows.iloc[shards[k]], cands, cfg, bar)
            if keep:
                keep(k, table)
            else:
                tables.append(table)
    if todo:
        log.info("process %d scored %d distinct inputs (each image-only, text-only and image+text prompt once) "
                 "in %.1fs; the table has one row per sample", state.index, n_inputs, time.time() - t0)
    return tables


def in_dataset_order(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The dataset's row order, whatever the shard plan and the number of processes."""
    return table.set_index("id").loc[rows.id].reset_index()
