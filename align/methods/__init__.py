"""Alignment methods: how an adapter is trained on the recipe's examples, registered by name.

A method is one module here: its config dataclass (TRL-style: it extends `TrainingArguments` or a TRL config
with the method's own fields) and a `Method` subclass decorated with `@register_method` that builds the
trainer. The recipe (align/recipe.py) builds the examples, the LoRA config and the training arguments, and reads
a method only through this interface.
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from transformers import TrainingArguments

from data_gen.registry import Registry

class Method(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    config_class: ClassVar[type[TrainingArguments]]
    # the examples the recipe builds: "soft" (p* and boundary weights), "hard" (answers drawn from p*), or
    # "mixed" (modality-mixed recognition instances)
    examples: ClassVar[str] = "soft"
    # the tasks it trains; None: every task with a balance point
    tasks: ClassVar[tuple[str, ...] | None] = None
    # what it releases: "adapter" (LoRA weights), "steering" (a vector, eval/models/steering.py) or "instruction" (a
    # prompt); the last two train nothing (`fit`)
    intervention: ClassVar[str] = "adapter"

    @property
    def aims_balance_point(self) -> bool:
        """It moves the balance point toward b*: the recipe resolves b* and reports the guarantee against it (and,
        for the trained ones, computes targets p* and calibrates the training toward b*)."""
        return self.examples in ("soft", "hard", "blind") or self.intervention != "adapter"

    def training_examples(self, recipe, base, views: dict) -> tuple[list[dict], dict, Any]:
        """For a method that does not aim a balance point: (examples, their counts, the dataset their images or clips
        come from), built from the recipe's data `views` (task name -> dataset) and the loaded base model."""
        raise ValueError(f"method {self.name!r} builds no examples of its own: it trains on the targets the recipe "
                         f"computes toward b* (aims_balance_point)")

    def collator(self, vlm, data, dtype, align):
        """What turns examples into batches for the soft loss (the TRL methods build their own)."""
        from ..training import AlignmentCollator
        return AlignmentCollator(vlm, data, dtype, reference_inputs=align.retention == "distill")

    def own_fields(self, align) -> dict[str, Any]:
        """The method's own config fields, read from the recipe's arguments (AlignArguments)."""
        return {}

    def config(self, training: TrainingArguments, align) -> TrainingArguments:
        """The method's config: every TrainingArguments field of `training` plus the method's own."""
        common = {f.name: getattr(training, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
        return self.config_class(**common, **self.own_fields(align))

    def fit(self, recipe, base, views: dict, before: dict, target: float) -> tuple[dict, list[dict], Any]:
        """For a method that trains nothing: (what it used, its calibration rounds, the folder of what it
        releases), from the loaded base, the recipe's data `views` and the base's measurements `before`."""
        raise ValueError(f"method {self.name!r} trains an adapter; the recipe trains it")

    @abstractmethod
    def build_trainer(self, model, lora, args: TrainingArguments, examples: list[dict], vlm, data, collator):
        """A transformers/TRL trainer of a LoRA adapter (`lora`, a peft LoraConfig) on `model` over `examples`.
        `vlm` is the loaded base (processor, prompts), `data` the dataset the examples' images come from, and
        `collator` the recipe's batch builder for the soft loss."""


class TrainingFree(Method):
    """A method that changes how the base is run, not its weights."""
    examples = "none"

    def build_trainer(self, model, lora, args, examples, vlm, data, collator):
        raise ValueError(f"method {self.name!r} trains nothing")

    @abstractmethod
    def fit(self, recipe, base, views: dict, before: dict, target: float) -> tuple[dict, list[dict], Any]: ...


METHOD_REGISTRY = Registry("method", "align.methods", unknown="method {name!r} is not available; use one of {names}")
METHODS: dict[str, type[Method]] = METHOD_REGISTRY.units
register_method = METHOD_REGISTRY.register
_discover = METHOD_REGISTRY.discover
supported_methods = METHOD_REGISTRY.names


def get_method(name: str) -> Method:
    return METHOD_REGISTRY.get(name)
