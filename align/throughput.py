"""Seconds per LoRA step and peak memory on the device: the training half of the GPU figures
(recipes/gpu_figures.py) and of the audio-visual benchmark (align/av_bench.py)."""
from __future__ import annotations

import time

import torch

from eval.bench import PeakMemory

from .training import TARGET_KEYS, soft_target_loss


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def lora_step_seconds(vlm, collate, examples: list[dict], batch_size: int, steps: int, lora_r: int,
                      activation_checkpointing: bool) -> dict:
    """`steps` AdamW steps of the soft-target loss with LoRA (rank `lora_r`) on the decoder, batches of
    `batch_size` of `examples` through `collate`; the first step is not counted (allocation, kernel choice).
    Wraps `vlm.model` in the adapter: time it last."""
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(vlm.model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r,
                                                 target_modules=vlm.lora_target_modules, task_type="CAUSAL_LM"))
    if activation_checkpointing:
        model.base_model.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
        model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    with PeakMemory(vlm.device) as peak:
        for step in range(steps):
            batch = collate([examples[(step * batch_size + i) % len(examples)] for i in range(batch_size)])
            targets = {k: batch.pop(k).to(vlm.device) for k in TARGET_KEYS}
            batch = {k: v.to(vlm.device) for k, v in batch.items()}
            synchronize(vlm.device)
            t0 = time.perf_counter()
            logits = model(**batch, logits_to_keep=1).logits[:, -1]
            soft_target_loss(logits, **targets, retention_weight=1.0).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            synchronize(vlm.device)
            times.append(time.perf_counter() - t0)
    steady = times[1:] or times
    return {"steps": len(times), "batch": batch_size, "lora_r": lora_r, "seconds_per_step": sum(steady) / len(steady),
            "peak_memory_gib": peak.gib, "activation_checkpointing": activation_checkpointing}
