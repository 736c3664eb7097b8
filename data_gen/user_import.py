"""Import user conflicts (docs/method.md, "Conflict data") into the project's dataset schema.

Format: one JSON object per line, images in a folder (paths relative to the JSONL file's
folder unless --images is given).

    {"id": "q1", "image": "imgs/1.png", "question": "What color is the car?",
     "text_context": "The car is blue.", "answer_visual": "red", "answer_text": "blue",
     "d_v": 0, "d_t": 0, "group": 3, "split": "test"}      # last four optional

MC2-style names are accepted as aliases: image_id -> image, answer_vision -> answer_visual,
context -> text_context. Without `split`, rows are split by `group` (each row its own group
when absent) with the same shares as generated data.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import datasets
from PIL import Image

from .store import IMAGE_FEATURES, SAMPLE_FEATURES, SPLIT_SHARES, ConflictData, assign_splits, png_bytes

log = logging.getLogger(__name__)

REQUIRED = ("id", "image", "question", "text_context", "answer_visual", "answer_text")
ALIASES = {"image_id": "image", "answer_vision": "answer_visual", "context": "text_context"}
FORMAT_HINT = "each line needs " + ", ".join(REQUIRED) + " (see data_gen/user_import.py)"


class ImportRowError(ValueError):
    def __init__(self, path: Path, line: int, reason: str, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.reason = reason


def _parse(path: Path, line_no: int, line: str, image_root: Path, seen: set[str]) -> tuple[dict, Path]:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise ImportRowError(path, line_no, "bad_json", f"not valid JSON ({e.msg}); {FORMAT_HINT}") from None
    if not isinstance(raw, dict):
        raise ImportRowError(path, line_no, "bad_json", f"expected a JSON object; {FORMAT_HINT}")
    row = {ALIASES.get(k, k): v for k, v in raw.items()}
    missing = [k for k in REQUIRED if row.get(k) in (None, "") and not (k == "text_context" and k in row)]
    if missing:
        raise ImportRowError(path, line_no, "missing_field", f"missing field(s) {missing}; {FORMAT_HINT}")
    row["id"] = str(row["id"])
    if row["id"] in seen:
        raise ImportRowError(path, line_no, "duplicate_id", f"id {row['id']!r} appears twice; give each row a unique id")
    if str(row["answer_visual"]).strip().lower() == str(row["answer_text"]).strip().lower():
        raise ImportRowError(path, line_no, "same_answers",
                             f"answer_visual and answer_text are both {row['answer_visual']!r}; a conflict needs "
                             f"two different answers: fix the row or drop it (--skip-invalid)")
    image_path = (image_root / row["image"]).resolve()
    try:
        with Image.open(image_path) as im:
            im.verify()
    except Exception as e:  # PIL raises many types for unreadable files
        raise ImportRowError(path, line_no, "unreadable_image",
                             f"cannot read image {row['image']!r} at {image_path} ({type(e).__name__}); fix the path "
                             f"(relative to the JSONL's folder, or pass --images DIR)") from None
    return row, image_path


def import_jsonl(path: str | Path, images: str | Path | None = None, skip_invalid: bool = False,
                 seed: int = 0) -> ConflictData:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass the JSONL file of your conflicts")
    image_root = Path(images) if images else path.parent
    rows, image_paths, skipped, seen = [], {}, Counter(), set()
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row, image_path = _parse(path, line_no, line, image_root, seen)
        except ImportRowError as e:
            if not skip_invalid:
                raise
            skipped[e.reason] += 1
            log.warning("skipped %s", e)
            continue
        seen.add(row["id"])
        row["image_id"] = str(row["image"])
        image_paths[row["image_id"]] = image_path
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no valid rows ({dict(skipped) or 'file is empty'})")
    if skipped:
        log.warning("%s: skipped %d invalid rows: %s", path, sum(skipped.values()), dict(skipped))
    groups = {r["id"]: int(r["group"]) if r.get("group") is not None else i for i, r in enumerate(rows)}
    splits = assign_splits(list(groups.values()), seed)
    samples = []
    for r in rows:
        split = r.get("split") or splits[groups[r["id"]]]
        if split not in SPLIT_SHARES:
            raise ValueError(f"{path}: row {r['id']!r} has split {split!r}; use one of {list(SPLIT_SHARES)}")
        samples.append({
            "id": r["id"], "image_id": r["image_id"], "group": groups[r["id"]], "split": split, "task": "user",
            "question": r["question"], "text_context": r["text_context"] or "",
            "answer_visual": str(r["answer_visual"]), "answer_text": str(r["answer_text"]),
            "d_v": r.get("d_v"), "d_t": r.get("d_t"), "text_tier": "user", "condition": "conflict",
            "target": None, "knowledge_object": None, "text_ambiguity": None,
        })
    imgs = []
    for image_id, p in image_paths.items():
        with Image.open(p) as im:
            imgs.append({"image_id": image_id, "image": {"bytes": png_bytes(im.convert("RGB")), "path": None}})
    info = {"task": "user", "source": str(path), "seed": seed, "skipped": dict(skipped)}
    return ConflictData(
        datasets.Dataset.from_dict({k: [s.get(k) for s in samples] for k in SAMPLE_FEATURES}, features=SAMPLE_FEATURES),
        datasets.Dataset.from_dict({k: [im.get(k) for im in imgs] for k in IMAGE_FEATURES}, features=IMAGE_FEATURES),
        info,
    )
