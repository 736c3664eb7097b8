"""Offline builders for small models: a word-level tokenizer, chat templates, and tiny random models.

Used by the model organism and by the tests' tiny random fixtures, so every architecture is
exercised with the real transformers classes and no download. Each family's own model and
processor builder lives in its family module (`Family.build_tiny`).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
# Vicuna-style turns (as LLaVA-1.5): the prompt ends with "ASSISTANT:" and the answer follows.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)
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
_WORD = re.compile(r"\w+|[^\w\s]+")


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct words of `texts`, split as the word-level tokenizer splits them."""
    return sorted({w for t in texts if t for w in _WORD.findall(t)})


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for w in sorted(set(words) | {"USER", "ASSISTANT", ":"}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return _fast(tok, CHAT_TEMPLATE)


def _fast(backend: Tokenizer, chat_template: str | None, named: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level backend wrapped as transformers reads it: the project's special tokens, left padding."""
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", padding_side="left",
                                   extra_special_tokens={"image_token": "<image>", **(named or {})})
    fast.chat_template = chat_template
    return fast


def with_special_tokens(tokenizer: PreTrainedTokenizerFast, named: dict[str, str] | None = None,
                        others: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A copy of `tokenizer` with more special tokens: `named` ones become attributes (boi_token=...), as a
    family's processor reads them; the vocabulary keeps its ids and grows at the end."""
    fast = _fast(copy.deepcopy(tokenizer.backend_tokenizer), tokenizer.chat_template, named)
    if others:
        fast.add_special_tokens({"additional_special_tokens": list(others)})
    return fast


def with_words(tokenizer: PreTrainedTokenizerFast, words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A copy of a word-level `tokenizer` that also knows `words`: existing ids stay, new words get the next ids
    (so a model keeps its embeddings and grows rows for the new words)."""
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    vocab = backend.get_vocab()
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend.model = models.WordLevel(vocab, unk_token="<unk>")
    return _fast(backend, tokenizer.chat_template)


def tower_sizes(hidden: int, layers: int, heads: int, image_size: int, patch_size: int) -> dict:
    """Vision-tower config fields of a tiny random model (CLIP / SigLIP / Idefics3 towers share their names)."""
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=image_size, patch_size=patch_size)


def decoder_sizes(tokenizer, hidden: int, layers: int, heads: int, max_positions: int = 1024) -> dict:
    """Decoder config fields of a tiny random model, with the tokenizer's vocabulary and special ids."""
    return dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def dataset_tokenizer(extra_texts: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer that covers every word the project's datasets can produce."""
    from data_gen.vocabulary import dataset_texts
    return build_tokenizer(words_of([*dataset_texts(), *extra_texts]))


def build_tiny(arch: str, tokenizer, image_size: int, patch_size: int, **sizes):
    """(model, processor) of family `arch`, random weights; `sizes` are hidden, layers, heads, ..."""
    from .registry import family_for
    return family_for(arch).build_tiny(tokenizer, image_size, patch_size, **sizes)
