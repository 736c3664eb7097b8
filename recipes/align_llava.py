"""Move a VLM's balance point with uncertainty-aware LoRA, proven by the same measurement code.

    python recipes/align_llava.py                                  # the embedded model organism
    python recipes/align_llava.py --config recipes/configs/llava-1.5-7b.yaml
    python recipes/align_llava.py --launch recipes/accelerate_configs/zero2.yaml --target_balance_point 0.5

Flags are the fields of AlignArguments (the method), ModelArguments (the model) and transformers'
TrainingArguments; YAML keys are the same names, and the command line wins over the YAML.
"""
import sys

from align.commands import align_main


def main(argv: list[str] | None = None) -> int:
    return align_main(argv, prog="recipes/align_llava.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
