"""LLaVA-1.5 (`llava`): CLIP tower + projector + Llama-style decoder."""
from __future__ import annotations

from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

from ..registry import Family, register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE

PIXEL_NORM = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def clip_llama_configs(tokenizer, image_size: int, patch_size: int, hidden: int = 32, layers: int = 2,
                       heads: int = 4, vision_hidden: int | None = None, vision_layers: int | None = None,
                       max_positions: int = 512, mlp_ratio: int = 4, vision_feature_layer: int = -2) -> dict:
    """The sub-configs and image settings every LLaVA-style tiny model shares."""
    vision_hidden = vision_hidden or hidden
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=mlp_ratio * vision_hidden,
                              num_hidden_layers=vision_layers or layers, num_attention_heads=heads,
                              image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=mlp_ratio * hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False)
    return dict(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                vision_feature_layer=vision_feature_layer, vision_feature_select_strategy="default",
                image_seq_length=(image_size // patch_size) ** 2, tie_word_embeddings=False)


def image_sizes(image_size: int) -> dict:
    return dict(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}, **PIXEL_NORM)


@register_family
class Llava(Family):
    model_type = "llava"
    shape = ModelShape(
        "llava-hf/llava-1.5-7b-hf", "recipes/configs/llava-1.5-7b.yaml", patch_size=14, parameters=7.063e9,
        config={"text_config": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                                "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                                "max_position_embeddings": 4096},
                "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                        "num_attention_heads": 16, "projection_dim": 768}})
    reuses_image_features = True  # one fixed-size image per prompt: the organism's text-first prompts use it

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, **sizes):
        model = LlavaForConditionalGeneration(LlavaConfig(**clip_llama_configs(tokenizer, image_size, patch_size, **sizes)))
        return model, llava_processor(tokenizer, image_size, patch_size, chat_template)


def llava_processor(tokenizer, image_size: int, patch_size: int, chat_template: str = CHAT_TEMPLATE) -> LlavaProcessor:
    return LlavaProcessor(CLIPImageProcessorPil(**image_sizes(image_size)), tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", chat_template=chat_template,
                          num_additional_image_tokens=1)
