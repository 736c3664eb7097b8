"""`soft`: soft-target cross-entropy toward p*(x) = sigmoid((b* - dH_rel) / tau), boundary cases weighted most,
with a retention term on unimodal rows (docs/method.md, "Alignment")."""
from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..training import ExampleDataset, SoftTargetTrainer
from . import Method, register_method


@dataclass
class SoftTargetConfig(TrainingArguments):
    retention_weight: float = field(default=1.0, metadata={"help": "weight of the retention term"})
    retention: str = field(default="distill", metadata={
        "help": "distill: keep the base's unimodal answer distributions | answer: train the unimodal answers"})


def soft_trainer(model, lora, args: SoftTargetConfig, examples: list[dict], collator) -> SoftTargetTrainer:
    from peft import get_peft_model
    model = get_peft_model(model, lora)
    if args.activation_checkpointing:
        model.enable_input_require_grads()  # PEFT + reentrant checkpointing needs grads on the inputs
    return SoftTargetTrainer(model=model, args=args, train_dataset=ExampleDataset(examples), data_collator=collator,
                             retention_weight=args.retention_weight, retention=args.retention)


class SoftTrained(Method):
    """A method whose examples the soft-target trainer trains (what differs is which examples)."""
    config_class = SoftTargetConfig

    def own_fields(self, align) -> dict:
        return {"retention_weight": align.retention_weight, "retention": align.retention}

    def build_trainer(self, model, lora, args, examples, vlm, data, collator):
        return soft_trainer(model, lora, args, examples, collator)


@register_method
class SoftTargets(SoftTrained):
    name = "soft"
    help = "SoftTargetTrainer: cross-entropy to p* on the answer token, boundary-weighted, with retention"
