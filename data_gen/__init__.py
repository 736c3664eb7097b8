"""Controllable conflict datasets (docs/method.md, "Conflict data")."""
from .store import ConflictData, generate
from .tiers import ATTRIBUTE_TIERS, COLOR_TIERS

__all__ = ["ConflictData", "generate", "COLOR_TIERS", "ATTRIBUTE_TIERS"]
