"""LLaVA-OneVision (`llava_onevision`): SigLIP tower, any-resolution tiles plus the whole image (the
"anyres_max_9" rule caps how many tiles' features are kept), an image-newline token per row, Qwen2 decoder.

Its processor also takes video, which needs torchvision: where that is missing it loads without its video
part (models/image_only.py).
"""
from __future__ import annotations

from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessorPil,
                          LlavaOnevisionProcessor, Qwen2Config, SiglipVisionConfig)

from ..image_only import image_only
from ..registry import Family, register_family
from ..tiny import CHAT_TEMPLATE, decoder_sizes, tower_sizes, with_special_tokens
from .llava import PIXEL_NORM


@register_family
class LlavaOnevision(Family):
    model_type = "llava_onevision"
    video_processor_class = LlavaOnevisionProcessor

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, hidden: int = 32,
                   layers: int = 2, heads: int = 4, **_):
        tokenizer = with_special_tokens(tokenizer, named={"video_token": "<video>"})
        # two tile shapes, so an image picks its grid by aspect ratio as the real checkpoints do
        pinpoints = [[image_size, image_size], [image_size, 2 * image_size]]
        vision = SiglipVisionConfig(**tower_sizes(hidden, layers, heads, image_size, patch_size))
        text = Qwen2Config(**decoder_sizes(tokenizer, hidden, layers, heads), num_key_value_heads=heads // 2)
        config = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pinpoints,
                                      image_token_index=tokenizer.image_token_id,
                                      video_token_index=tokenizer.video_token_id, vision_feature_layer=-1,
                                      vision_feature_select_strategy="full", tie_word_embeddings=False)
        image_processor = LlavaOnevisionImageProcessorPil(size={"height": image_size, "width": image_size},
                                                          image_grid_pinpoints=pinpoints, **PIXEL_NORM)
        processor = image_only(LlavaOnevisionProcessor)(
            image_processor, tokenizer, chat_template=chat_template, num_image_tokens=(image_size // patch_size) ** 2,
            vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
        return LlavaOnevisionForConditionalGeneration(config), processor
