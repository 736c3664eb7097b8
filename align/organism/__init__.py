"""The model organism: a tiny real LLaVA trained from scratch on the project's own data.

    python -m align.organism build --output_dir DIR [--preference text|vision|none]
    python -m align.organism evaluate [--model organism:vision] [--output_dir DIR]

It is a `LlavaForConditionalGeneration` (small CLIP tower, small Llama decoder) with a word-level
tokenizer and a `LlavaProcessor`, so it runs exactly the code path of real checkpoints, with
graded uncertainty on both sides built in (docs/method.md, "The model organism"). The shipped
builds live in `eval/models/organisms/` and load as `organism` / `organism:text` / `organism:vision`.

config.py: the build configurations; mixture.py: the training data mixture and the planted
preference; shape_pretraining.py: phase 0; build.py: the training phases; quality.py: quality bars.
"""
from .config import PLANTED_BALANCE, OrganismConfig


def __getattr__(name: str):
    """The builder and the quality bars load on first use (they import torch and transformers)."""
    if name == "build":
        from .build import build  # importing the submodule binds its name here: the function takes it back
        globals()["build"] = build
        return build
    if name in ("evaluate", "quality_bars"):
        from . import quality
        return getattr(quality, name)
    raise AttributeError(f"module 'align.organism' has no attribute {name!r}")


__all__ = ["OrganismConfig", "PLANTED_BALANCE", "build", "evaluate", "quality_bars"]
