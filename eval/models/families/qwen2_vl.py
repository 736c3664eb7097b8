"""Qwen2-VL (`qwen2_vl`): a ViT at native resolution (dynamic grids, `image_grid_thw`), 2x2 patch merger,
Qwen2 decoder with multimodal RoPE.

Quirks: positions are 3-D (time, height, width) for image tokens, and text after an image continues from the
image's largest position, not from the token count; so whole-answer continuations over the KV cache get their
positions from the model's own `get_rope_index` (`next_positions`). The processor also takes video, which
needs torchvision: where that is missing it loads without its video part (models/image_only.py).
"""
from __future__ import annotations

import torch
from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor)

from ..image_only import image_only
from ..registry import Family, register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE, decoder_sizes, with_special_tokens
from .llava import PIXEL_NORM

IMAGE_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
IMAGE_MARKER = "<|vision_start|><|image_pad|><|vision_end|>"  # as Qwen's chat template writes an image
# the 7B checkpoints' decoder (Qwen2-7B's sizes, M-RoPE over 128-wide heads)
QWEN2_7B_DECODER = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                    "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
                    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}}


def rope_positions(model: torch.nn.Module, batch: dict, rope_index=None) -> torch.Tensor:
    """Per row, the position id after the prompt: one past the largest M-RoPE position (an image's grid makes its
    tokens share positions), or the padded length for text-only prompts, whose positions count every token.
    `rope_index(base_model, batch)`: the model's own position ids (default: Qwen-VL's `get_rope_index`)."""
    if batch.get("image_grid_thw") is None and batch.get("input_features") is None:
        return torch.full((batch["input_ids"].shape[0],), batch["input_ids"].shape[1], device=batch["input_ids"].device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a PEFT adapter
    positions = (rope_index or vl_rope_index)(base, batch)
    return positions.amax(dim=(0, 2)) + 1


def vl_rope_index(base: torch.nn.Module, batch: dict) -> torch.Tensor:
    return base.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
                                     attention_mask=batch["attention_mask"])[0]


def tiny_qwen_parts(tokenizer, image_size: int, patch_size: int, chat_template: str, processor_class: type,
                    hidden: int, heads: int):
    """Tokenizer with Qwen's vision tokens, the decoder fields, and the processor every tiny Qwen-VL shares."""
    tokenizer = with_special_tokens(tokenizer, named=IMAGE_TOKENS)
    merged = 2 * patch_size  # the processor resizes to multiples of patch x merge; these images keep their size
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                               min_pixels=merged * merged, max_pixels=4 * image_size * image_size,
                                               **PIXEL_NORM)
    processor = image_only(processor_class)(image_processor, tokenizer,
                                            chat_template=chat_template.replace("<image>", IMAGE_MARKER))
    # head dim 8: M-RoPE splits its 4 frequencies over time, height and width
    text = dict(**decoder_sizes(tokenizer, hidden, 2, heads), num_key_value_heads=heads // 2,
                rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0})
    tokens = dict(image_token_id=tokenizer.image_token_id, video_token_id=tokenizer.video_token_id,
                  vision_start_token_id=tokenizer.vision_start_token_id,
                  vision_end_token_id=tokenizer.vision_end_token_id)
    return processor, text, tokens


@register_family
class Qwen2VL(Family):
    model_type = "qwen2_vl"
    shape = ModelShape(
        "Qwen/Qwen2-VL-7B-Instruct", "recipes/configs/qwen2.5-vl-7b-instruct.yaml", patch_size=14,
        parameters=8.291e9,
        config={"text_config": QWEN2_7B_DECODER,
                "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16,
                                  "mlp_ratio": 4}})
    video_processor_class = Qwen2VLProcessor

    def next_positions(self, model, batch):
        return rope_positions(model, batch)

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, hidden: int = 32,
                   heads: int = 4, **_):
        processor, text, tokens = tiny_qwen_parts(tokenizer, image_size, patch_size, chat_template,
                                                  Qwen2VLProcessor, hidden, heads)
        vision = dict(depth=2, embed_dim=hidden, hidden_size=hidden, num_heads=heads, patch_size=patch_size,
                      spatial_merge_size=2, temporal_patch_size=2)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
        return Qwen2VLForConditionalGeneration(config), processor
