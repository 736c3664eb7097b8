"""Release bundle: the adapter files plus a model card with the measured before/after numbers."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def _bp(h: dict) -> str:
    return (h.get("balance_point") or {}).get("description", "not measured")


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def write_model_card(out: Path, result: dict, cfg) -> Path:
    before, after = result["base"], result["aligned"]
    if (out / "report" / "following_curve.png").exists():
        shutil.copy(out / "report" / "following_curve.png", out / "following_curve.png")
    osc = lambda h, r: "–" if not h.get(f"oscillation_{r}") or h[f"oscillation_{r}"]["mean"] is None \
        else f"{h[f'oscillation_{r}']['mean']:.2f}"
    rows = [("balance point [95% CI]", _bp(before), _bp(after)),
            ("TFR", _pct(before["tfr"]), _pct(after["tfr"])), ("VFR", _pct(before["vfr"]), _pct(after["vfr"])),
            ("image-only accuracy", _pct(before["unimodal_accuracy"]["visual"]), _pct(after["unimodal_accuracy"]["visual"])),
            ("text-only accuracy", _pct(before["unimodal_accuracy"]["text"]), _pct(after["unimodal_accuracy"]["text"])),
            ("oscillation, ambiguous region", osc(before, "ambiguous"), osc(after, "ambiguous")),
            ("oscillation, clear region", osc(before, "clear"), osc(after, "clear"))]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    rounds = result.get("calibration") or []
    calibration = ("; ".join(f"trained at {r['trained_at']:+.3f} -> {r['description']}" for r in rounds)
                   if rounds else "none")
    card = f"""---
library_name: peft
base_model: {cfg.model}
tags: [modality-alignment, lora, llava, uncertainty-aware]
---
# Modality-alignment LoRA adapter for `{cfg.model}`

This adapter moves the model's **balance point** — the relative uncertainty dH_rel at which it is
equally likely to follow the image or the text — to **{result['target_balance_point']:+.2f}**, trained with
uncertainty-aware soft targets p*(x) = sigmoid((b* - dH_rel(x)) / tau), tau = {cfg.tau}
(loss `{cfg.loss_type}`, boundary-weighted, retention share {cfg.retention_share}).

## Measured on held-out groups (same measurement code before and after)

| metric | base | adapted |
|---|---|---|
{table}

![following curve](following_curve.png)

## Training
- data: {cfg.data or f'generated colour conflicts, {cfg.data_groups} groups, seed {cfg.data_seed}, {cfg.data_size}px'};
  targets from the base model's scores on the `{cfg.train_split}` groups, evaluation on `{cfg.eval_split}`
- LoRA r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}, language model only
  (`{cfg.lora_target_modules}`)
- lr {cfg.learning_rate}, {cfg.lr_scheduler_type}, warmup {cfg.warmup_ratio}, epochs {cfg.num_train_epochs},
  batch {cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} per device, seed {cfg.seed}
- examples: {result['training_examples']}
- calibration on the `{cfg.calibration_split}` groups (the released adapter is the last round): {calibration}

## Load it
```python
from peft import PeftModel
from align.models import load_vlm
base = load_vlm("{cfg.model}")
model = PeftModel.from_pretrained(base.model, "path/to/this/folder")
```
"""
    (out / "README.md").write_text(card)
    return out / "README.md"


def push(out: Path, hub_model_id: str | None) -> None:
    if not hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/llava-balance-0)")
    from huggingface_hub import HfApi
    api = HfApi()
    api.create_repo(hub_model_id, exist_ok=True)
    files = ["adapter_model.safetensors", "adapter_config.json", "README.md", "following_curve.png", "alignment.json"]
    for name in files:
        if (out / name).exists():
            api.upload_file(path_or_fileobj=str(out / name), path_in_repo=name, repo_id=hub_model_id)
    log.info("pushed the adapter to https://huggingface.co/%s", hub_model_id)
