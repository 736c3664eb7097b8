"""Asked-modality alignment of an audio-visual model: answer from the modality the question asks about.

    accelerate launch recipes/align_omni.py                                    # the embedded AV organism
    accelerate launch recipes/align_omni.py --config recipes/configs/qwen2.5-omni-7b-thinker.yaml
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml recipes/align_omni.py

Measures accuracy per condition x asked modality (aligned, misaligned, misleading text, long context, audio
removed, frames zeroed) and attention on frames vs sound per layer on held-out groups, trains a LoRA adapter
whose answer is the asked modality's class, and measures again with the same code. Flags are the fields of
AVAlignArguments, ModelArguments and transformers' TrainingArguments; YAML keys are the same names.
"""
import logging
import sys

from transformers import TrainingArguments

from align.arguments import AV_TRAINING_DEFAULTS, AVAlignArguments
from align.av_recipe import describe_change, run_av_alignment
from data_gen.cli import parse, usage_error
from models import ModelArguments


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        align, model, training = parse([AVAlignArguments, ModelArguments, TrainingArguments], argv,
                                       "recipes/align_omni.py", __doc__,
                                       {**AV_TRAINING_DEFAULTS, "model_name_or_path": "organism:av"})
        result = run_av_alignment(align, model, training)
    except (ValueError, OSError) as e:
        return usage_error(e)
    if result:
        print("accuracy against the asked modality's class, both questions pooled (base -> aligned):")
        print(describe_change(result["change"]))
        print(f"release bundle (adapter, model card, report) in {result['release']} ({result['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
