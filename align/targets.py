"""Uncertainty-aware targets (docs/method.md, "Alignment"), pure functions on arrays."""
from __future__ import annotations

import numpy as np

from eval.models.steering import uncertainty_window

BALANCE_RANGE = (-2.0, 2.0)


def resolve_target(current: float | None, target_balance_point: float | None, balance_shift: float | None) -> float:
    """b* from an absolute target or a shift of the measured balance point; must lie in [-2, 2]."""
    if (target_balance_point is None) == (balance_shift is None):
        raise ValueError("set exactly one of target_balance_point (absolute b*) and balance_shift (b* = measured + shift)")
    if balance_shift is not None:
        if current is None:
            raise ValueError("balance_shift needs a measured balance point, but the base model's curve does not cross "
                             "0.5; set target_balance_point instead")
        target = current + balance_shift
    else:
        target = target_balance_point
    lo, hi = BALANCE_RANGE
    if not lo <= target <= hi:
        raise ValueError(f"target balance point {target:+.2f} is outside [{lo}, {hi}], the range of dH_rel; "
                         f"choose a target inside it (typical: -1 to +1)")
    return float(target)


def target_text_probability(d_rel, target: float, tau: float) -> np.ndarray:
    """p*(x) = sigmoid((b* - dH_rel(x)) / tau): the probability the adapted model should follow the text."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return 1 / (1 + np.exp(-(target - np.asarray(d_rel, dtype=float)) / tau))


def boundary_weights(d_rel, current: float, target: float, sigma: float = 0.5, floor: float = 0.2) -> np.ndarray:
    """Weight 1 between the current and desired balance points, a Gaussian fall-off of width sigma
    outside them, never below `floor` (easy samples still anchor the curve's ends)."""
    return floor + (1 - floor) * uncertainty_window(d_rel, current, target, sigma)


def sample_hard_targets(p_text, seed: int = 0) -> np.ndarray:
    """The `hard` variant: 1 = text answer, 0 = visual answer, drawn from p*."""
    return (np.random.default_rng(seed).uniform(size=len(p_text)) < np.asarray(p_text)).astype(float)


def next_training_target(target: float, tried: list[float], realized: list[float]) -> float:
    """The training target for the next calibration round, so the *realized* balance point meets `target`.

    A model fits p* only as finely as it can sense its own uncertainty, so the realized crossing
    lands between the base model's and b*. After one round the miss is added to the training
    target; after two, a secant through the last two rounds (slope kept in [0.2, 5]).
    """
    if not tried or len(tried) != len(realized):
        raise ValueError("need as many realized balance points as tried training targets (at least one)")
    step = target - realized[-1]
    if len(tried) >= 2 and abs(tried[-1] - tried[-2]) > 1e-6:
        slope = (realized[-1] - realized[-2]) / (tried[-1] - tried[-2])
        step /= float(np.clip(slope, 0.2, 5.0))
    lo, hi = BALANCE_RANGE
    return float(np.clip(tried[-1] + step, lo, hi))


def closest_round(target: float, realized: list[float]) -> int:
    """The calibration round to release: the one whose realized balance point is nearest b* (the later on a tie).

    The realized point need not move monotonically with the training target near the ends of the range (the
    organism trained at b = -1.94 for b* = -1 realized -0.43, after -0.82 at b = -1.24), so the last round is not
    always the best one."""
    if not realized:
        raise ValueError("no calibration round to choose from")
    misses = [abs(r - target) for r in realized]
    return max(range(len(misses)), key=lambda i: (-misses[i], i))


def calibration_reached(target: float, realized: float, interval: tuple[float, float] | None, tolerance: float,
                        stop_in_interval: bool = True) -> bool:
    """Whether a calibration round's measured balance point is on target: within `tolerance`, or, with
    `stop_in_interval`, the target lies inside the round's confidence interval. A miss inside the interval is
    indistinguishable from the calibration groups' noise, and re-aiming at it adds that noise to the aim."""
    if abs(realized - target) <= tolerance:
        return True
    return bool(stop_in_interval and interval is not None and interval[0] <= target <= interval[1])
