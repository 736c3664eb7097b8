"""`hard`: plain SFT (TRL's SFTTrainer) on answers drawn from p*: each conflict is labelled with the text's answer
with probability p*(x), else the image's."""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig, SFTTrainer

from ..training import trl_dataset
from . import Method, register_method


@dataclass
class HardTargetConfig(SFTConfig):
    max_length: int | None = field(default=None, metadata={"help": "prompts are never truncated: None"})


@register_method
class HardTargets(Method):
    name = "hard"
    help = "TRL SFTTrainer on answers drawn from p*"
    config_class = HardTargetConfig
    examples = "hard"

    def build_trainer(self, model, lora, args, examples, vlm, data, collator):
        return SFTTrainer(model=model, args=args, train_dataset=trl_dataset(examples, vlm, data, "hard"),
                          processing_class=vlm.processor, peft_config=lora)
