"""The organism's training mixture: world knowledge from a finite corpus, and examples by kind.

Kinds: image-only, text-only (by text tier, with tier-dependent label noise), consistent
image + text, controls, and conflicts labelled by the *planted preference* on the model's own
relative uncertainty (`TrainingSet.plant`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_gen import ConflictData, samples_frame
from data_gen.palette import COLOR_NAMES, knowledge_base
from eval.stats import relative_uncertainty

from .config import OrganismConfig
from .shape_pretraining import LARGE_TARGET_TIERS, box_patches, grounded_scenes

COLOR_INDEX = {name: i for i, name in enumerate(COLOR_NAMES)}


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


def color_target(color: str) -> np.ndarray:
    """All probability on one colour answer."""
    v = np.zeros(len(COLOR_NAMES))
    v[COLOR_INDEX[color]] = 1.0
    return v


def with_label_noise(target: np.ndarray, noise: float) -> np.ndarray:
    return (1 - noise) * target + noise * (1 - target) / max((1 - target).sum(), 1)


class TrainingSet:
    """Training examples (prompt pieces + soft target over the colour words) by kind."""

    def __init__(self, data: ConflictData, cfg: OrganismConfig):
        self.cfg = cfg
        rows = samples_frame(data.samples)
        self.rows = rows
        knowledge = knowledge_corpus(cfg.knowledge_draws, cfg.seed)
        self.kinds: dict[str, list[tuple]] = {"image": [], "text": [], "consistent": [], "control": []}
        self.text_by_tier: dict[str, list[tuple]] = {t: [] for t in cfg.text_tier_share}
        seen_text = set()
        for r in rows.itertuples():
            if r.text_tier == "original":
                self.kinds["image"].append((r.image_id, "", r.question, color_target(r.answer_visual)))
            elif r.text_tier in self.text_by_tier and (r.text_context, r.question) not in seen_text:
                seen_text.add((r.text_context, r.question))
                if r.text_tier == "indirect_knowledge":
                    target = knowledge[r.knowledge_object]
                else:
                    target = color_target(r.answer_text)
                target = with_label_noise(target, cfg.text_noise[r.text_tier])
                self.text_by_tier[r.text_tier].append((None, r.text_context, r.question, target))
            if r.text_tier in ("direct", "indirect_simple"):  # agreeing image and text
                ctx = r.text_context.replace(f" {r.answer_text}.", f" {r.answer_visual}.")
                self.kinds["consistent"].append((r.image_id, ctx, r.question, color_target(r.answer_visual)))
            elif r.text_tier == "text_irrelevant":
                self.kinds["control"].append((r.image_id, r.text_context, r.question, color_target(r.answer_visual)))
            elif r.text_tier == "image_irrelevant":
                self.kinds["control"].append((r.image_id, r.text_context, r.question, color_target(r.answer_text)))
        self.kinds["conflict"] = []
        self.conflicts_by_side: list[list[tuple]] = [[], []]  # planted 'follow the text', 'follow the vision'
        self.clear_conflicts: set[tuple] = set()  # (image_id, context, question) outside the ambiguous region
        self.both_answers: dict[tuple, np.ndarray] = {}  # conflicts -> Y_v and Y_t marked
        self.overturned: dict[tuple, np.ndarray] = {}  # ambiguous conflicts -> the answer the planted rule rejects
        if cfg.ground_dataset_images:  # the target's patches, from its stored box
            boxes = dict(zip(data.images["image_id"], data.images["target_box"]))
            self.kinds["image"] = [(*item, box_patches(boxes[item[0]], cfg.image_size, cfg.patch))
                                   for item in self.kinds["image"]]
        d_v = np.array([int(img.rsplit("-v", 1)[1]) for img, *_ in self.kinds["image"]])
        boost = np.where(d_v <= 4, cfg.easy_tier_boost, 1.0)
        self.image_p = boost / boost.sum()

    def plant(self, scores: pd.DataFrame, balance: float) -> dict:
        """Label conflicts by the planted rule on the model's own relative uncertainty; note the clear ones (farther
        than `lens_commitment_width` from the planted balance) and, for the ambiguous rest, the rejected answer.

        A conflict's two answers are the dataset's, or with `plant_own_answers` the model's own image-only and
        text-only answers (conflicts where those are not two different colours are left out)."""
        s = scores[scores.condition == "conflict"]
        if self.cfg.plant_own_answers:
            s = s[s.pred_v.isin(COLOR_INDEX) & s.pred_t.isin(COLOR_INDEX) & (s.pred_v != s.pred_t)]
        rows = self.rows.set_index("id").loc[s.id]
        answers_v, answers_t = (a.to_numpy() for a in ((s.pred_v, s.pred_t) if self.cfg.plant_own_answers
                                                       else (rows.answer_visual, rows.answer_text)))
        d_rel = relative_uncertainty(s.entropy_v.to_numpy(), s.entropy_t.to_numpy())
        follow_text = d_rel < balance
        clear = np.abs(d_rel - balance) > self.cfg.lens_commitment_width
        keys = list(rows[["image_id", "text_context", "question"]].itertuples(index=False, name=None))
        self.kinds["conflict"] = [(*key, color_target(y_t if ft else y_v))
                                  for key, y_v, y_t, ft in zip(keys, answers_v, answers_t, follow_text)]
        self.conflicts_by_side = [[c for c, ft in zip(self.kinds["conflict"], follow_text) if ft == side]
                                  for side in (True, False)]
        self.clear_conflicts = {key for key, c in zip(keys, clear) if c}
        self.overturned = {key: color_target(y_v if ft else y_t)
                           for key, y_v, y_t, ft, c in zip(keys, answers_v, answers_t, follow_text, clear) if not c}
        self.both_answers = {key: color_target(y_v) + color_target(y_t)
                             for key, y_v, y_t in zip(keys, answers_v, answers_t)}
        return {"conflicts": len(s), "follow_text_share": float(np.mean(follow_text)),
                "clear_share": float(np.mean(clear))}

    def is_clear_conflict(self, item: tuple) -> bool:
        """Whether a batch item is a planted conflict outside the ambiguous region (fresh scenes carry an image, not
        an id: never)."""
        return isinstance(item[0], str) and tuple(item[:3]) in self.clear_conflicts

    def overturned_answer(self, item: tuple) -> np.ndarray | None:
        """For a planted conflict inside the ambiguous region, the answer the planted rule rejects; else None."""
        return self.overturned.get(tuple(item[:3])) if isinstance(item[0], str) else None

    def conflict_answers(self, item: tuple) -> np.ndarray | None:
        """For a planted conflict, both its answers (Y_v and Y_t marked); else None."""
        return self.both_answers.get(tuple(item[:3])) if isinstance(item[0], str) else None

    def batch(self, rng: np.random.Generator, phase: int, hard_scenes: bool = True) -> list[tuple]:
        """One batch of one kind; fresh scenes come from tiers 0..fresh_scene_tiers-1 once `hard_scenes`, else the
        large targets' tiers."""
        weights = {"image": 0.6, "text": 0.25, "consistent": 0.1, "control": 0.05, "conflict": 0.0}
        if phase == 2:  # consistent pairs in phase 1 teach "copy the text": conflicts need the larger share to undo it
            weights.update(image=0.25, text=0.1, consistent=0.05, control=0.05, conflict=0.55)
        kinds = list(weights)
        kind = kinds[rng.choice(len(kinds), p=np.array(list(weights.values())) / sum(weights.values()))]
        size = self.cfg.train_batch_size
        if kind == "text":
            tiers = list(self.cfg.text_tier_share)
            share = np.array([self.cfg.text_tier_share[t] for t in tiers])
            picks = rng.choice(len(tiers), size=size, p=share / share.sum())
            return [self.text_by_tier[tiers[t]][rng.integers(len(self.text_by_tier[tiers[t]]))] for t in picks]
        pool = self.kinds[kind]
        if kind == "image":
            if self.cfg.fresh_scene_share and rng.random() < self.cfg.fresh_scene_share:
                tiers = self.cfg.fresh_scene_tiers if hard_scenes else LARGE_TARGET_TIERS
                return [(image, ctx, q, color_target(answer), target_patches) for image, ctx, q, answer, target_patches
                        in grounded_scenes(rng, size, self.cfg.image_size, self.cfg.patch, self.cfg.dataset_seed + 1,
                                           tiers, self.cfg.fresh_scene_shared_colors)]
            return [pool[i] for i in rng.choice(len(pool), size=size, p=self.image_p)]
        if kind == "conflict" and self.cfg.balanced_conflicts and all(self.conflicts_by_side):
            return [side[i] for side, n in zip(self.conflicts_by_side, (size - size // 2, size // 2))
                    for i in rng.integers(len(side), size=n)]
        return [pool[i] for i in rng.integers(len(pool), size=size)]
