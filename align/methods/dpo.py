"""`dpo`: preference pairs (TRL's DPOTrainer), chosen = the answer of the modality p* favours; the reference is the
base (the adapter switched off)."""
from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer

from ..training import trl_dataset
from . import Method, register_method


@dataclass
class PreferencePairConfig(DPOConfig):
    max_length: int | None = field(default=None, metadata={"help": "prompts are never truncated: None"})


@register_method
class PreferencePairs(Method):
    name = "dpo"
    help = "TRL DPOTrainer on preference pairs (chosen = the target modality's answer)"
    config_class = PreferencePairConfig

    def own_fields(self, align) -> dict:
        return {"beta": align.dpo_beta}

    def build_trainer(self, model, lora, args, examples, vlm, data, collator):
        return DPOTrainer(model=model, args=args, train_dataset=trl_dataset(examples, vlm, data, "dpo"),
                          processing_class=vlm.processor, peft_config=lora)
