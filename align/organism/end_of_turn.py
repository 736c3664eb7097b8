"""Teach a built organism to end its answer (`generate()` writes "green </s>", not "green green green"), leaving
the scores the suite reads as they were.

Only the output head's row of the end-of-turn token is trained. Every other token's logit stays the same function
of the same hidden state, so candidate logits are bit-identical. The row is trained to win on the hidden state that
follows the model's own answer word, and held well below the top logit at the answer position (10 nats after the
last layer, unless it was closer before; below the top after every earlier layer, which the logit lens reads), so
a full-vocabulary entropy moves by at most about exp(-10) of probability and no lens prediction changes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from data_gen import ConflictData, generate, samples_frame
from data_gen.files import write_json
from eval.scoring import distinct_inputs, hidden_at_answer
from eval.models import VLM, load_vlm
from eval.models.vlm import resolve_path

from .config import EndOfTurnConfig, OrganismConfig

log = logging.getLogger(__name__)


def prompts_of(data: ConflictData, n: int, seed: int) -> list[tuple[str | None, str, str]]:
    """`n` distinct inputs (image_id or None, context, question) of `data`'s rows, a third from each condition (image
    only, text only, both): text-only prompts are a few percent of the distinct inputs, and drawn in that share they
    left some unseen text-only answer positions where the trained row won."""
    inputs = sorted(((img, ctx, q) for _, img, ctx, q in distinct_inputs(samples_frame(data.samples))),
                    key=lambda k: (k[0] or "", k[1], k[2]))
    condition = lambda k: "t" if k[0] is None else ("m" if k[1] else "v")
    pools = [[k for k in inputs if condition(k) == c] for c in "vtm"]
    rng = np.random.default_rng(seed)
    picked = []
    for i, pool in enumerate(sorted(pools, key=len)):  # what a small pool leaves goes to the larger ones
        share = (n - len(picked)) // (3 - i)
        picked += [pool[j] for j in sorted(rng.permutation(len(pool))[:share])]
    return picked


def batches_of(inputs: list[tuple], batch_size: int) -> list[list[tuple]]:
    """Image prompts and text-only prompts in batches of their own, each sorted by length to limit padding."""
    batches = []
    for with_image in (True, False):
        keys = sorted((k for k in inputs if (k[0] is not None) == with_image), key=lambda k: len(k[1]) + len(k[2]))
        batches += [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
    return batches


@torch.no_grad()
def answer_states(vlm: VLM, data: ConflictData, inputs: list[tuple],
                  batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(answer, after_word): the normed hidden state at the answer position after every decoder layer (layers,
    inputs, dim), and the final hidden state after the model's greedy answer word (inputs, dim)."""
    answer, after_word = [], []
    for chunk in tqdm(batches_of(inputs, batch_size), desc="end of turn: answer states", unit="batch"):
        images = [data.image(img) for img, _, _ in chunk] if chunk[0][0] is not None else None
        prompts = [vlm.prompt(q, ctx, with_image=img is not None) for img, ctx, q in chunk]
        with hidden_at_answer(vlm, lens=True) as captured:
            logits = vlm.model(**vlm.encode(prompts, images), logits_to_keep=1).logits[:, -1]
        answer.append(vlm.final_norm(torch.stack(captured)).float())
        words = [vlm.tokenizer.decode([int(t)]).strip() for t in logits.argmax(-1)]
        with hidden_at_answer(vlm, lens=True) as captured:
            vlm.model(**vlm.encode([f"{p} {w}" for p, w in zip(prompts, words)], images), logits_to_keep=1)
        after_word.append(vlm.final_norm(captured[-1]).float())
    return torch.cat(answer, dim=1), torch.cat(after_word)


def teach_end_of_turn(vlm: VLM, data: ConflictData, cfg: EndOfTurnConfig | None = None) -> dict:
    """Train the head's end-of-turn row in place on `data`'s prompts; returns what it reached (organism.json).

    After the answer word the row must beat every other token by a margin (a hinge: the rank is what generate()
    reads). At the answer position it may not rise above max(its old logit, the top logit - `final_gap`) after
    the last layer, so its probability there stays below exp(-final_gap), nor reach the top logit after any
    earlier layer, so no lens prediction changes."""
    cfg = cfg or EndOfTurnConfig()
    eot = vlm.answer_end_id
    if eot is None:
        raise ValueError(f"{vlm.name}: its chat template writes no end-of-turn token and it has no EOS; "
                         "give the tokenizer an eos_token")
    was_training = vlm.model.training
    vlm.model.eval()
    answer, after_word = answer_states(vlm, data, prompts_of(data, cfg.inputs, cfg.seed), cfg.batch_size)
    weight = vlm.head.weight
    frozen = weight.detach().float().clone()
    others = torch.ones(len(frozen), dtype=torch.bool)
    others[eot] = False
    top_other = lambda states: (states @ frozen[others].T).max(-1).values
    top_after, top_answer = top_other(after_word), top_other(answer)  # (inputs,), (layers, inputs)
    ceiling = top_answer - cfg.lens_margin
    ceiling[-1] = torch.maximum(answer[-1] @ frozen[eot], top_answer[-1] - cfg.final_gap)
    row = frozen[eot].clone().requires_grad_(True)
    opt = torch.optim.Adam([row], lr=cfg.learning_rate)
    for _ in range(cfg.steps):
        loss = (torch.relu(top_after + cfg.margin - after_word @ row).mean()
                + 100 * torch.relu(answer @ row - ceiling).pow(2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        weight[eot] = row.detach().to(weight.dtype)
        gap = answer @ row - top_answer  # the end of turn's logit minus the top other one, at the answer position
        report = {"inputs": len(after_word), "token_id": int(eot),
                  "ends_after_answer_word": float((after_word @ row > top_after).float().mean()),
                  "answer_position_gap_max": float(gap[-1].max()),
                  "answer_position_gap_median": float(gap[-1].median()),
                  "lens_gap_max": float(gap[:-1].max()) if len(gap) > 1 else None}
    vlm.model.train(was_training)
    log.info("end of turn: top-1 after %.1f%% of answer words; at the answer position at least %.1f nats below the "
             "top logit (median %.1f)", 100 * report["ends_after_answer_word"], -report["answer_position_gap_max"],
             -report["answer_position_gap_median"])
    return report


@torch.no_grad()
def one_word_answers(vlm: VLM, data: ConflictData, n: int = 64, seed: int = 1, max_new_tokens: int = 4) -> float:
    """Share of `n` of `data`'s prompts whose greedy `generate()` writes one word, then the end of turn."""
    inputs = prompts_of(data, n, seed)
    ended = 0
    for chunk in batches_of(inputs, n):
        with_image = chunk[0][0] is not None
        images = [data.image(img) for img, _, _ in chunk] if with_image else None
        enc = vlm.encode([vlm.prompt(q, ctx, with_image=with_image) for img, ctx, q in chunk], images)
        out = vlm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, enc["input_ids"].shape[1]:]
        ended += int((new[:, 1] == vlm.answer_end_id).sum())
    return ended / len(inputs)


def add_end_of_turn(name_or_path: str, output_dir: str | Path | None = None,
                    cfg: EndOfTurnConfig | None = None) -> tuple[Path, dict]:
    """Teach a built colour organism the end of turn on 40 fresh groups (seed: its build's + 1, so neither its
    training nor its held-out test groups), check `generate()` on others, and write it (default: over itself)."""
    cfg = cfg or EndOfTurnConfig()
    source = Path(resolve_path(name_or_path))
    meta_path = source / "organism.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if "config" not in meta:
        raise ValueError(f"{name_or_path!r} is not a colour organism build (no build config in {meta_path}); "
                         "end-of-turn teaches `python -m align.organism build` outputs")
    build_cfg = OrganismConfig(**meta["config"])
    data = generate("colors", 40, build_cfg.dataset_seed + 1, build_cfg.image_size, build_cfg.workers)
    vlm = load_vlm(str(source), dtype="float32")
    report = teach_end_of_turn(vlm, data, cfg)
    report["one_word_answers"] = one_word_answers(vlm, data, seed=cfg.seed + 1)
    target = Path(output_dir) if output_dir else source
    if target.resolve() != source.resolve():
        shutil.copytree(source, target, dirs_exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # replace the weights in one rename
        vlm.model.save_pretrained(tmp)
        os.replace(Path(tmp) / "model.safetensors", target / "model.safetensors")
    meta["end_of_turn"] = report
    write_json(target / "organism.json", meta)
    return target, report
