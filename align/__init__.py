"""Alignment: move a model's balance point and prove it with the measurement code.

    from align import align
    run = align("organism", target_balance_point=0.0, output_dir="outputs/notebook")
"""
from __future__ import annotations

__all__ = ["AlignmentRun", "align"]


def __getattr__(name: str):
    # imported on first use, so a command's --help does not load the training stack
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'align' has no attribute {name!r}")
