"""Gemma 3 (`gemma3`): SigLIP tower, pooled to a fixed number of soft tokens, Gemma 3 decoder with
sliding-window layers; image tokens attend to each other bidirectionally (the processor's token_type_ids).

Quirks the lens checks cover: the final norm is Gemma's (1 + weight) RMSNorm, and the conditional-generation
class applies no final logit soft-capping even where the text config names one (transformers 5.23), so neither
does the lens; the tiny model sets a cap so the contract test would see a change.
"""
from __future__ import annotations

import torch
from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor,
                          Gemma3TextConfig, SiglipVisionConfig)

from ..registry import Family, register_family
from ..shapes import ModelShape
from ..tiny import CHAT_TEMPLATE, decoder_sizes, tower_sizes, with_special_tokens
from .llava import PIXEL_NORM

IMAGE_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}


@register_family
class Gemma3(Family):
    model_type = "gemma3"
    # 34 layers, every sixth global; SigLIP-so400m at 896 px pooled to 256 soft tokens
    shape = ModelShape(
        "google/gemma-3-4b-it", "recipes/configs/gemma-3-4b-it.yaml", patch_size=14, parameters=4.300e9,
        config={"text_config": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                                "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                                "vocab_size": 262208, "sliding_window": 1024, "query_pre_attn_scalar": 256,
                                "max_position_embeddings": 131072},
                "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                                  "num_attention_heads": 16, "vision_use_head": False},
                "": {"tie_word_embeddings": True}},  # the head is the embedding
        tiny={"soft_tokens": 256})
    # sliding-window layers count keys by cache slot, not position (a padded suffix would shift the window), and
    # image tokens attend bidirectionally: the whole prompt runs every time
    shares_image_prefix = False
    reuses_image_features = True  # the tower is independent of the text, though the decoder's prompts are not

    def pooled(self, features):
        return torch.stack(features)  # one (images, tokens, dim) tensor

    def build_tiny(self, tokenizer, image_size, patch_size, chat_template=CHAT_TEMPLATE, hidden: int = 32,
                   layers: int = 2, heads: int = 4, soft_tokens: int = 4, **_):
        tokenizer = with_special_tokens(tokenizer, named=IMAGE_TOKENS)
        vision = SiglipVisionConfig(**tower_sizes(hidden, layers, heads, image_size, patch_size))
        text = Gemma3TextConfig(**decoder_sizes(tokenizer, hidden, layers, heads), num_key_value_heads=heads // 2,
                                head_dim=hidden // heads, sliding_window=16, final_logit_softcapping=30.0)
        config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=soft_tokens,
                              boi_token_index=tokenizer.boi_token_id, eoi_token_index=tokenizer.eoi_token_id,
                              image_token_index=tokenizer.image_token_id, tie_word_embeddings=False)
        image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}, **PIXEL_NORM)
        # Gemma's template marks an image with its begin-of-image token; the processor expands it
        processor = Gemma3Processor(image_processor, tokenizer, image_seq_length=soft_tokens,
                                    chat_template=chat_template.replace("<image>", IMAGE_TOKENS["boi_token"]))
        return Gemma3ForConditionalGeneration(config), processor
