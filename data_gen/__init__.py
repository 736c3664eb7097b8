"""Controllable conflict datasets (docs/method.md, "Conflict data")."""
from .store import ConflictData, generate, samples_frame
from .tiers import ATTRIBUTE_TIERS, COLOR_TIERS

__all__ = ["ConflictData", "generate", "samples_frame", "COLOR_TIERS", "ATTRIBUTE_TIERS"]
