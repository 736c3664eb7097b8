"""Attribute following: CLEVR-like scenes (shape, material, colour), four visual tiers and a spatial text tier."""
from __future__ import annotations

from data_gen import generate

from . import register_task
from .following import ModalityFollowing


@register_task
class Attributes(ModalityFollowing):
    name = "attributes"
    help = "attribute conflicts on CLEVR-like scenes: visual tiers 0-3 x text tiers 0-3 (3: spatial)"
    recipe_config = None  # no shipped config: the shipped organisms read attributes at chance

    def generate(self, groups: int, seed: int = 0, size: int | None = None, split_shares: dict | None = None):
        return generate("attributes", groups, seed, size, split_shares=split_shares)
