"""LLaVA-1.6 / LLaVA-NeXT (`llava_next`): LLaVA with any-resolution image tiles."""
from __future__ import annotations

from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

from ..registry import Family, register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE
from .llava import clip_llama_configs, image_sizes

PINPOINTS_336 = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


@register_family
class LlavaNext(Family):
    model_type = "llava_next"
    # Mistral-7B's decoder (Llama's layers with 8 key-value heads) and LLaVA-1.5's tower; any-resolution tiles
    shape = ModelShape(
        "llava-hf/llava-v1.6-mistral-7b-hf", "recipes/configs/llava-1.6-mistral-7b.yaml", patch_size=14,
        parameters=7.567e9,
        config={"text_config": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                                "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32064,
                                "max_position_embeddings": 32768},
                "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                        "num_attention_heads": 16, "projection_dim": 768},
                "": {"image_grid_pinpoints": PINPOINTS_336}},
        image_processor={"image_grid_pinpoints": PINPOINTS_336})

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, **sizes):
        pinpoints = [[image_size, image_size]]
        config = LlavaNextConfig(image_grid_pinpoints=pinpoints,
                                 **clip_llama_configs(tokenizer, image_size, patch_size, **sizes))
        image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=pinpoints, **image_sizes(image_size))
        processor = LlavaNextProcessor(image_processor, tokenizer, patch_size=patch_size,
                                       vision_feature_select_strategy="default", chat_template=chat_template,
                                       num_additional_image_tokens=1)
        return LlavaNextForConditionalGeneration(config), processor
