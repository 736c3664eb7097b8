"""Controllable conflict datasets (docs/method.md, "Conflict data")."""
import os as _os

# OpenMP's waiting threads sleep instead of spinning (a busy CPU otherwise slowed LoRA steps 25-30x); a user's own
# OMP_WAIT_POLICY is kept. Set before torch loads its OpenMP runtime, which reads the variable once.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import importlib as _importlib

__all__ = ["ConflictData", "generate", "samples_frame", "COLOR_TIERS", "ATTRIBUTE_TIERS"]
# name -> its module, imported on first use (a command's --help does not load `datasets`)
_LAZY = {"ConflictData": ".store", "generate": ".store", "samples_frame": ".store", "COLOR_TIERS": ".tiers",
         "ATTRIBUTE_TIERS": ".tiers"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
