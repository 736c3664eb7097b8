"""Tiny random llava / llava_next models and processors, built offline."""
from __future__ import annotations

from pathlib import Path

import torch

from align.tiny import build_model, build_processor, build_tokenizer, words_of
from data_gen import ConflictData, generate

IMAGE_SIZE, PATCH = 32, 8


def tiny_dataset(path: Path, groups: int = 6, task: str = "colors") -> ConflictData:
    generate(task, groups, seed=0, size=IMAGE_SIZE, workers=1).save(path)
    return ConflictData.load(path)


def tiny_model_dir(arch: str, path: Path, extra_words=()) -> Path:
    from align.organism import vocabulary
    torch.manual_seed(0)
    tok = build_tokenizer(vocabulary() + list(words_of(extra_words)))
    build_model(arch, tok, IMAGE_SIZE, PATCH).save_pretrained(path)
    build_processor(arch, tok, IMAGE_SIZE, PATCH).save_pretrained(path)
    return path
