"""Measurement: score a model on conflict data into a per-sample table, analyse it, report it.

    from eval import measure
    result = measure("organism", groups=60, dataset_seed=7)

The model layer is `eval.models` (load_vlm, the family registry, the shipped organisms).
"""
from __future__ import annotations

import os as _os

# OpenMP's waiting threads sleep instead of spinning (a busy CPU otherwise slowed LoRA steps 25-30x); a user's own
# OMP_WAIT_POLICY is kept. Set before torch loads its OpenMP runtime, which reads the variable once.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["Measurement", "measure"]


def __getattr__(name: str):
    # imported on first use, so `import eval.models` or a command's --help does not load the measuring stack
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'eval' has no attribute {name!r}")
