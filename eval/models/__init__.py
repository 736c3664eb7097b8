"""Model access at the bottom of the stack: `eval/` and `align/` import it; it imports neither.

    from eval.models import load_vlm
    vlm = load_vlm("organism")            # or a hub id / local path; adapter="DIR_OR_HUB_ID"
"""
from __future__ import annotations

import importlib

from .arguments import ModelArguments

# name -> the module that defines it, imported on first use (torch and transformers load only when a model does)
_LAZY = {**{name: ".registry" for name in ("LANGUAGE_LORA_REGEX", "Family", "family_for", "register_family",
                                           "supported_families")},
         **{name: ".vlm" for name in ("ORGANISM_NAMES", "VLM", "load_from_args", "load_vlm", "organism_path")}}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["VLM", "Family", "LANGUAGE_LORA_REGEX", "ModelArguments", "ORGANISM_NAMES", "family_for", "load_from_args",
           "load_vlm", "organism_path", "register_family", "supported_families"]
