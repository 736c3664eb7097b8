"""The model organism: a tiny real LLaVA trained from scratch on the project's own data.

    python -m align.organism build --output_dir DIR [--preference text|vision|none]
    python -m align.organism evaluate [--model organism:vision] [--output_dir DIR]

It is a `LlavaForConditionalGeneration` (small CLIP tower, small Llama decoder) with a word-level
tokenizer and a `LlavaProcessor`, so it runs exactly the code path of real checkpoints, with
graded uncertainty on both sides built in (docs/method.md, "The model organism"). The shipped
builds live in `eval/models/organisms/` and load as `organism` / `organism:text` / `organism:vision`.

config.py: the build configuration; mixture.py: the training data mixture and the planted
preference; shape_pretraining.py: phase 0; build.py: the training phases; quality.py: quality bars.
"""
from .build import build
from .config import PLANTED_BALANCE, OrganismConfig
from .quality import evaluate, quality_bars

__all__ = ["OrganismConfig", "PLANTED_BALANCE", "build", "evaluate", "quality_bars"]
