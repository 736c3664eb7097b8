"""Audio-visual throughput on one device: scoring rows/s and asked-modality LoRA step time, with peak memory.

    python -m align.av_bench --device cuda --dtype bfloat16          # a random Qwen2.5-Omni-7B-shaped thinker
    python -m align.av_bench --model organism:av --device cpu --dtype float32   # any model `load_vlm` takes

Builds the model (for `qwen2.5-omni-7b-thinker-shape`: random weights of the real shape, no download), scores
`groups` AV groups with `eval av`'s code (with and without the attention pass), then runs `train_steps` steps of
the asked-modality loss with LoRA on the decoder (AdamW, the recipe's collator and loss), and prints rows/s,
seconds per step and the peak memory of each phase. Figures are of this one run on this machine.
"""
from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


from data_gen import samples_frame
from data_gen.av import generate_av
from data_gen.cli import parse, usage_error

from data_gen.files import write_json
from eval.av_scoring import AVScoreConfig, score_av
from eval.bench import PeakMemory

SHAPE = "qwen2.5-omni-7b-thinker-shape"


@dataclass
class AVBenchArguments:
    model: str = field(default=SHAPE, metadata={
        "help": f"{SHAPE} (random weights of Qwen2.5-Omni-7B's thinker, built on the device) or any model name"})
    groups: int = field(default=8, metadata={"help": "AV groups scored (12 rows each)"})
    per_device_eval_batch_size: int = 8
    train_steps: int = field(default=8, metadata={"help": "asked-modality LoRA steps timed (the first is warm-up)"})
    per_device_train_batch_size: int = 4
    lora_r: int = 8
    activation_checkpointing: bool = True
    dtype: str = field(default="bfloat16", metadata={"help": "bfloat16 on GPUs, float32 on CPUs"})
    device: str = field(default="cuda", metadata={"help": "cuda or cpu"})
    output_json: str | None = field(default=None, metadata={"help": "also write the figures here"})


def build(args: AVBenchArguments, tiny: bool = False):
    """The benchmark's VLM and its frame size; `tiny`: the shape's code path with the family's tiny sizes (tests)."""
    from .organism.av import av_tokenizer
    from eval.models import family_for, load_vlm
    from eval.models.vlm import VLM, resolve_dtype
    if args.model != SHAPE:
        return load_vlm(args.model, dtype=args.dtype, device=args.device), 32
    model, processor = family_for("qwen2_5_omni_thinker").build_shape(
        av_tokenizer(), 224, args.device, resolve_dtype(args.dtype, args.device), tiny=tiny)
    return VLM(model, processor, SHAPE), 224


def run(args: AVBenchArguments, tiny: bool = False) -> dict:
    from .asked_modality import AVCollator, asked_modality_examples
    from .throughput import lora_step_seconds
    vlm, size = build(args, tiny)
    data = generate_av(args.groups, seed=0, size=size)
    figures = {"model": args.model, "device": args.device, "dtype": args.dtype,
               "parameters": sum(p.numel() for p in vlm.model.parameters())}
    with tempfile.TemporaryDirectory() as tmp:
        for attention in (False, True):
            cfg = AVScoreConfig(batch_size=args.per_device_eval_batch_size, attention=attention)
            with PeakMemory(vlm.device) as peak:
                t0 = time.perf_counter()
                table = score_av(vlm, data, Path(tmp) / f"attention-{attention}", cfg)
                seconds = time.perf_counter() - t0
            key = "scoring_with_attention" if attention else "scoring"
            figures[key] = {"rows": len(table), "rows_per_s": len(table) / seconds, "peak_memory_gib": peak.gib}
    examples, _ = asked_modality_examples(samples_frame(data.samples), vlm, ["misaligned", "misleading_text"])
    collate = AVCollator(vlm, data, next(vlm.model.parameters()).dtype)
    figures["training"] = lora_step_seconds(vlm, collate, examples, args.per_device_train_batch_size, args.train_steps,
                                            args.lora_r, args.activation_checkpointing)
    return figures


def main(argv=None) -> int:
    try:
        (args,) = parse([AVBenchArguments], argv, "python -m align.av_bench", __doc__)
        figures = run(args)
    except (ValueError, OSError) as e:
        return usage_error(e)
    s, sa, t = figures["scoring"], figures["scoring_with_attention"], figures["training"]
    n = figures["parameters"]
    size = f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"
    print(f"{figures['model']} ({size} parameters, {figures['dtype']} on {figures['device']})")
    print(f"scoring: {s['rows_per_s']:.1f} rows/s ({s['rows']} rows), peak {s['peak_memory_gib']:.2f} GiB; with the "
          f"attention pass {sa['rows_per_s']:.1f} rows/s, peak {sa['peak_memory_gib']:.2f} GiB")
    print(f"asked-modality LoRA: {t['seconds_per_step']:.3f} s/step at batch {t['batch']} ({t['steps']} steps, the "
          f"first not counted), peak {t['peak_memory_gib']:.2f} GiB")
    if args.output_json:
        write_json(Path(args.output_json), figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
