"""Asked-modality alignment of an audio-visual model: answer from the modality the question asks about.

    python recipes/align_omni.py                                    # the embedded AV organism
    python recipes/align_omni.py --config recipes/configs/qwen2.5-omni-7b-thinker.yaml
    python recipes/align_omni.py --launch recipes/accelerate_configs/zero2.yaml

Measures accuracy per condition x asked modality (aligned, misaligned, misleading text, long context, audio
removed, frames zeroed) and attention on frames vs sound per layer on held-out groups, trains a LoRA adapter
whose answer is the asked modality's class, and measures again with the same code. Flags are the fields of
AVAlignArguments, ModelArguments and transformers' TrainingArguments; YAML keys are the same names.
"""
import sys

from align.commands import align_av_main


def main(argv: list[str] | None = None) -> int:
    return align_av_main(argv, prog="recipes/align_omni.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
