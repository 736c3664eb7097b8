"""Alignment: move a model's balance point and prove it with the measurement code.

    from align import align
    run = align("organism", target_balance_point=0.0, output_dir="outputs/notebook")
"""
from __future__ import annotations

import os as _os

# OpenMP's waiting threads sleep instead of spinning (a busy CPU otherwise slowed LoRA steps 25-30x); a user's own
# OMP_WAIT_POLICY is kept. Set before torch loads its OpenMP runtime, which reads the variable once.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["AlignmentRun", "align"]


def __getattr__(name: str):
    # imported on first use, so a command's --help does not load the training stack
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'align' has no attribute {name!r}")
