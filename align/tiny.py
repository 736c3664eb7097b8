"""Offline builders for small LLaVA-family models: word-level tokenizer, processor, config.

Used by the model organism (align/organism.py) and by the tests' tiny random fixtures, so
every architecture is exercised with the real transformers classes and no download.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration,
                          LlavaNextImageProcessorPil, LlavaNextProcessor, LlavaProcessor, PreTrainedTokenizerFast)

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
# Vicuna-style turns (as LLaVA-1.5): the prompt ends with "ASSISTANT:" and the answer follows.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
_WORD = re.compile(r"\w+|[^\w\s]+")


def words_of(texts: Iterable[str]) -> list[str]:
    return sorted({w for t in texts if t for w in _WORD.findall(t)})


# The organism's own template puts the question before the image, so the image tokens can
# attend to the asked shape (a causal decoder cannot look ahead); the content list the code
# builds is the same for every model, only this template orders it.
ORGANISM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for w in sorted(set(words) | {"USER", "ASSISTANT", ":"}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", extra_special_tokens={"image_token": "<image>"}, padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(arch: str, tokenizer, image_size: int, patch_size: int, chat_template: str = CHAT_TEMPLATE):
    norm = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    if arch == "llava":
        ip = CLIPImageProcessorPil(size=size, crop_size=crop, **norm)
        return LlavaProcessor(ip, tokenizer, patch_size=patch_size, vision_feature_select_strategy="default",
                              chat_template=chat_template, num_additional_image_tokens=1)
    if arch == "llava_next":
        ip = LlavaNextImageProcessorPil(size=size, crop_size=crop, image_grid_pinpoints=[[image_size, image_size]], **norm)
        return LlavaNextProcessor(ip, tokenizer, patch_size=patch_size, vision_feature_select_strategy="default",
                                  chat_template=chat_template, num_additional_image_tokens=1)
    raise ValueError(f"unknown architecture {arch!r}; use 'llava' or 'llava_next'")


def build_model(arch: str, tokenizer, image_size: int, patch_size: int, hidden: int = 32, layers: int = 2,
                heads: int = 4, vision_hidden: int | None = None, vision_layers: int | None = None,
                max_positions: int = 512, mlp_ratio: int = 4, vision_feature_layer: int = -2):
    vision_hidden = vision_hidden or hidden
    vision = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=mlp_ratio * vision_hidden,
                              num_hidden_layers=vision_layers or layers, num_attention_heads=heads,
                              image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=mlp_ratio * hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False)
    common = dict(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                  vision_feature_layer=vision_feature_layer, vision_feature_select_strategy="default",
                  image_seq_length=(image_size // patch_size) ** 2, tie_word_embeddings=False)
    if arch == "llava":
        return LlavaForConditionalGeneration(LlavaConfig(**common))
    if arch == "llava_next":
        cfg = LlavaNextConfig(image_grid_pinpoints=[[image_size, image_size]], **common)
        return LlavaNextForConditionalGeneration(cfg)
    raise ValueError(f"unknown architecture {arch!r}; use 'llava' or 'llava_next'")
