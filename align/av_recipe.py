"""Asked-modality alignment of an audio-visual model (recipes/align_omni.py): the alignment loop (align/recipe.py) on
the `av` task with the `asked` method, after checking that the model reads audio."""
from __future__ import annotations

from transformers import TrainingArguments

from eval.models import ModelArguments, family_for

from .arguments import AVAlignArguments, check_inputs
from .recipe import Recipe


def run_av_alignment(align: AVAlignArguments, model: ModelArguments, training: TrainingArguments) -> dict | None:
    model_type = check_inputs(align, model, training)
    if not family_for(model_type).reads_audio:
        raise ValueError(f"{model.model_name_or_path} ({model_type}) reads no audio; asked-modality alignment needs a "
                         f"family that does: a Qwen2.5-Omni thinker, or the embedded organism:av")
    return Recipe(align, model, training).run()
