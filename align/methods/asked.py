"""`asked`: asked-modality alignment (docs/method.md, "Audio-visual conflicts"; MMA-Bench's modality alignment
tuning): every audio-visual row whose asked modality is present trains the answer to be that modality's class,
through the soft trainer's answer term."""
from __future__ import annotations

from dataclasses import dataclass

from data_gen import samples_frame

from ..asked_modality import AVCollator, asked_modality_examples
from . import register_method
from .soft import SoftTargetConfig, SoftTrained


@dataclass
class AskedModalityConfig(SoftTargetConfig):
    """The soft trainer's config; every row is an answer to train (retention: answer)."""


@register_method
class AskedModality(SoftTrained):
    name = "asked"
    help = "answer the class of the modality the question asks about (audio-visual clips)"
    config_class = AskedModalityConfig
    examples = "asked"
    tasks = ("av",)

    def training_examples(self, recipe, base, views: dict):
        rows = samples_frame(views["av"].split(recipe.align.train_split).samples)
        examples, stats = asked_modality_examples(rows, base, recipe.align.conditions)
        return examples, stats, views["av"]

    def collator(self, vlm, data, dtype, align):
        return AVCollator(vlm, data, dtype)
