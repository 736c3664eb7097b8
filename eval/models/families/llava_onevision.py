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
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE, decoder_sizes, tower_sizes, with_special_tokens
from .llava import PIXEL_NORM

PINPOINTS_384 = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]


@register_family
class LlavaOnevision(Family):
    model_type = "llava_onevision"
    # Qwen2-7B's decoder, SigLIP-so400m's tower without its last layer; tiles of 384 px up to 6 x 6
    shape = ModelShape(
        "llava-hf/llava-onevision-qwen2-7b-ov-hf", "recipes/configs/llava-onevision-qwen2-7b.yaml", patch_size=14,
        parameters=8.031e9,
        config={"text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                                "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152128,
                                "max_position_embeddings": 32768, "rope_theta": 1e6},
                "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26,
                                  "num_attention_heads": 16, "vision_use_head": False},
                "": {"image_grid_pinpoints": PINPOINTS_384}},
        image_processor={"image_grid_pinpoints": PINPOINTS_384})
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
