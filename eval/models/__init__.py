"""Model access at the bottom of the stack: `eval/` and `align/` import it; it imports neither.

    from eval.models import load_vlm
    vlm = load_vlm("organism")            # or a hub id / local path; adapter="DIR_OR_HUB_ID"
"""
from .registry import LANGUAGE_LORA_REGEX, Family, family_for, register_family, supported_families
from .vlm import ORGANISM_NAMES, VLM, ModelArguments, load_from_args, load_vlm, organism_path

__all__ = ["VLM", "Family", "LANGUAGE_LORA_REGEX", "ModelArguments", "ORGANISM_NAMES", "family_for", "load_from_args",
           "load_vlm", "organism_path", "register_family", "supported_families"]
