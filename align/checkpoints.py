"""Where a training resumes: the latest complete checkpoint of its own folder, made by the same training.

Each training (a calibration round, or the one training of a method) checkpoints into its own folder, which also
holds `training.json`, a fingerprint of what that training is (its examples, LoRA and Trainer settings). A re-run
resumes from the newest checkpoint whose `trainer_state.json` (the Trainer writes it last) is whole, and only when
the fingerprint matches; checkpoints of another training are cleared, never resumed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from data_gen.files import write_json

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "training.json"
# settings that do not change what is trained: where it goes, how it is logged, where it resumes
UNTRAINED = {"output_dir", "logging_dir", "resume_from_checkpoint", "report_to", "run_name", "project",
             "logging_steps", "save_steps", "save_total_limit", "push_to_hub", "hub_model_id", "hub_token",
             "overwrite_output_dir", "trackio_space_id", "disable_tqdm"}


def training_fingerprint(examples: list[dict], settings: dict) -> str:
    """A short hash of the examples and the settings that shape the adapter."""
    digest = hashlib.sha256(json.dumps(examples, sort_keys=True, default=str).encode())
    digest.update(json.dumps({k: v for k, v in sorted(settings.items()) if k not in UNTRAINED},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def step_of(checkpoint: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", checkpoint.name)
    return int(match.group(1)) if match else -1


def is_complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json after the weights, optimizer and RNG states: whole means done."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def latest_complete(folder: Path) -> Path | None:
    found = sorted((p for p in folder.glob("checkpoint-*") if step_of(p) >= 0), key=step_of, reverse=True)
    for checkpoint in found:
        if is_complete(checkpoint):
            return checkpoint
        log.warning("%s is incomplete (the run stopped while writing it); resuming from an earlier one", checkpoint)
    return None


def owned_by(asked: str | None, folder: Path) -> bool:
    """Whether `asked` (a --resume_from_checkpoint path) is a checkpoint of this training's folder."""
    return bool(asked) and Path(asked).resolve().parent == folder.resolve()


def resume_point(folder: Path, fingerprint: str, asked: str | None) -> str | None:
    """The checkpoint this training resumes from: the one asked for when it is in `folder`, else the newest
    complete one there; None to start at step 0. Checkpoints of another training in `folder` are removed."""
    record = folder / FINGERPRINT_FILE
    if folder.exists():
        try:
            found = json.loads(record.read_text()).get("fingerprint")
        except (OSError, ValueError):
            found = None
        if found != fingerprint:
            if owned_by(asked, folder):
                raise ValueError(f"--resume_from_checkpoint {asked} belongs to a training with other examples or "
                                 f"settings than this one; drop the flag, or re-run with that training's settings")
            if any(folder.glob("checkpoint-*")):
                log.warning("%s holds checkpoints of another training (other examples or settings): starting this "
                            "one at step 0", folder)
            for old in folder.glob("checkpoint-*"):
                shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    if owned_by(asked, folder):
        if not is_complete(Path(asked)):
            raise ValueError(f"--resume_from_checkpoint {asked} is incomplete (no whole trainer_state.json); drop "
                             f"the flag to resume from the newest complete checkpoint")
        resume = str(Path(asked))
    else:
        latest = latest_complete(folder)
        resume = None if latest is None else str(latest)
    if resume:
        log.info("resuming this training from %s", resume)
    write_json(record, {"fingerprint": fingerprint, "resume": resume})
    return resume


def chosen_resume(folder: Path) -> str | None:
    """What `resume_point` chose for `folder` (read by every process of a launch)."""
    return json.loads((folder / FINGERPRINT_FILE).read_text())["resume"]
