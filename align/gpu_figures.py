"""Every registered family on one GPU: its recipe checkpoint's shape with random weights (no download), scoring rows/s
at the recipe config's eval batch size, seconds per LoRA step at its train batch size, and peak memory of each.

    python recipes/gpu_figures.py                                   # every family, bf16 on one GPU
    python recipes/gpu_figures.py --families llava qwen2_5_vl --readme README.md
    python recipes/gpu_figures.py --device cpu --dtype float32 --tiny --image_size 64   # the CPU check: tiny models

Writes OUTPUT_DIR/gpu_figures.json and gpu_figures.md (the table), after each family; `--readme FILE` also puts
the table between the file's `<!-- gpu-figures -->` markers. Figures are of this one run on this device.
"""
from __future__ import annotations

import datetime
import gc
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_gen.cli import parse, usage_error
from data_gen.files import read_json, write_json, write_text

# torch, the model families, the scoring engine and the trainer load when the figures run: --help answers without them
log = logging.getLogger(__name__)
MARKERS = ("<!-- gpu-figures -->", "<!-- /gpu-figures -->")


@dataclass
class GPUFiguresArguments:
    families: list[str] | None = field(default=None, metadata={"help": "model families (default: every registered)"})
    device: str = field(default="cuda", metadata={"help": "cuda, or cpu with --tiny"})
    dtype: str = field(default="bfloat16", metadata={"help": "bfloat16 on GPUs, float32 on CPUs"})
    tiny: bool = field(default=False, metadata={
        "help": "the families' tiny sizes through the same code (the CPU check; figures say nothing of a GPU)"})
    image_size: int | None = field(default=None, metadata={
        "help": "side of the scored images, px (default: each family's recipe config's)"})
    groups: int = field(default=1, metadata={"help": "colour groups scored (each about 100 inputs), at least 1"})
    train_steps: int = field(default=3, metadata={"help": "LoRA steps timed, the first not counted (>= 2)"})
    output_dir: str = field(default="outputs/gpu-figures", metadata={"help": "where the figures are written"})
    readme: str | None = field(default=None, metadata={
        "help": "also write the table between this file's <!-- gpu-figures --> markers (e.g. README.md)"})

    def __post_init__(self):
        from eval.models import family_for, supported_families
        self.families = self.families or supported_families()
        for name in self.families:
            family_for(name)  # names the choices when unknown
        if self.groups < 1 or self.train_steps < 2:
            raise ValueError(f"groups must be >= 1 and train_steps >= 2, got {self.groups} and {self.train_steps}")
        import torch
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda: no GPU is visible here; on a CPU run the check with --device cpu --dtype "
                             "float32 --tiny")
        if self.readme and not Path(self.readme).is_file():
            raise ValueError(f"--readme {self.readme}: no such file")


def recipe_settings(family) -> dict:
    """What the family's recipe config sets for the figures: image size, batch sizes, LoRA rank, checkpointing."""
    config = yaml.safe_load(Path(family.shape.recipe_config).read_text())
    return {"image_size": config["image_size"], "eval_batch": config.get("per_device_eval_batch_size", 32),
            "train_batch": config.get("per_device_train_batch_size", 16), "lora_r": config.get("lora_r", 16),
            "activation_checkpointing": bool(config.get("activation_checkpointing", False))}


def soft_examples(data, vlm) -> list[dict]:
    """The conflict rows as the soft-target loss trains them (p* = 0.5: the figures time the step, not a target)."""
    from data_gen import samples_frame
    rows = samples_frame(data.samples).query("condition == 'conflict'")
    return [{"question": r.question, "context": r.text_context, "image_id": r.image_id, "is_conflict": 1,
             "token_text": vlm.first_token(r.answer_text), "token_visual": vlm.first_token(r.answer_visual),
             "p_text": 0.5, "weight": 1.0, "answer_token": vlm.first_token(r.answer_visual)}
            for r in rows.itertuples()]


def family_figures(name: str, args: GPUFiguresArguments) -> dict:
    """One family: build its shape, score `groups` groups twice (the first warms up), time the LoRA steps."""
    from data_gen import generate
    from eval.bench import PeakMemory
    from eval.models import VLM, family_for
    from eval.models.tiny import dataset_tokenizer
    from eval.models.vlm import resolve_dtype
    from eval.scoring import ScoreConfig, score_dataset
    from .throughput import lora_step_seconds
    from .training import AlignmentCollator
    family = family_for(name)
    settings = recipe_settings(family)
    settings["image_size"] = args.image_size or settings["image_size"]
    dtype = resolve_dtype(args.dtype, args.device)
    t0 = time.perf_counter()
    model, processor = family.build_shape(dataset_tokenizer(), settings["image_size"], args.device, dtype, args.tiny)
    vlm = VLM(model, processor, f"{family.shape.checkpoint} (random weights)")
    built = time.perf_counter() - t0
    data = generate("colors", args.groups, seed=0, size=settings["image_size"], workers=1)
    config = ScoreConfig(batch_size=settings["eval_batch"])
    score_dataset(vlm, data, None, config)  # warm-up: the first forwards of a shape choose their kernels
    with PeakMemory(vlm.device) as peak:
        t0 = time.perf_counter()
        table = score_dataset(vlm, data, None, config)
        seconds = time.perf_counter() - t0
    scoring = {"rows": len(table), "batch": settings["eval_batch"], "rows_per_s": len(table) / seconds,
               "peak_memory_gib": peak.gib}
    training = lora_step_seconds(vlm, AlignmentCollator(vlm, data, dtype), soft_examples(data, vlm),
                                 settings["train_batch"], args.train_steps, settings["lora_r"],
                                 settings["activation_checkpointing"])
    return {"family": name, "checkpoint": family.shape.checkpoint, "recipe_config": family.shape.recipe_config,
            "parameters": sum(p.numel() for p in model.parameters()), "image_size": settings["image_size"],
            "build_seconds": built, "scoring": scoring, "training": training}


def format_table(figures: list[dict], device: str | None, dtype: str | None, when: str | None, tiny: bool) -> str:
    """The README's family table: every registered family, its checkpoint, and its figures where measured."""
    from eval.models import family_for, supported_families
    measured = {f["family"]: f for f in figures}
    lines = ["| family (`model_type`) | checkpoint shape (recipe config) | parameters | scoring | LoRA step |",
             "|---|---|---|---|---|"]
    for name in supported_families():
        shape = family_for(name).shape
        cells = ["not measured", "not measured"]
        if name in measured:
            s, t = measured[name]["scoring"], measured[name]["training"]
            cells = [f"{s['rows_per_s']:.1f} rows/s at batch {s['batch']} ({s['peak_memory_gib']:.1f} GiB)",
                     f"{t['seconds_per_step']:.2f} s at batch {t['batch']}, r {t['lora_r']}"
                     f"{', checkpointing' if t['activation_checkpointing'] else ''} ({t['peak_memory_gib']:.1f} GiB)"]
        n = measured[name]["parameters"] if name in measured else shape.parameters  # the tiny check's own count
        size = f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"
        lines.append(f"| `{name}` | `{shape.checkpoint}` (`{Path(shape.recipe_config).name}`) | {size} | {cells[0]} | "
                     f"{cells[1]} |")
    if figures:
        sizes = "the families' tiny sizes (a code check, not GPU figures)" if tiny else "random weights of each shape"
        lines.append(f"\nMeasured by `python recipes/gpu_figures.py` on {device} in {dtype}, {sizes}, {when}.")
    else:
        lines.append("\nScoring and LoRA step not measured yet: they need one GPU.")
    return "\n".join(lines)


def put_between_markers(path: str | Path, table: str) -> None:
    text = Path(path).read_text()
    pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {MARKERS[0]} ... {MARKERS[1]} markers to put the table between")
    write_text(Path(path), pattern.sub(lambda _: f"{MARKERS[0]}\n{table}\n{MARKERS[1]}", text))


def device_name(device: str) -> str:
    import torch
    if torch.device(device).type == "cuda":
        return f"one {torch.cuda.get_device_name(torch.device(device))}"
    return "CPU"


def run_gpu_figures(args: GPUFiguresArguments) -> dict:
    """Every family of `args.families`, one after another; the files are rewritten after each, and a re-run keeps
    the families an earlier run of the same settings finished."""
    import torch
    from eval.models import family_for
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "gpu_figures.json"
    settings = {"device": args.device, "dtype": args.dtype, "tiny": args.tiny, "image_size": args.image_size,
                "groups": args.groups, "train_steps": args.train_steps}
    earlier = read_json(record, f"delete {record}") if record.exists() else {}
    figures = [f for f in earlier.get("figures", []) if earlier.get("settings") == settings
               and f["family"] in args.families]
    done = {f["family"] for f in figures}
    when, device = datetime.date.today().isoformat(), device_name(args.device)
    table = format_table(figures, device, args.dtype, when, args.tiny)
    for name in args.families:
        if name in done:
            log.info("%s: kept from %s", name, record)
            continue
        log.info("%s: building %s", name, family_for(name).shape.checkpoint)
        figures.append(family_figures(name, args))
        gc.collect()  # the family's model, before the next one is built
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
        table = format_table(figures, device, args.dtype, when, args.tiny)
        write_json(record, {"settings": settings, "device": device, "date": when, "figures": figures})
        write_text(out / "gpu_figures.md", table + "\n")
    if args.readme:
        put_between_markers(args.readme, table)
    return {"figures": figures, "table": table, "output_dir": str(out)}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        (args,) = parse([GPUFiguresArguments], argv, "recipes/gpu_figures.py", __doc__)
        result = run_gpu_figures(args)
    except (ValueError, OSError) as e:
        return usage_error(e)
    print(result["table"])
    print(f"gpu_figures.json and gpu_figures.md in {result['output_dir']}"
          + (f"; the table also in {args.readme}" if args.readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
