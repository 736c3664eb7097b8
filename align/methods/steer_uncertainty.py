"""`steer_uncertainty`: the `steer` direction with a per-sample strength, alpha times a window over the sample's own
dH_rel between the base's balance point and b* (eval/models/steering.py): the training-free counterpart of the soft
targets. It costs two extra forward passes per sample, the image-only and text-only prompts its dH_rel reads."""
from __future__ import annotations

from dataclasses import dataclass

from . import register_method
from .steer import PreferenceSteering, SteeringConfig


@dataclass
class UncertaintySteeringConfig(SteeringConfig):
    """steer's fields; the window's width is the recipe's boundary_sigma."""


@register_method
class UncertaintySteering(PreferenceSteering):
    name = "steer_uncertainty"
    help = ("the steer direction with a per-sample strength: alpha times a window over the sample's own dH_rel "
            "between the base's balance point and b* (two extra forward passes per sample)")
    config_class = UncertaintySteeringConfig
    mode = "uncertainty"
