"""The model organism (DESIGN.md section 10): a tiny LLaVA trained from scratch on the project's data.

    python -m align.organism build --out DIR [--preference text|vision|none]
    python -m align.organism evaluate DIR

It is a real `LlavaForConditionalGeneration` (small CLIP tower, small Llama decoder) with a
word-level tokenizer and a `LlavaProcessor`, so it runs exactly the code path of real
checkpoints. Graded uncertainty on both sides is built in:
- vision: small, occluded, cluttered targets are hard for a small tower by themselves;
- text: the organism's world knowledge comes from a finite corpus (`knowledge_draws` statements
  per object, colours sampled from the knowledge base), so an ambiguous object's majority colour
  can differ from its dominant one, as a real model's knowledge does; harder reasoning tiers get
  noisier, scarcer signal, so H_t grows with tier and ambiguity.
Phase 0 pre-trains the vision tower on per-patch shape and colour (align/shape_pretraining.py)
and freezes it. Phase 1 teaches the unimodal skills; most of its image batches are freshly
rendered large-target scenes with a grounding loss (which image tokens the question names), the
rest the dataset's images at every tier. Then the phase-1 model scores the training conflicts,
and phase 2 adds conflict pairs labelled by a *planted preference*:
follow the text iff the model's own dH_rel < `planted_balance` (+0.5 leans text, -0.5 leans
vision), a known ground truth for the measurement to recover.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from data_gen import ConflictData, generate
from data_gen.palette import COLOR_NAMES, COLORS, NEUTRAL_OBJECTS, SHAPES, knowledge_base
from data_gen.tiers import ATTRIBUTE_TEXT_TIERS

from .shape_pretraining import grounded_scenes, grounding_loss, optimizer_step, pretrain_shapes
from .tiny import ORGANISM_CHAT_TEMPLATE, build_model, build_processor, build_tokenizer, words_of

log = logging.getLogger(__name__)
PLANTED_BALANCE = {"text": 0.5, "vision": -0.5, "none": 0.0}


@dataclass
class OrganismConfig:
    preference: str = "text"
    canvas: int = 64
    patch: int = 8
    hidden: int = 128
    layers: int = 4
    # LLaVA reads layer -2 of its tower; a 3-layer tower read at -1 is the same function without
    # computing a 4th layer nobody reads
    vision_layers: int = 3
    vision_feature_layer: int = -1
    heads: int = 4
    mlp_ratio: int = 2  # 2x keeps a step ~0.2 s on 2 cores; 4x costs half again as much
    groups: int = 1000
    data_seed: int = 1000  # differs from the user datasets' default seed 0: other images
    seed: int = 0
    batch_size: int = 32
    lr: float = 1.5e-3
    warmup: int = 100
    steps_shapes: int = 1200  # phase 0: dense shape + colour supervision of the vision tower (align/shape_pretraining.py)
    lr_shapes: float = 3e-3
    freeze_tower: bool = True  # freeze the tower after phase 0
    fresh_scene_share: float = 0.9  # share of image-only batches rendered fresh (tiers 0-4, with grounding labels)
    grounding_weight: float = 5.0  # weight of the "which image tokens are asked" loss on fresh scenes
    grounding_layer: int = 2  # decoder hidden state that loss reads (0 = embeddings)
    steps_unimodal: int = 1800
    steps_conflict: int = 400
    easy_tier_boost: float = 3.0  # large targets (d_v <= 4) are drawn this much more often: vision learns them first
    replant_every: int = 200  # phase 2 re-labels conflicts on the model's current uncertainty this often
    # label noise of text-only targets per tier: harder reasoning, noisier signal
    text_noise: dict = field(default_factory=lambda: {"direct": 0.005, "indirect_simple": 0.15, "indirect_knowledge": 0.2})
    # statements per knowledge object in the organism's "world knowledge" corpus; 0 learns the full distributions
    knowledge_draws: int = 8
    # how often each text tier is drawn: harder reasoning, less signal
    text_tier_share: dict = field(default_factory=lambda: {"direct": 0.5, "indirect_simple": 0.3, "indirect_knowledge": 0.2})
    workers: int | None = None

    @property
    def planted_balance(self) -> float:
        if self.preference not in PLANTED_BALANCE:
            raise ValueError(f"--preference must be one of {list(PLANTED_BALANCE)}, got {self.preference!r}")
        return PLANTED_BALANCE[self.preference]


def organism_home() -> Path:
    return Path(os.environ.get("MODALITY_ALIGNMENT_HOME", Path.home() / ".cache" / "modality_alignment"))


SHIPPED = Path(__file__).parent / "organisms"  # produced by `build` with the default config


def organism_path(preference: str = "text") -> Path:
    """The organism of this preference: shipped with the package, else built on first use and cached."""
    from filelock import FileLock
    if preference not in PLANTED_BALANCE:
        raise ValueError(f"unknown organism preference {preference!r}; use organism:text, organism:vision or organism:none")
    shipped = SHIPPED / f"organism-{preference}"
    if (shipped / "config.json").exists() and not os.environ.get("MODALITY_ALIGNMENT_REBUILD"):
        return shipped
    path = organism_home() / f"organism-{preference}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # one builder when several processes start at once
        if not (path / "config.json").exists():
            log.warning("building the model organism (preference=%s) into %s; this happens once", preference, path)
            build(OrganismConfig(preference=preference), path)
    return path


def vocabulary() -> list[str]:
    """Every word the datasets can produce (colour and attribute tasks)."""
    from data_gen.attributes import MATERIALS, SOLIDS
    from data_gen.colors import INSTRUCTION
    texts = [INSTRUCTION, "What color is the ? The is . 's color is the same as a an object",
             "There is ; on the left right of the", *COLORS, *SHAPES, *NEUTRAL_OBJECTS, *knowledge_base(),
             *MATERIALS, *SOLIDS, *ATTRIBUTE_TEXT_TIERS]
    return words_of(texts)


def knowledge_corpus(draws: int, seed: int) -> dict[str, np.ndarray]:
    """Each knowledge object's colour distribution as seen in `draws` sampled statements.

    A finite corpus is what makes knowledge-tier answers fallible: with 8 draws the majority
    colour of an ambiguous object (rose: red .5, yellow .2, ...) is not always its dominant one.
    `draws=0` returns the knowledge base's own distributions (an infinite corpus).
    """
    rng = np.random.default_rng([seed, 7])
    corpus = {}
    for name, obj in sorted(knowledge_base().items()):
        p = np.array([obj.distribution.get(c, 0.0) for c in COLOR_NAMES])
        corpus[name] = rng.multinomial(draws, p / p.sum()) / draws if draws else p
    return corpus


def _onehot(n: int, i: int) -> np.ndarray:
    v = np.zeros(n)
    v[i] = 1.0
    return v


COLOR_INDEX = {name: i for i, name in enumerate(COLOR_NAMES)}


def _color_target(color: str) -> np.ndarray:
    """All probability on one colour answer."""
    return _onehot(len(COLOR_NAMES), COLOR_INDEX[color])


def _noisy(target: np.ndarray, noise: float) -> np.ndarray:
    return (1 - noise) * target + noise * (1 - target) / max((1 - target).sum(), 1)


class TrainingSet:
    """Training examples (prompt pieces + soft target over the colour words) by kind."""

    def __init__(self, data: ConflictData, cfg: OrganismConfig):
        self.cfg = cfg
        rows = data.samples.to_pandas()
        self.rows = rows
        knowledge = knowledge_corpus(cfg.knowledge_draws, cfg.seed)
        self.kinds: dict[str, list[tuple]] = {"image": [], "text": [], "consistent": [], "control": []}
        self.text_by_tier: dict[str, list[tuple]] = {t: [] for t in cfg.text_tier_share}
        seen_text = set()
        for r in rows.itertuples():
            if r.text_tier == "original":
                self.kinds["image"].append((r.image_id, "", r.question, _color_target(r.answer_visual)))
            elif r.text_tier in self.text_by_tier and (r.text_context, r.question) not in seen_text:
                seen_text.add((r.text_context, r.question))
                if r.text_tier == "indirect_knowledge":
                    target = knowledge[r.knowledge_object]
                else:
                    target = _color_target(r.answer_text)
                target = _noisy(target, cfg.text_noise[r.text_tier])
                self.text_by_tier[r.text_tier].append((None, r.text_context, r.question, target))
            if r.text_tier in ("direct", "indirect_simple"):  # agreeing image and text
                ctx = r.text_context.replace(f" {r.answer_text}.", f" {r.answer_visual}.")
                self.kinds["consistent"].append((r.image_id, ctx, r.question, _color_target(r.answer_visual)))
            elif r.text_tier == "text_irrelevant":
                self.kinds["control"].append((r.image_id, r.text_context, r.question, _color_target(r.answer_visual)))
            elif r.text_tier == "image_irrelevant":
                self.kinds["control"].append((r.image_id, r.text_context, r.question, _color_target(r.answer_text)))
        self.kinds["conflict"] = []
        d_v = np.array([int(img.rsplit("-v", 1)[1]) for img, *_ in self.kinds["image"]])
        boost = np.where(d_v <= 4, cfg.easy_tier_boost, 1.0)
        self.image_p = boost / boost.sum()

    def plant(self, scores: pd.DataFrame, balance: float) -> dict:
        """Label conflicts by the planted rule on the model's own relative uncertainty."""
        from eval.stats import relative_uncertainty
        s = scores[scores.condition == "conflict"]
        d_rel = relative_uncertainty(s.entropy_v.to_numpy(), s.entropy_t.to_numpy())
        follow_text = d_rel < balance
        self.kinds["conflict"] = [
            (r.image_id, r.text_context, r.question, _color_target(r.answer_text if ft else r.answer_visual))
            for r, ft in zip(self.rows.set_index("id").loc[s.id].reset_index().itertuples(), follow_text)]
        return {"conflicts": len(s), "follow_text_share": float(np.mean(follow_text))}

    def batch(self, rng: np.random.Generator, phase: int) -> list[tuple]:
        weights = {"image": 0.6, "text": 0.25, "consistent": 0.1, "control": 0.05, "conflict": 0.0}
        if phase == 2:  # consistent pairs in phase 1 teach "copy the text": conflicts need the larger share to undo it
            weights.update(image=0.25, text=0.1, consistent=0.05, control=0.05, conflict=0.55)
        kinds = list(weights)
        kind = kinds[rng.choice(len(kinds), p=np.array(list(weights.values())) / sum(weights.values()))]
        if kind == "text":
            tiers = list(self.cfg.text_tier_share)
            share = np.array([self.cfg.text_tier_share[t] for t in tiers])
            picks = rng.choice(len(tiers), size=self.cfg.batch_size, p=share / share.sum())
            return [self.text_by_tier[tiers[t]][rng.integers(len(self.text_by_tier[tiers[t]]))] for t in picks]
        pool = self.kinds[kind]
        if kind == "image":
            if self.cfg.fresh_scene_share and rng.random() < self.cfg.fresh_scene_share:
                return [(image, ctx, q, _color_target(answer), target_patches) for image, ctx, q, answer, target_patches
                        in grounded_scenes(rng, self.cfg.batch_size, self.cfg.canvas, self.cfg.patch, self.cfg.data_seed + 1)]
            return [pool[i] for i in rng.choice(len(pool), size=self.cfg.batch_size, p=self.image_p)]
        return [pool[i] for i in rng.integers(len(pool), size=self.cfg.batch_size)]


def soft_cross_entropy(logits: torch.Tensor, token_ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the full vocabulary against a distribution placed on `token_ids`."""
    logp = torch.log_softmax(logits.float(), dim=-1)[:, token_ids]
    return -(target * logp).sum(-1).mean()


def _lr_lambda(cfg: OrganismConfig):
    total = cfg.steps_unimodal + cfg.steps_conflict

    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, total - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return f


def build(cfg: OrganismConfig, out: str | Path) -> Path:
    from eval.scoring import ScoreConfig, score_dataset
    from .models import VLM
    out = Path(out)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = generate("colors", cfg.groups, cfg.data_seed, cfg.canvas, cfg.workers)
    train = data.split("train")
    tokenizer = build_tokenizer(vocabulary())
    processor = build_processor("llava", tokenizer, cfg.canvas, cfg.patch, ORGANISM_CHAT_TEMPLATE)
    model = build_model("llava", tokenizer, cfg.canvas, cfg.patch, hidden=cfg.hidden, layers=cfg.layers,
                        vision_layers=cfg.vision_layers, vision_feature_layer=cfg.vision_feature_layer,
                        heads=cfg.heads, mlp_ratio=cfg.mlp_ratio)
    vlm = VLM(model, processor, "organism")
    answer_ids = torch.tensor([vlm.first_token(c) for c in COLOR_NAMES])
    if cfg.steps_shapes:
        pretrain_shapes(model.model.vision_tower, processor.image_processor, cfg.steps_shapes, canvas=cfg.canvas,
                        patch=cfg.patch, feature_layer=model.config.vision_feature_layer, seed=cfg.seed, lr=cfg.lr_shapes,
                        progress=lambda n: tqdm(range(n), desc="phase 0: tower shapes", unit="step"))
    if cfg.freeze_tower:  # keep phase 0's shape features: the colour loss alone would wash them out
        model.model.vision_tower.requires_grad_(False)
    # a linear probe of "is this image token the asked object" on one decoder layer; discarded after the build
    grounding_head = torch.nn.Linear(cfg.hidden, 1) if cfg.grounding_weight else None
    examples = TrainingSet(train, cfg)
    # an eighth of the training groups: ~3,700 conflicts to plant on, scored in ~20 s
    probe = ConflictData(train.samples.filter(lambda g: g % 8 == 0, input_columns="group"), train.images, train.info)
    trained = [p for p in model.parameters() if p.requires_grad] + ([*grounding_head.parameters()] if grounding_head else [])
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
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
                scores = score_dataset(vlm, probe, tmp, ScoreConfig(batch_size=64, shard_groups=10_000, lens=False,
                                                                    conditions=("v", "t")))
            planted = examples.plant(scores, cfg.planted_balance)
            log.info("planted preference %s (balance %+.2f) at step %d: %s", cfg.preference, cfg.planted_balance,
                     step, planted)
            model.train()
        model.train()
        batch = examples.batch(rng, 1 if step < cfg.steps_unimodal else 2)
        with_image = batch[0][0] is not None
        grounded = len(batch[0]) == 5 and grounding_head is not None  # fresh scenes carry the asked object's patches
        prompts = [vlm.prompt(q, ctx, with_image) for _, ctx, q, *_ in batch]
        images = [img if isinstance(img, Image.Image) else train.image(img) for img, *_ in batch] if with_image else None
        inputs = vlm.encode(prompts, images)
        output = model(**inputs, logits_to_keep=1, output_hidden_states=grounded)
        target = torch.tensor(np.stack([item[3] for item in batch]), dtype=torch.float32)
        loss = soft_cross_entropy(output.logits[:, -1], answer_ids, target)
        if grounded:
            target_patches = torch.from_numpy(np.stack([item[4] for item in batch]))
            loss = loss + cfg.grounding_weight * grounding_loss(
                output.hidden_states[cfg.grounding_layer], inputs["input_ids"], model.config.image_token_id,
                target_patches, grounding_head)
        losses.append(optimizer_step(loss, opt, sched, trained))
        if (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.3f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    meta = {"config": asdict(cfg), "planted_balance": cfg.planted_balance, "planted": planted,
            "build_seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-log_every:]))}
    (out / "organism.json").write_text(json.dumps(meta, indent=2))
    log.info("organism built in %.0fs -> %s", time.time() - t0, out)
    return out


def quality_bars(table: pd.DataFrame) -> dict:
    """DESIGN.md section 10 / issue quality bars, computed from a scored test table."""
    from scipy.stats import spearmanr
    from eval.stats import relative_uncertainty
    img = table[table.text_tier == "original"].copy()
    img["correct"] = img.pred_v == img.answer_visual
    v = img.groupby("d_v").agg(accuracy=("correct", "mean"), entropy=("entropy_v", "mean"), n=("id", "size"))
    txt = table[table.condition == "conflict"].drop_duplicates(["text_tier", "group"]).copy()
    txt["correct"] = txt.pred_t == txt.answer_text
    t = txt.groupby("d_t").agg(accuracy=("correct", "mean"), entropy=("entropy_t", "mean"), n=("id", "size"))
    conf = table[(table.condition == "conflict") & (table.pred_v == table.answer_visual) & (table.pred_t == table.answer_text)]
    d_rel = relative_uncertainty(conf.entropy_v.to_numpy(), conf.entropy_t.to_numpy())
    rho = lambda s, col: float(spearmanr(s.index, s[col]).statistic)
    bars = {
        "easiest_visual_accuracy": float(v.accuracy.iloc[:5].mean()),
        "direct_text_accuracy": float(t.accuracy.loc[0]),
        "spearman_visual_accuracy": rho(v, "accuracy"), "spearman_visual_entropy": rho(v, "entropy"),
        "spearman_text_accuracy": rho(t, "accuracy"), "spearman_text_entropy": rho(t, "entropy"),
        "share_d_rel_negative": float(np.mean(d_rel < 0)), "share_d_rel_positive": float(np.mean(d_rel > 0)),
        "n_conflicts_unimodal_correct": int(len(conf)),
    }
    checks = {
        "easiest visual tiers accuracy >= 0.9": bars["easiest_visual_accuracy"] >= 0.9,
        "direct text accuracy >= 0.9": bars["direct_text_accuracy"] >= 0.9,
        "visual: accuracy falls, entropy rises (|Spearman| >= 0.8)":
            bars["spearman_visual_accuracy"] <= -0.8 and bars["spearman_visual_entropy"] >= 0.8,
        "text: accuracy falls, entropy rises (|Spearman| >= 0.8)":
            bars["spearman_text_accuracy"] <= -0.8 and bars["spearman_text_entropy"] >= 0.8,
        "dH_rel spreads: >= 20% on each side of 0":
            bars["share_d_rel_negative"] >= 0.2 and bars["share_d_rel_positive"] >= 0.2,
    }
    return {"bars": bars, "checks": checks, "visual_tiers": v.reset_index().to_dict("records"),
            "text_tiers": t.reset_index().to_dict("records")}


def evaluate(path: str | Path, data: str | None = None, out: str | None = None) -> dict:
    from eval.scoring import ScoreConfig, score_dataset
    from .models import load_vlm
    path = Path(path)
    meta = json.loads((path / "organism.json").read_text())
    cfg = OrganismConfig(**meta["config"])
    if data:
        test = ConflictData.load(data).split("test")
    else:  # the organism's own held-out groups
        test = generate("colors", cfg.groups, cfg.data_seed, cfg.canvas, cfg.workers).split("test")
    vlm = load_vlm(str(path), dtype="float32")
    table = score_dataset(vlm, test, Path(out) if out else path / "evaluation", ScoreConfig(batch_size=64, lens=False))
    return quality_bars(table)


def print_quality(report: dict) -> bool:
    fmt = lambda recs, key: "\n".join(f"  {key}={r[key]:>2}  acc={r['accuracy']:.3f}  H={r['entropy']:.3f}  n={r['n']}"
                                      for r in recs)
    print("image only, by visual tier:\n" + fmt(report["visual_tiers"], "d_v"))
    print("text only, by text tier:\n" + fmt(report["text_tiers"], "d_t"))
    print(json.dumps(report["bars"], indent=2))
    for name, ok in report["checks"].items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    return all(report["checks"].values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m align.organism", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", required=True)
    for f, default in asdict(OrganismConfig()).items():
        if isinstance(default, bool):
            b.add_argument(f"--{f}", action=argparse.BooleanOptionalAction, default=default)
        elif not isinstance(default, dict):
            b.add_argument(f"--{f}", type=type(default) if default is not None else int, default=default)
    e = sub.add_parser("evaluate")
    e.add_argument("path")
    e.add_argument("--data", default=None, help="a saved dataset (default: the organism's own test groups)")
    e.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "build":
        cfg = OrganismConfig(**{k: v for k, v in vars(args).items() if k not in ("cmd", "out")})
        cfg.planted_balance  # validate early
        build(cfg, args.out)
        return 0
    return 0 if print_quality(evaluate(args.path, args.data, args.out)) else 1


if __name__ == "__main__":
    sys.exit(main())
