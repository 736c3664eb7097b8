"""Colour following (DESIGN section 2): rendered shapes, the asked shape's colour against a text that names another."""
from __future__ import annotations

from data_gen import generate

from . import register_task
from .following import ModalityFollowing


@register_task
class Colors(ModalityFollowing):
    name = "colors"
    help = "colour recognition conflicts: visual tiers 0-13 x text tiers direct / indirect / knowledge"
    recipe_config = "recipes/configs/organism.yaml"

    def generate(self, groups: int, seed: int = 0, size: int | None = None, split_shares: dict | None = None):
        return generate("colors", groups, seed, size, split_shares=split_shares)
