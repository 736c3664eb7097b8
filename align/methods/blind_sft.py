"""`blind_sft`: SFT (TRL's SFTTrainer) on conflicts labelled with one modality's answer, whatever their uncertainty:
each conflict gets the text's answer with one probability q, the same for all, else the image's. q is the mean of
p* over the training conflicts, so calibration re-aims it the way it re-aims the soft targets, until the realized
balance point reaches b*. This is how the field fine-tunes toward a modality today."""
from __future__ import annotations

from dataclasses import dataclass

from . import register_method
from .hard import HardTargetConfig, HardTargets


@dataclass
class BlindSFTConfig(HardTargetConfig):
    """SFTConfig: the labels differ from `hard`'s, not the trainer."""


@register_method
class BlindSFT(HardTargets):
    name = "blind_sft"
    help = ("TRL SFTTrainer on conflicts labelled with the text's answer for a share of them drawn at random, "
            "whatever their uncertainty; the share is calibrated toward b*")
    config_class = BlindSFTConfig
    examples = "blind"
