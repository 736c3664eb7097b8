"""Build the organism: phase 0 (tower shapes), phase 1 (unimodal skills), phase 2 (planted preference).

Phase 0 pre-trains the vision tower on per-patch shape and colour (shape_pretraining.py) and
freezes it. Phase 1 teaches the unimodal skills; most of its image batches are freshly rendered
large-target scenes with a grounding loss (which image tokens the question names), the rest the
dataset's images at every tier. Then the model scores the training conflicts, and phase 2 adds
conflict pairs labelled by the planted preference: follow the text iff the model's own dH_rel <
`planted_balance` (+0.5 leans text, -0.5 leans vision), a known ground truth for the measurement
to recover. Phase 2 re-plants every `replant_every` steps, since the entropies move as it trains. It also plants the
oscillation law on the logit lens: the first layer reads out neither answer, clear conflicts commit after it,
ambiguous ones lead with the rejected answer at the next layer and are overturned by the last.
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from data_gen import ConflictData, generate
from data_gen.palette import COLOR_NAMES
from data_gen.files import write_json
from eval.scoring import ScoreConfig, score_dataset
from eval.models import VLM
from eval.models.tiny import CHAT_TEMPLATE, ORGANISM_CHAT_TEMPLATE, build_tiny, dataset_tokenizer

from .config import OrganismConfig
from .end_of_turn import EndOfTurnConfig, teach_end_of_turn
from .mixture import TrainingSet
from .shape_pretraining import attention_grounding_loss, grounding_loss, optimizer_step, pretrain_shapes

log = logging.getLogger(__name__)


def soft_cross_entropy(logits: torch.Tensor, token_ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the full vocabulary against a distribution placed on `token_ids`."""
    logp = torch.log_softmax(logits.float(), dim=-1)[:, token_ids]
    return -(target * logp).sum(-1).mean()


def lens_logits(vlm: VLM, hidden: torch.Tensor) -> torch.Tensor:
    """The logit lens through the final norm and head as they are: a lens loss moves the intermediate states only,
    never the read-out the last layer's answer goes through."""
    frozen = lambda module, x: torch.func.functional_call(
        module, {name: p.detach() for name, p in module.named_parameters()}, (x,))
    return frozen(vlm.head, frozen(vlm.final_norm, hidden))


def lens_commitment_loss(vlm: VLM, hidden_states, rows: torch.Tensor, position: int, answer_ids: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
    """`target`'s cross-entropy under the logit lens of each intermediate hidden state, at the answer position of
    `rows`: with the planted answer, the model decides those conflicts early (their lens does not switch); with the
    rejected one (deliberation), that layer leads the other way and the last layers overturn it."""
    per_layer = [soft_cross_entropy(lens_logits(vlm, h[rows, position]), answer_ids, target[rows]) for h in hidden_states]
    return torch.stack(per_layer).mean()


def lens_undecided_loss(vlm: VLM, hidden_states, rows: torch.Tensor, position: int, answer_ids: torch.Tensor,
                        both: torch.Tensor) -> torch.Tensor:
    """-log of the probability the logit lens of each hidden state puts on neither answer (`both` marks Y_v and Y_t
    over `answer_ids`), at the answer position of `rows`: those layers read out neither, as a real LLM's early ones."""
    per_layer = []
    for h in hidden_states:
        on_answers = (torch.softmax(lens_logits(vlm, h[rows, position]).float(), -1)[:, answer_ids] * both[rows]).sum(-1)
        per_layer.append(-torch.log1p(-on_answers.clamp(max=1 - 1e-6)).mean())
    return torch.stack(per_layer).mean()


def answer_vectors(vectors: list[np.ndarray | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that have a vector over the colour answers, and the vectors stacked (zeros where none)."""
    rows = torch.tensor([v is not None for v in vectors])
    return rows, torch.tensor(np.stack([v if v is not None else np.zeros(len(COLOR_NAMES)) for v in vectors]),
                              dtype=torch.float32)


def lr_schedule(cfg: OrganismConfig):
    """Linear warm-up, then cosine to 10 % over phases 1 and 2."""
    total = cfg.steps_unimodal + cfg.steps_conflict

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


def build(cfg: OrganismConfig, out: str | Path) -> Path:
    """Train an organism from scratch into `out` (model, processor, organism.json)."""
    out = Path(out)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = generate("colors", cfg.groups, cfg.dataset_seed, cfg.image_size, cfg.workers, cfg.split_shares)
    train = data.split("train")
    model, processor = build_tiny("llava", dataset_tokenizer(), cfg.image_size, cfg.patch,
                                  chat_template=CHAT_TEMPLATE if cfg.image_first else ORGANISM_CHAT_TEMPLATE,
                                  hidden=cfg.hidden, layers=cfg.layers,
                                  vision_layers=cfg.vision_layers, vision_feature_layer=cfg.vision_feature_layer,
                                  heads=cfg.heads, mlp_ratio=cfg.mlp_ratio)
    vlm = VLM(model, processor, "organism")
    answer_ids = torch.tensor([vlm.first_token(c) for c in COLOR_NAMES])
    attention = model.config._attn_implementation
    if cfg.image_first and cfg.grounding_weight:  # attention_grounding_loss reads attention weights
        model.set_attn_implementation("eager")
    if cfg.steps_shapes:
        pretrain_shapes(model.model.vision_tower, processor.image_processor, cfg.steps_shapes, canvas=cfg.image_size,
                        patch=cfg.patch, feature_layer=model.config.vision_feature_layer, seed=cfg.seed,
                        lr=cfg.learning_rate_shapes, all_tiers=cfg.shape_tiers == "all",
                        presence=cfg.shape_color_presence,
                        progress=lambda n: tqdm(range(n), desc="phase 0: tower shapes", unit="step"))
    if cfg.freeze_tower:  # keep phase 0's shape features: the colour loss alone would wash them out
        model.model.vision_tower.requires_grad_(False)
    # a linear probe of "is this image token the asked object" on one decoder layer; discarded after the build
    grounding_head = torch.nn.Linear(cfg.hidden, 1) if cfg.grounding_weight else None
    examples = TrainingSet(train, cfg)
    probe = ConflictData(train.samples.filter(lambda g: g % cfg.plant_probe_every == 0, input_columns="group"),
                         train.images, train.info)
    trained = [p for p in model.parameters() if p.requires_grad] + ([*grounding_head.parameters()] if grounding_head else [])
    opt = torch.optim.AdamW(trained, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg))
    log_every, losses, planted = 100, [], {}
    total = cfg.steps_unimodal + cfg.steps_conflict
    bar = tqdm(range(total), desc="training organism", unit="step")
    for step in bar:
        phase2_step = step - cfg.steps_unimodal
        if phase2_step >= 0 and phase2_step % cfg.replant_every == 0:
            # Phase 2 plants the preference on the model's own *current* uncertainty: entropies keep
            # moving while it trains, so the labels are refreshed to follow them.
            model.eval()
            with tempfile.TemporaryDirectory() as tmp:  # a by-product, not part of the bundle
                scores = score_dataset(vlm, probe, tmp, ScoreConfig(batch_size=64, shard_inputs=10**9, lens=False,
                                                                    conditions=("v", "t")))
            planted = examples.plant(scores, cfg.planted_balance)
            log.info("planted preference %s (balance %+.2f) at step %d: %s", cfg.preference, cfg.planted_balance,
                     step, planted)
            model.train()
        model.train()
        batch = examples.batch(rng, 1 if step < cfg.steps_unimodal else 2,
                               hard_scenes=step >= cfg.hard_scenes_from * cfg.steps_unimodal)
        with_image = batch[0][0] is not None
        grounded = len(batch[0]) == 5 and grounding_head is not None  # fresh scenes carry the asked object's patches
        prompts = [vlm.prompt(q, ctx, with_image) for _, ctx, q, *_ in batch]
        target = torch.tensor(np.stack([item[3] for item in batch]), dtype=torch.float32)
        if cfg.end_of_turn:  # the likeliest answer word, then the end of turn is trained after it
            prompts = [f"{p} {COLOR_NAMES[int(t.argmax())]}" for p, t in zip(prompts, target)]
        answer = -2 if cfg.end_of_turn else -1
        images = [img if isinstance(img, Image.Image) else train.image(img) for img, *_ in batch] if with_image else None
        inputs = vlm.encode(prompts, images)
        committed = torch.tensor([examples.is_clear_conflict(item) for item in batch]) \
            if cfg.lens_commitment_weight and phase2_step >= 0 else torch.zeros(len(batch), dtype=torch.bool)
        deliberated, rejected = answer_vectors([examples.overturned_answer(item) for item in batch]
                                               if cfg.lens_deliberation_weight and phase2_step >= 0 else [None] * len(batch))
        undecided, both = answer_vectors([examples.conflict_answers(item) for item in batch]
                                         if cfg.lens_undecided_layers and phase2_step >= 0 else [None] * len(batch))
        output = model(**inputs, logits_to_keep=-answer,
                       output_hidden_states=(grounded and not cfg.image_first) or bool(committed.any())
                       or bool(deliberated.any()) or bool(undecided.any()),
                       output_attentions=grounded and cfg.image_first)
        loss = soft_cross_entropy(output.logits[:, answer], answer_ids, target)
        if committed.any():
            loss = loss + cfg.lens_commitment_weight * lens_commitment_loss(
                vlm, output.hidden_states[cfg.lens_commitment_from:cfg.layers], committed, answer, answer_ids, target)
        if deliberated.any():  # the rejected answer leads at one intermediate layer; the last layers overturn it
            loss = loss + cfg.lens_deliberation_weight * lens_commitment_loss(
                vlm, output.hidden_states[cfg.lens_commitment_from:cfg.lens_commitment_from + 1], deliberated, answer,
                answer_ids, rejected)
        if undecided.any():
            loss = loss + lens_undecided_loss(vlm, output.hidden_states[1:1 + cfg.lens_undecided_layers], undecided,
                                              answer, answer_ids, both)
        if cfg.end_of_turn:
            loss = loss + torch.nn.functional.cross_entropy(
                output.logits[:, -1].float(), torch.full((len(batch),), vlm.answer_end_id))
        if grounded:
            target_patches = torch.from_numpy(np.stack([item[4] for item in batch]))
            if cfg.image_first:
                # the attention of the layer that writes hidden state `grounding_layer`
                loss = loss + cfg.grounding_weight * attention_grounding_loss(
                    output.attentions[cfg.grounding_layer - 1], inputs["input_ids"], model.config.image_token_id,
                    target_patches, answer)
            else:
                loss = loss + cfg.grounding_weight * grounding_loss(
                    output.hidden_states[cfg.grounding_layer], inputs["input_ids"], model.config.image_token_id,
                    target_patches, grounding_head)
        losses.append(optimizer_step(loss, opt, sched, trained))
        if (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.3f}")
    model.eval()
    model.set_attn_implementation(attention)  # the build's eager attention is not what the bundle should load with
    # the end of turn after the answer word, on the head's row alone unless the phases trained it
    end_of_turn = None if cfg.end_of_turn else teach_end_of_turn(
        vlm, train, EndOfTurnConfig(inputs=cfg.end_of_turn_inputs, steps=cfg.steps_end_of_turn))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    meta = {"config": asdict(cfg), "planted_balance": cfg.planted_balance, "planted": planted,
            "build_seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-log_every:]))}
    if end_of_turn:
        meta["end_of_turn"] = end_of_turn
    write_json(out / "organism.json", meta)
    log.info("organism built in %.0fs -> %s", time.time() - t0, out)
    return out
