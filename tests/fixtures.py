"""Tiny random models of every registered family and processors, built offline."""
from __future__ import annotations

from pathlib import Path

import torch

from data_gen import ConflictData, generate
from models.tiny import build_tiny, dataset_tokenizer

IMAGE_SIZE, PATCH = 32, 8


def tiny_dataset(path: Path, groups: int = 6, task: str = "colors") -> ConflictData:
    generate(task, groups, seed=0, size=IMAGE_SIZE, workers=1).save(path)
    return ConflictData.load(path)


def tiny_model_dir(arch: str, path: Path, extra_words=()) -> Path:
    torch.manual_seed(0)
    for part in build_tiny(arch, dataset_tokenizer(extra_words), IMAGE_SIZE, PATCH):
        part.save_pretrained(path)
    return path
