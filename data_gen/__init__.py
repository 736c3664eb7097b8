"""Controllable conflict datasets (DESIGN.md sections 2 and 9)."""
from .store import ConflictData, generate
from .tiers import ATTRIBUTE_TIERS, COLOR_TIERS

__all__ = ["ConflictData", "generate", "COLOR_TIERS", "ATTRIBUTE_TIERS"]
