"""`mixed`: modality-mixed training instances for conflict recognition (docs/method.md, "Conflict recognition"):
an image and a statement to reconcile, trained with the soft loss (p* = 1 on "yes" for contradictions)."""
from __future__ import annotations

from dataclasses import dataclass

from data_gen import samples_frame

from ..training import mixed_examples
from . import register_method
from .soft import SoftTargetConfig, SoftTrained


@dataclass
class MixedInstanceConfig(SoftTargetConfig):
    """The soft loss's config: the instances differ, not the loss."""


@register_method
class MixedInstances(SoftTrained):
    name = "mixed"
    help = "modality-mixed recognition instances (image + statement: do they contradict?) with the soft loss"
    config_class = MixedInstanceConfig
    examples = "mixed"
    tasks = ("recognition",)

    def training_examples(self, recipe, base, views: dict):
        """The image + text recognition rows of the training split whose image the base reads right, the unimodal
        recognition rows, and colour retention (align/training.py: mixed_examples)."""
        a = recipe.align
        train_table = recipe.train_table(base, views["colors"])
        rows = samples_frame(views["recognition"].split(a.train_split).samples)
        examples, stats = mixed_examples(rows, train_table, base, a.retention_share, recipe.training.seed)
        return examples, stats, views["recognition"]
