"""A user's own conflicts, imported from JSONL + image files (`modality-align data import`; data_gen/README.md)."""
from __future__ import annotations

from pathlib import Path

from data_gen import ConflictData
from data_gen.user_import import import_jsonl

from . import register_task
from .following import ModalityFollowing


@register_task
class UserJsonl(ModalityFollowing):
    name = "jsonl"
    help = "your conflicts: a JSONL file (id, image, question, text context, answer_visual, answer_text) or its import"

    def load(self, path: str | Path) -> ConflictData:
        """A folder written by `modality-align data import`, or the JSONL file itself (imported in memory)."""
        return import_jsonl(path) if Path(path).suffix == ".jsonl" else ConflictData.load(path)
