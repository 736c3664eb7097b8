"""A checkpoint's shape with random weights: what `recipes/gpu_figures.py` times on a GPU without a download.

Each family declares its checkpoint's sizes (`Family.shape`, the numbers of the checkpoint's config.json); the
model is the family's tiny model (`build_tiny`: its tokens, its processor, at the recipe config's image size) with
those sizes put into its config, built directly on the device in the device's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# config fields computed from the sizes when a config is built: computed again for the new sizes
DERIVED_FIELDS = ("head_dim", "layer_types")


@dataclass(frozen=True)
class ModelShape:
    checkpoint: str  # the hub id whose config.json these sizes are
    recipe_config: str  # the recipe config for it (recipes/configs/): image size, batch sizes, LoRA rank
    patch_size: int
    parameters: float  # the checkpoint's parameter count, which the built shape must match
    config: dict  # {sub-config attribute, or "" for the top level: {field: value}}
    tiny: dict = field(default_factory=dict)  # build_tiny's own settings the checkpoint fixes (soft tokens, ...)
    image_processor: dict = field(default_factory=dict)  # the checkpoint's image-processor fields (tiles, sizes)


def reshaped(config, sizes: dict):
    """A copy of `config` with `sizes` ({sub-config attribute or "": {field: value}}) replacing its fields."""
    values = config.to_dict()
    for sub, fields in sizes.items():
        target = values[sub] if sub else values
        for name in DERIVED_FIELDS:
            if name not in fields:
                target.pop(name, None)
        target.update(fields)
    return type(config).from_dict(values)


def on_device(model_class: type, config, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A random `model_class(config)` built on `device` in `dtype` (a 7B model is never made in float32 on the CPU
    first; on the meta device nothing is allocated)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def build_shape(family, tokenizer, image_size: int, device: str | torch.device, dtype: torch.dtype,
                tiny: bool = False) -> tuple[torch.nn.Module, object]:
    """(model, processor) of `family.shape` at `image_size`: random weights, built on `device` in `dtype`.
    `tiny`: the family's tiny model instead (the same code on a CPU, for tests)."""
    shape = family.shape
    if shape is None:
        raise ValueError(f"the {family.model_type} family declares no checkpoint shape (Family.shape)")
    if tiny:  # the family's own tiny settings: its soft tokens or tiles would not fit a small test image
        model, processor = family.build_tiny(tokenizer, image_size, shape.patch_size)
        return model.to(device=device, dtype=dtype).eval(), processor
    model, processor = family.build_tiny(tokenizer, image_size, shape.patch_size, **shape.tiny)
    for name, value in shape.image_processor.items():
        setattr(processor.image_processor, name, value)
    return on_device(type(model), reshaped(model.config, shape.config), device, dtype), processor
