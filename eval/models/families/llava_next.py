"""LLaVA-1.6 / LLaVA-NeXT (`llava_next`): LLaVA with any-resolution image tiles."""
from __future__ import annotations

from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

from ..registry import Family, register_family
from ..tiny import CHAT_TEMPLATE
from .llava import clip_llama_configs, image_sizes


@register_family
class LlavaNext(Family):
    model_type = "llava_next"

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, **sizes):
        pinpoints = [[image_size, image_size]]
        config = LlavaNextConfig(image_grid_pinpoints=pinpoints,
                                 **clip_llama_configs(tokenizer, image_size, patch_size, **sizes))
        image_processor = LlavaNextImageProcessorPil(image_grid_pinpoints=pinpoints, **image_sizes(image_size))
        processor = LlavaNextProcessor(image_processor, tokenizer, patch_size=patch_size,
                                       vision_feature_select_strategy="default", chat_template=chat_template,
                                       num_additional_image_tokens=1)
        return LlavaNextForConditionalGeneration(config), processor
