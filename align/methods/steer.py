"""`steer` and `steer_uncertainty`: a preference direction in the residual stream, no training (MC², arXiv 2505.20977;
per-instance strength as AMPS, arXiv 2602.12533).

The direction is the difference of mean answer-position hidden states between the base's text-following and
vision-following conflicts of the training groups (align/steering.py). `steer` adds it with one strength alpha;
`steer_uncertainty` with alpha times a window over each prompt's own dH_rel between the base's balance point and b*
(two extra forward passes per sample: its image-only and text-only prompts). Alpha is calibrated on the calibration
groups until the realized balance point reaches b*. What is released is the vector, its layer and alpha
(steering.safetensors) and a card.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from eval.models.steering import Steering

from ..targets import calibration_reached, closest_round
from . import TrainingFree, register_method

log = logging.getLogger(__name__)


@dataclass
class SteeringConfig:
    steer_layer: int | None = field(default=None, metadata={
        "help": "decoder layer the direction is added at (default: the one whose direction best separates held-out "
                "groups' text- and vision-following conflicts)"})
    steer_max_alpha: float = field(default=16.0, metadata={"help": "the largest strength calibration tries, > 0"})
    steer_rounds: int = field(default=6, metadata={
        "help": "strengths calibration measures at most (each one measurement of the calibration groups), >= 1"})


@register_method
class PreferenceSteering(TrainingFree):
    name = "steer"
    help = "add a text-vs-vision preference direction to the hidden states, strength calibrated toward b* (no training)"
    config_class = SteeringConfig
    intervention = "steering"
    mode = "constant"

    def fit(self, recipe, base, views, before, target):
        # imported here, not above: SteeringConfig is part of every recipe's flags, and --help should not load them
        from eval.analysis import conflict_samples
        from eval.models.steering import Steering
        from ..steering import answer_hidden_states, preference_direction
        a, out = recipe.align, recipe.out
        data = views[recipe.primary.name]
        bp = before[recipe.primary.name].analysis["balance_point"]
        current = bp["estimate"] if bp["estimate"] is not None else (2.0 if bp["side"] == "text" else -2.0)
        log.info("2/5 the preference direction from the base's %s conflicts", a.train_split)
        conflicts, _ = conflict_samples(recipe.train_table(base, data), a.analysis)
        conflicts = conflicts[conflicts.following.isin(["text", "vision"])]
        hidden = answer_hidden_states(base, data, conflicts, recipe.training.per_device_eval_batch_size)
        follows_text = (conflicts.following == "text").to_numpy()
        direction, layer, aucs = preference_direction(hidden, follows_text, conflicts.group.to_numpy(), a.steer_layer)
        steering = Steering(torch.tensor(direction, dtype=torch.float32), layer, 0.0, self.mode, current, target,
                            a.boundary_sigma)
        stats = {"conflicts": int(len(conflicts)), "text_following": int(follows_text.sum()), "layer": layer,
                 "held_out_auc": aucs[layer], "direction_norm": float(np.linalg.norm(direction)),
                 "extra_forward_passes": steering.extra_passes}
        log.info("3/5 calibrating the strength at layer %d (held-out AUC %.3f) toward b* = %+.2f", layer, aucs[layer],
                 target)
        rounds = self.calibrate(recipe, base, data, steering, target, current)
        best = closest_round(target, [r["realized"] for r in rounds])
        for k, r in enumerate(rounds):
            r["released"] = k == best
        folder = out / "steering"
        if recipe.state.is_main:
            shutil.rmtree(folder, ignore_errors=True)
            steering.with_alpha(rounds[best]["alpha"]).save(folder, base=recipe.model_args.model_name_or_path)
        recipe.state.wait()
        return stats, rounds, folder

    def calibrate(self, recipe, base, data, steering: Steering, target: float, current: float) -> list[dict]:
        """Measure the balance point on the calibration groups for a sequence of strengths (secant steps) until it
        is on target; every round is returned."""
        from ..steering import next_strength
        a = recipe.align
        alpha = float(np.sign(target - current) or 1.0)
        tried, realized, rounds = [], [], []
        for k in range(a.steer_rounds):
            vlm = dataclasses.replace(base, steering=steering.with_alpha(alpha),
                                      name=f"{base.name}+steering(layer={steering.layer}, alpha={alpha:.6g})")
            name = f"calibration-{k}"
            if recipe.state.is_main:
                shutil.rmtree(recipe.out / "runs" / name, ignore_errors=True)
            recipe.state.wait()
            try:
                check = recipe.measure_task(recipe.primary, vlm, data.split(a.calibration_split).conflicts(), name,
                                            lens=False).analysis["balance_point"]
            except ValueError as e:  # too strong: the model no longer answers with either modality's answer
                log.info("steering round %d: alpha %+.3f leaves no following curve (%s)", k, alpha, str(e)[:120])
                tried.append(alpha)
                realized.append(None)
                alpha = next_strength(target, tried, realized, a.steer_max_alpha)
                continue
            r = check["estimate"] if check["estimate"] is not None else (2.0 if check["side"] == "text" else -2.0)
            tried.append(alpha)
            realized.append(r)
            rounds.append({"alpha": alpha, "realized": r, "ci": check["ci"], "description": check["description"]})
            log.info("steering round %d: alpha %+.3f -> %s on the %s groups (target %+.2f)", k, alpha,
                     check["description"], a.calibration_split, target)
            if calibration_reached(target, r, check["ci"], a.calibration_tolerance, a.calibration_stop_in_interval):
                break
            alpha = next_strength(target, [0.0, *tried], [current, *realized], a.steer_max_alpha)
            if alpha in tried:  # at the limit: nothing new to try
                break
        if not rounds:
            raise ValueError(f"no steering strength left a following curve on the {a.calibration_split} groups "
                             f"(tried alpha {tried}); set steer_layer to another layer or lower steer_max_alpha")
        return rounds
