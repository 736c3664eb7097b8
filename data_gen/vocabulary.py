"""Every text the datasets can produce, so an offline word-level tokenizer covers them all."""
from __future__ import annotations

from .attributes import MATERIALS, SOLIDS
from .colors import INSTRUCTION
from .palette import COLORS, NEUTRAL_OBJECTS, SHAPES, knowledge_base
from .tiers import ATTRIBUTE_TEXT_TIERS


def dataset_texts() -> list[str]:
    """Templates and word lists of the colour and attribute tasks (words, not whole sentences)."""
    return [INSTRUCTION, "What color is the ? The is . 's color is the same as a an object",
            "There is ; on the left right of the", *COLORS, *SHAPES, *NEUTRAL_OBJECTS, *knowledge_base(),
            *MATERIALS, *SOLIDS, *ATTRIBUTE_TEXT_TIERS]
