"""The recognition organism: a shipped organism taught to recognise contradictions in unimodal contexts only.

Starting from `organism` (or another organism), the tokenizer learns the recognition words (the embedding and
output rows grow, the old ids stay) and the decoder trains on two kinds of batches, the tower frozen:
- recognition: text_text and caption_text rows (never image_text) answered yes/no, cross-entropy;
- replay: colour questions in the three conditions, distilled from the frozen starting organism (KL at the
  answer position), so its unimodal skills and planted preference stay.
Cross-modal recognition is never trained: the gap between unimodal and cross-modal recognition is what the
measurement must find (docs/method.md, "Conflict recognition and attention imbalance").
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from data_gen import generate, samples_frame
from data_gen.recognition import ANSWERS, CAPTION, QUESTION, recognition_from
from data_gen.files import write_json
from eval.models import VLM, load_vlm
from eval.models.tiny import with_words, words_of

from .config import RecognitionOrganismConfig
from .shape_pretraining import optimizer_step

log = logging.getLogger(__name__)


def recognition_batch(rows, rng, n: int, vlm: VLM, answer_ids: dict, images: list | None = None
                      ) -> tuple[list[str], torch.Tensor, list | None]:
    """Unimodal recognition rows; with `images`, each shown with a random one of them, which says nothing about the
    rows' labels."""
    picked = rows.iloc[rng.integers(len(rows), size=n)]
    shown = [images[i] for i in rng.integers(len(images), size=n)] if images else None
    prompts = [vlm.prompt(q, c, with_image=shown is not None) for q, c in zip(picked.question, picked.text_context)]
    return prompts, torch.tensor([answer_ids[a] for a in picked.answer]), shown


def replay_batch(rows, rng, n: int, vlm: VLM, data) -> tuple[list[str], list | None]:
    """Colour questions in one condition: image only, text only, or both."""
    picked = rows.iloc[rng.integers(len(rows), size=n)]
    condition = ("v", "t", "m")[rng.integers(3)]
    with_image = condition != "t"
    prompts = [vlm.prompt(q, c if condition != "v" else "", with_image) for q, c in zip(picked.question, picked.text_context)]
    return prompts, [data.image(i) for i in picked.image_id] if with_image else None


def build_recognition(cfg: RecognitionOrganismConfig, out: str | Path) -> Path:
    out = Path(out)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    reference = load_vlm(cfg.base, dtype="float32", device="cpu")
    vlm = load_vlm(cfg.base, dtype="float32", device="cpu")
    words = [w for w in words_of([QUESTION, CAPTION, *ANSWERS.values()]) if w not in vlm.tokenizer.get_vocab()]
    vlm.processor.tokenizer = with_words(vlm.tokenizer, words)
    model = vlm.model
    model.resize_token_embeddings(len(vlm.tokenizer), mean_resizing=True)
    model.model.vision_tower.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(False)
    old_vocab = reference.model.get_output_embeddings().weight.shape[0]
    colours = generate("colors", cfg.groups, cfg.dataset_seed, cfg.image_size, split_shares=cfg.split_shares)
    recognition = recognition_from(colours).split("train")
    unimodal = samples_frame(recognition.samples).query("evidence != 'image_text'")
    colours = colours.split("train")
    colour_rows = samples_frame(colours.samples).query("condition in ('conflict', 'no_conflict')")
    answer_ids = {a: vlm.first_token(a) for a in ANSWERS.values()}
    irrelevant = [colours.image(i) for i in sorted(set(colours.samples["image_id"]))] if cfg.irrelevant_image_share else None
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * max(0.1, 1 - s / cfg.steps))
    losses = {"recognition": [], "replay": []}
    model.train()
    bar = tqdm(range(cfg.steps), desc="training the recognition organism", unit="step")
    for step in bar:
        if rng.random() < cfg.replay_share:
            prompts, images = replay_batch(colour_rows, rng, cfg.train_batch_size, vlm, colours)
            logits = model(**vlm.encode(prompts, images), logits_to_keep=1).logits[:, -1].float()
            with torch.no_grad():
                target = torch.softmax(reference.model(**reference.encode(prompts, images), logits_to_keep=1)
                                       .logits[:, -1].float(), -1)
            # KL(reference || model) over the reference's vocabulary; the new words get no mass there
            loss = -(target * torch.log_softmax(logits, -1)[:, :old_vocab]).sum(-1).mean()
            kind = "replay"
        else:
            prompts, labels, images = recognition_batch(unimodal, rng, cfg.train_batch_size, vlm, answer_ids,
                                                        irrelevant if irrelevant and rng.random() < cfg.irrelevant_image_share else None)
            logits = model(**vlm.encode(prompts, images), logits_to_keep=1).logits[:, -1].float()
            loss = torch.nn.functional.cross_entropy(logits, labels)
            kind = "recognition"
        losses[kind].append(optimizer_step(loss, opt, sched, trained))
        if (step + 1) % 100 == 0:
            bar.set_postfix({k: f"{np.mean(v[-50:]):.3f}" for k, v in losses.items() if v})
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    vlm.processor.save_pretrained(out)
    base_meta = Path(reference.model.name_or_path) / "organism.json"
    meta = {"recognition": asdict(cfg), "new_words": words, "build_seconds": round(time.time() - t0, 1),
            "final_loss": {k: float(np.mean(v[-50:])) for k, v in losses.items() if v},
            "base": json.loads(base_meta.read_text()) if base_meta.exists() else None}
    write_json(out / "organism.json", meta)
    log.info("recognition organism built in %.0fs -> %s", time.time() - t0, out)
    return out
