"""The AV organism: a tiny `Qwen2_5OmniThinkerForConditionalGeneration` trained from scratch on audio-visual clips.

    python -m align.organism av --output_dir DIR

It learns what a pre-trained audio-visual model brings to MMA-Bench (docs/method.md, "Audio-visual conflicts"):
the event class from the frames, from the sound, and from either alone, and a caption's word when one is given,
all on clips whose frames and sound agree. Phase 0 trains the frame and the sound encoder on the class (linear
heads on pooled tokens, discarded) and freezes them; phase 1 trains the decoder to answer on a mixture of clip
kinds (`config.KINDS`). Every training clip is drawn fresh (data_gen/av.py's renderers on
the build's own random stream), so no evaluation clip is ever seen. It never sees a misaligned pair or a wrong
caption, and no training answer depends on which modality the question asks about: those are what the
measurement must find it brittle on, and what asked-modality alignment (recipes/align_omni.py) teaches.
Each answer is one class word followed by the end of turn, so `generate()` stops after it.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from data_gen.av import (ASKED, AUDIO_SNR_DB, CLASSES, LONG_CONTEXT, SAMPLING_RATE, VISUAL_SCALE, class_frames,
                         noisy_sound)
from data_gen.files import write_json
from eval.models import VLM
from eval.models.tiny import build_tiny, dataset_tokenizer

from .config import AVOrganismConfig
from .shape_pretraining import optimizer_step

log = logging.getLogger(__name__)
CAPTION = "Caption: a {}."  # as data_gen/av.py writes the (there misleading) caption


def av_tokenizer():
    """The project's word-level tokenizer with every word of the AV rows (classes, questions, captions, text)."""
    return dataset_tokenizer([*CLASSES, *ASKED.values(), LONG_CONTEXT, CAPTION.format("")])


def training_clip(rng: np.random.Generator, kind: str, size: int, visual_tier_p: np.ndarray) -> dict:
    """One fresh clip of `kind` with a question about a random modality and its answer (the clip's one class)."""
    label = CLASSES[rng.integers(len(CLASSES))]
    d_v, d_a = int(rng.choice(len(VISUAL_SCALE), p=visual_tier_p)), int(rng.integers(len(AUDIO_SNR_DB)))
    frames = class_frames(label, d_v, size, rng)
    audio = noisy_sound(label, d_a, rng)
    asked = ("visual", "audio")[rng.integers(2)]
    if kind in ("audio_removed", "caption_only"):
        audio, asked = None, "visual"
    if kind in ("frames_zeroed", "caption_only"):
        frames = [Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)) for _ in frames]
        asked = "audio" if kind == "frames_zeroed" else asked
    return {"frames": frames, "audio": audio, "question": ASKED[asked], "answer": label,
            "caption": CAPTION.format(label) if kind in ("true_caption", "caption_only") else "",
            "appendix": LONG_CONTEXT if kind == "long_context" else ""}


def pretrain_encoders(model, processor, cfg: AVOrganismConfig, rng: np.random.Generator, tier_p: np.ndarray,
                      progress=None) -> list[float]:
    """Phase 0: frame and sound encoders learn the clip's class through linear heads on their mean-pooled tokens."""
    base = model.model
    heads = torch.nn.ModuleList([torch.nn.Linear(cfg.hidden, len(CLASSES)) for _ in range(2)])
    params = [*base.visual.parameters(), *base.audio_tower.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    easy = np.array([1.0, 1.0] + [0.0] * (len(tier_p) - 2)) / 2
    losses = []
    for step in (progress or range)(cfg.steps_encoders):
        clips = [training_clip(rng, "aligned", cfg.image_size, easy if step < cfg.easy_steps else tier_p)
                 for _ in range(cfg.train_batch_size)]
        labels = torch.tensor([CLASSES.index(c["answer"]) for c in clips])
        images = processor.image_processor(images=[f for c in clips for f in c["frames"]], return_tensors="pt")
        frames = base.get_image_features(images["pixel_values"], images["image_grid_thw"]).pooler_output
        per_clip = len(clips[0]["frames"])
        visual = torch.stack([torch.cat(frames[per_clip * k:per_clip * (k + 1)]).mean(0) for k in range(len(clips))])
        sound = processor.feature_extractor([c["audio"] for c in clips], sampling_rate=SAMPLING_RATE,
                                            return_attention_mask=True, return_tensors="pt")
        tokens = base.get_audio_features(sound["input_features"], sound["attention_mask"]).last_hidden_state
        lengths = base.audio_tower._get_feat_extract_output_lengths(sound["attention_mask"].sum(-1))[1].tolist()
        audio = torch.stack([t.mean(0) for t in torch.split(tokens, lengths)])
        loss = sum(torch.nn.functional.cross_entropy(head(x), labels) for head, x in zip(heads, (visual, audio)))
        losses.append(optimizer_step(loss, opt, sched, params))
    return losses


def answer_loss(vlm: VLM, clips: list[dict], answer_ids: dict[str, int], end_id: int) -> torch.Tensor:
    """Cross-entropy of the class word right after the prompt and of the end of turn right after the word."""
    prompts = [vlm.av_prompt(c["question"], len(c["frames"]), c["audio"] is not None, c["caption"], c["appendix"])
               + f" {c['answer']}" for c in clips]
    batch = vlm.av_inputs(prompts, [c["frames"] for c in clips], [c["audio"] for c in clips])
    # left padding: the answer's two positions are the last two (the thinker ignores logits_to_keep)
    logits = vlm.model(**batch, logits_to_keep=2).logits[:, -2:].float()
    word = torch.tensor([answer_ids[c["answer"]] for c in clips])
    return (torch.nn.functional.cross_entropy(logits[:, 0], word)
            + torch.nn.functional.cross_entropy(logits[:, 1], torch.full_like(word, end_id)))


def build_av(cfg: AVOrganismConfig, out: str | Path) -> Path:
    """Train the AV organism from scratch into `out` (model, processor, organism.json)."""
    out = Path(out)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 41])  # the build's own stream: no dataset seed draws these clips
    model, processor = build_tiny("qwen2_5_omni_thinker", av_tokenizer(), cfg.image_size, cfg.patch,
                                  hidden=cfg.hidden, layers=cfg.layers, encoder_layers=cfg.encoder_layers,
                                  heads=cfg.heads, mel_bins=cfg.mel_bins)
    vlm = VLM(model, processor, "organism:av")
    answer_ids = {c: vlm.first_token(c) for c in CLASSES}
    kinds = list(cfg.kind_share)
    share = np.array([cfg.kind_share[k] for k in kinds], dtype=float)
    tier_p = np.asarray(cfg.visual_tier_weight, dtype=float) / sum(cfg.visual_tier_weight)
    model.train()
    encoder_losses = pretrain_encoders(model, processor, cfg, rng, tier_p, progress=lambda n: tqdm(
        range(n), desc="phase 0: frame and sound encoders", unit="step"))
    for encoder in (model.model.visual, model.model.audio_tower):
        encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))))
    losses = []
    bar = tqdm(range(cfg.steps), desc="phase 1: answering", unit="step")
    for step in bar:
        picks = [kinds[k] for k in rng.choice(len(kinds), size=cfg.train_batch_size, p=share / share.sum())]
        clips = [training_clip(rng, kind, cfg.image_size, tier_p) for kind in picks]
        losses.append(optimizer_step(answer_loss(vlm, clips, answer_ids, vlm.answer_end_id), opt, sched, params))
        if (step + 1) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    meta = {"config": asdict(cfg), "build_seconds": round(time.time() - t0, 1),
            "final_encoder_loss": float(np.mean(encoder_losses[-50:])), "final_loss": float(np.mean(losses[-50:]))}
    write_json(out / "organism.json", meta)
    log.info("AV organism built in %.0fs -> %s", time.time() - t0, out)
    return out


def av_quality_bars(res: dict) -> dict:
    """The AV organism's bars, from `eval.av.analyze_av` on clips it never saw: good on aligned clips and on either
    modality alone, brittle (intervals apart) under misaligned sound and a misleading caption."""
    pooled = {c["condition"]: c["accuracy"] for c in res["by_condition"]}
    cell = {(c["condition"], c["asked"]): c["accuracy"] for c in res["accuracy"]}
    aligned = pooled["aligned"]
    below = lambda cond: pooled[cond]["ci"][1] < aligned["ci"][0]
    checks = {
        "aligned accuracy >= 0.9": aligned["rate"] >= 0.9,
        "frames alone (audio removed, asked visual) >= 0.8": cell[("audio_removed", "visual")]["rate"] >= 0.8,
        "sound alone (frames zeroed, asked audio) >= 0.8": cell[("frames_zeroed", "audio")]["rate"] >= 0.8,
        "misaligned below aligned (intervals apart)": below("misaligned"),
        "misleading text below aligned (intervals apart)": below("misleading_text"),
    }
    return {"accuracy": {k: v["rate"] for k, v in pooled.items()}, "checks": checks}


def evaluate_av(name_or_path: str = "organism:av", groups: int = 200, dataset_seed: int = 7,
                output_dir: str | Path | None = None, batch_size: int = 16) -> dict:
    """Score an AV organism on `groups` freshly generated groups (all splits: it trained on none) and check its bars."""
    from data_gen.av import generate_av
    from eval.av import analyze_av, describe_av
    from eval.av_report import write_av_report
    from eval.av_scoring import AVScoreConfig, score_av
    from eval.models import load_vlm
    from .quality import default_output_dir
    out = Path(output_dir or default_output_dir(name_or_path, f"-seed{dataset_seed}-groups{groups}"))
    vlm = load_vlm(name_or_path, dtype="float32")
    res = analyze_av(score_av(vlm, generate_av(groups, dataset_seed), out, AVScoreConfig(batch_size=batch_size)))
    write_av_report({Path(out).name: res}, out)
    print(describe_av(res))
    return av_quality_bars(res)
