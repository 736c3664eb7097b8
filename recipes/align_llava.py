"""Move a VLM's balance point with uncertainty-aware LoRA, proven by the same measurement code.

    accelerate launch recipes/align_llava.py                                  # the embedded model organism
    accelerate launch recipes/align_llava.py --config recipes/configs/llava-1.5-7b.yaml
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml recipes/align_llava.py --target_balance_point 0.5

Flags are the fields of AlignArguments (the method), ModelArguments (the model) and transformers'
TrainingArguments; YAML keys are the same names, and the command line wins over the YAML.
"""
import logging
import sys

from transformers import TrainingArguments

from align.arguments import TRAINING_DEFAULTS, AlignArguments
from align.recipe import run_alignment
from data_gen.cli import parse, usage_error
from models import ModelArguments


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        align, model, training = parse([AlignArguments, ModelArguments, TrainingArguments], argv,
                                       "recipes/align_llava.py", __doc__, TRAINING_DEFAULTS)
        result = run_alignment(align, model, training)
    except (ValueError, OSError) as e:
        return usage_error(e)
    if result:
        b, a = result["base"]["balance_point"], result["aligned"]["balance_point"]
        print(f"balance point: {b['description']} -> {a['description']} (target {result['target_balance_point']:+.2f})")
        if "guarantee" in result:
            print(result["guarantee"]["description"])
        print(f"release bundle (adapter, model card, report) in {result['release']} ({result['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
