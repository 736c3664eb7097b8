"""Model families: how the framework reads one architecture, registered by `config.model_type`.

A family says how to build the three scoring conditions' chat messages, where the logit lens
reads (decoder layers, final norm, output head), which modules LoRA may touch, and how to build
a tiny random model + processor offline for tests. Adding a family means adding one file to
`eval/models/families/` that defines a `Family` subclass decorated with `@register_family`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from transformers import AutoProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from data_gen.registry import Registry

from .image_only import image_only, video_capable
from .shapes import ModelShape, build_shape

# PEFT matches a string with re.fullmatch: the language model's projections only, never the
# vision tower or the projector (PEFT's "all-linear" would hit both).
LANGUAGE_LORA_REGEX = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"

class Family(ABC):
    """Defaults fit decoder-only VLMs whose `get_decoder()` has `.layers` and `.norm` (LLaVA and most others)."""

    model_type: ClassVar[str]
    lora_target_modules: ClassVar[str] = LANGUAGE_LORA_REGEX
    # the processor class of a family that also takes video: loaded without its video part where torchvision is
    # missing (eval/models/image_only.py); None: AutoProcessor reads the folder everywhere
    video_processor_class: ClassVar[type | None] = None

    def load_processor(self, path: str, **kwargs):
        if self.video_processor_class is not None and not video_capable():
            return image_only(self.video_processor_class).from_pretrained(path, **kwargs)
        return AutoProcessor.from_pretrained(path, **kwargs)

    # ---- the logit lens reads these three (docs/method.md, "Layer-wise oscillation")
    def decoder_layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        return model.get_decoder().layers

    def final_norm(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.get_decoder().norm

    def output_head(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.get_output_embeddings()

    # ---- attention imbalance reads each decoder layer's attention (weights, v_proj, o_proj, head_dim)
    def attention_modules(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return [layer.self_attn for layer in self.decoder_layers(model)]

    # ---- shared image prefixes (eval/prefix.py): a plain causal mask over position ids lets an image's prefix
    # run once and every prompt's suffix continue over its KV cache
    shares_image_prefix: ClassVar[bool] = True

    def image_placeholder(self, processor) -> str:
        """The token the chat template writes for an image and the processor expands into the image's tokens."""
        return processor.image_token

    def image_block_end(self, processor) -> str:
        """The token that closes an image in the prompt, where the shared prefix ends: the placeholder itself, or
        an end-of-image token the model's positions count on (Qwen2.5-Omni's)."""
        return self.image_placeholder(processor)

    # ---- one vision-tower pass per image where whole prompts run (eval/scoring.py): prompts about one image (its
    # image-only prompt and each text tier's) take that image's features, computed once
    reuses_image_features: ClassVar[bool] = False

    def image_features(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Each image's features as the model's forward would place them at its image tokens."""
        return list(model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output)

    def with_image_features(self, batch: dict, features: list[torch.Tensor]) -> dict:
        """`batch` (one image per row) with its pixel values replaced by each row's precomputed features."""
        encoded = BaseModelOutputWithPooling(pooler_output=self.pooled(features))
        return {**{k: v for k, v in batch.items() if k != "pixel_values"}, "mm_encoder_outputs": {"image": encoded}}

    def pooled(self, features: list[torch.Tensor]):
        """The form the forward takes `mm_encoder_outputs["image"].pooler_output` in: a list of per-image
        sequences (LLaVA's)."""
        return features

    # ---- whole-answer continuations over the prompt's KV cache (eval/scoring.py)
    def next_positions(self, model: torch.nn.Module, batch: dict) -> torch.Tensor | None:
        """Per row, the position id of the first token after the prompt, where the model's default for a
        continuation (the cache length) is wrong, as with multimodal RoPE; None where the default is right."""
        return None

    # ---- prompts
    def messages(self, question: str, context: str = "", with_image: bool = True) -> list[dict]:
        """One user turn of a scoring condition; the chat template decides where the image goes."""
        text = f"{context} {question}".strip() if context else question
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        return [{"role": "user", "content": content}]

    # ---- audio-visual rows (data_gen/av.py): a clip's frames as images, its sound, then the text
    reads_audio: ClassVar[bool] = False

    def av_messages(self, question: str, frames: int, with_audio: bool, caption: str = "",
                    appendix: str = "") -> list[dict]:
        if not self.reads_audio:
            raise ValueError(f"the {self.model_type} family reads no audio; audio-visual conflicts need a family that "
                             f"does (qwen2_5_omni_thinker)")
        text = " ".join(t for t in (caption, question, appendix) if t)
        content = [{"type": "image"}] * frames + ([{"type": "audio"}] if with_audio else []) + [
            {"type": "text", "text": text}]
        return [{"role": "user", "content": content}]

    # ---- offline test models: every family has one, so the tests cover every family
    @abstractmethod
    def build_tiny(self, tokenizer, image_size: int, patch_size: int, **sizes) -> tuple[torch.nn.Module, object]:
        """A random model of this family and its processor, built without a download."""

    # ---- the recipe config's checkpoint with random weights (recipes/gpu_figures.py): its config's sizes
    shape: ClassVar[ModelShape | None] = None

    def build_shape(self, tokenizer, image_size: int, device, dtype: torch.dtype, tiny: bool = False):
        """(model, processor) of `shape` at `image_size`, random weights, built on `device` in `dtype`; `tiny`: the
        tiny model through the same code."""
        return build_shape(self, tokenizer, image_size, device, dtype, tiny)


FAMILY_REGISTRY = Registry("model family", "eval.models.families", key="model_type", unknown=(
    "architecture {name!r} is not supported yet; supported: {names}. Add a family module to eval/models/families/ "
    "to support it."))
FAMILIES: dict[str, type[Family]] = FAMILY_REGISTRY.units
register_family = FAMILY_REGISTRY.register
_discover = FAMILY_REGISTRY.discover
supported_families = FAMILY_REGISTRY.names


def family_for(model_type: str) -> Family:
    return FAMILY_REGISTRY.get(model_type)
