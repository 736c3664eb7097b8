"""`prompt`: an instruction that names the modality to trust, put before the question of every image + text prompt.
Nothing is trained. The instruction follows the side b* lies on from the base's balance point (the text's when b* is
above it); where it lands is measured, not aimed."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from data_gen.files import write_json

from . import TrainingFree, register_method

log = logging.getLogger(__name__)
INSTRUCTION_FILE = "instruction.json"


@dataclass
class PromptConfig:
    # MC²'s instructions (arXiv 2505.20977)
    instruction_text: str = field(default=(
        "In case there is an inconsistency between the text context and the image content, you should follow the "
        "text context rather than the image content."), metadata={"help": "the instruction of method prompt toward the text"})
    instruction_image: str = field(default=(
        "In case there is an inconsistency between the text context and the image content, you should follow the "
        "image content rather than the text context."), metadata={"help": "the instruction of method prompt toward the image"})


def save_instruction(folder: Path, instruction: str, follow: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / INSTRUCTION_FILE, {"instruction": instruction, "follow": follow})
    return folder


def load_instruction(folder: Path) -> str:
    return json.loads((Path(folder) / INSTRUCTION_FILE).read_text())["instruction"]


@register_method
class PromptInstruction(TrainingFree):
    name = "prompt"
    help = "an instruction naming the modality to trust before each image + text question (no training)"
    config_class = PromptConfig
    intervention = "instruction"

    def fit(self, recipe, base, views, before, target):
        a = recipe.align
        current = before[recipe.primary.name].analysis["balance_point"]["estimate"]
        side = before[recipe.primary.name].analysis["balance_point"]["side"]
        follow = "text" if (target > current if current is not None else side != "text") else "image"
        instruction = a.instruction_text if follow == "text" else a.instruction_image
        tokens = {s: base.tokenizer(i, add_special_tokens=False)["input_ids"]
                  for s, i in (("text", a.instruction_text), ("image", a.instruction_image))}
        stats = {"instruction": instruction, "follow": follow, "instruction_tokens": len(tokens[follow]),
                 "unknown_tokens": sum(t == base.tokenizer.unk_token_id for t in tokens[follow])}
        if tokens["text"] == tokens["image"]:
            log.warning("%s's tokenizer reads the two instructions as the same tokens (%d of %d unknown): the "
                        "prompt cannot tell this model which modality to trust", base.name, stats["unknown_tokens"],
                        len(tokens[follow]))
            stats["instructions_differ"] = False
        log.info("2/5 no training: the image + text prompts get the instruction to follow the %s", follow)
        return stats, [], save_instruction(recipe.out / "instruction", instruction, follow)
