"""The uncertainty indices at the answer position (docs/method.md, "Uncertainty"), from logits.

These are the functions the scoring engine runs on every batch (on the model's device, in float32),
so the tests check the code that produces the per-sample table.
"""
from __future__ import annotations

import torch


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_y p(y) ln p(y) over the full vocabulary, in nats (0 ln 0 = 0)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p == 0, 0.0, p * logp).sum(-1)  # a NaN logit still gives NaN: the analysis counts those


def one_minus_max_p(logits: torch.Tensor) -> torch.Tensor:
    return 1 - torch.softmax(logits.float(), dim=-1).max(-1).values


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """p(top-1) - p(top-2): a certainty (1 - margin is the uncertainty the analysis uses)."""
    top = torch.softmax(logits.float(), dim=-1).topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def candidate_entropy(candidate_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the distribution renormalised over the candidate answers only."""
    return entropy(candidate_logits)


INDICES = {"entropy": entropy, "one_minus_max_p": one_minus_max_p, "top2_margin": top2_margin}
