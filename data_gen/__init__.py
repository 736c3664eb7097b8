"""Controllable conflict datasets (docs/method.md, "Conflict data")."""
import os as _os

# OpenMP's waiting threads sleep instead of spinning (a busy CPU otherwise slowed LoRA steps 25-30x); a user's own
# OMP_WAIT_POLICY is kept. Set before torch loads its OpenMP runtime, which reads the variable once.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .store import ConflictData, generate, samples_frame
from .tiers import ATTRIBUTE_TIERS, COLOR_TIERS

__all__ = ["ConflictData", "generate", "samples_frame", "COLOR_TIERS", "ATTRIBUTE_TIERS"]
