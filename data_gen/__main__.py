"""python -m data_gen {colors,attributes,recognition,...,av,import,sheet,show}: build and inspect conflict datasets.

    python -m data_gen colors --output_dir data/colors --groups 400 --image_size 336
    python -m data_gen recognition --output_dir data/recognition --groups 200 --image_size 64
    python -m data_gen av --output_dir data/av --groups 200 --image_size 32
    python -m data_gen import --jsonl my_conflicts.jsonl --output_dir data/mine
    python -m data_gen readability --image_size 64 --patch 8
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .av import generate_av
from .cli import Command, run_commands
from .contact_sheet import contact_sheet
from .readability import tier_readability
from .defaults import AV_SPLIT_SHARES, SPLIT_SHARES, image_size
from .store import ConflictData, generate
from .user_import import import_jsonl
from .files import write_text


@dataclass
class GenerateArguments:
    output_dir: str = field(metadata={"help": "where the dataset is written"})
    groups: int = field(default=400, metadata={"help": "groups (one target and one conflicting text each)"})
    dataset_seed: int = field(default=0, metadata={"help": "seed of the groups, images and splits"})
    image_size: int | None = field(default=None, metadata={
        "help": "canvas side in px; tiers scale with it (default: the task's, data_gen/defaults.py: 64, clips 32)"})
    workers: int | None = field(default=None, metadata={"help": "rendering processes (default: one per core)"})
    split_shares: dict | None = field(default=None, metadata={
        "help": "each split's share of the groups, JSON, e.g. '{\"train\": 0.7, \"validation\": 0.1, \"test\": 0.2}' "
                "for a dataset whose training split is the point (default: the task's, data_gen/defaults.py: "
                f"{SPLIT_SHARES}; av {AV_SPLIT_SHARES})"})


@dataclass
class ImportArguments:
    jsonl: str = field(metadata={"help": "one JSON object per line (see data_gen/README.md)"})
    output_dir: str = field(metadata={"help": "where the dataset is written"})
    images: str | None = field(default=None, metadata={"help": "image folder (default: the JSONL's folder)"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip malformed rows and count them by reason"})


@dataclass
class SheetArguments:
    task: str = field(metadata={"help": "colors or attributes"})
    output_dir: str = field(metadata={"help": "the PNG to write"})
    image_size: int | None = field(default=None, metadata={"help": "canvas side in px (default: the task's)"})
    dataset_seed: int = 0


@dataclass
class ShowArguments:
    data: str = field(metadata={"help": "a saved dataset"})
    n: int = field(default=5, metadata={"help": "conflict rows to print"})


@dataclass
class ReadabilityArguments:
    image_size: int | None = field(default=None, metadata={
        "help": "canvas side in px, as the model sees it (default: the colour task's)"})
    patch: int = field(default=8, metadata={
        "help": "the vision tower's patch side in px (the organism: 8 at 64; LLaVA-1.5: 14 at 336)"})
    groups: int = field(default=100, metadata={"help": "colour groups rendered per tier"})
    dataset_seed: int = field(default=0, metadata={"help": "the groups' seed, as in `colors`"})
    output_dir: str | None = field(default=None, metadata={"help": "also write readability.csv here"})


def generator(task: str):
    def run(args: GenerateArguments) -> int:
        t0 = time.time()
        data = generate(task, args.groups, args.dataset_seed, args.image_size, args.workers, args.split_shares)
        data.save(args.output_dir)
        print(f"wrote {len(data.images)} images, {len(data.samples)} rows to {args.output_dir} in {time.time() - t0:.1f}s "
              f"(splits {data.info['splits']}, fingerprint {data.fingerprint})")
    return run


def run_av(args: GenerateArguments) -> int:
    t0 = time.time()
    data = generate_av(args.groups, args.dataset_seed, args.image_size, args.split_shares)
    data.save(args.output_dir)
    print(f"wrote {len(data.clips)} clips, {len(data.samples)} rows to {args.output_dir} in {time.time() - t0:.1f}s "
          f"(splits {data.info['splits']}, fingerprint {data.info['fingerprint']})")
    return 0


def run_import(args: ImportArguments) -> int:
    data = import_jsonl(args.jsonl, args.images, args.skip_invalid)
    data.save(args.output_dir)
    skipped = data.info["skipped"]
    print(f"imported {len(data.samples)} rows to {args.output_dir}"
          + (f"; skipped {sum(skipped.values())}: {skipped}" if skipped else ""))
    return 0


def run_sheet(args: SheetArguments) -> int:
    if args.task not in ("colors", "attributes"):
        raise ValueError(f"task {args.task!r} is unknown; use colors or attributes")
    print(contact_sheet(args.task, args.output_dir, args.image_size, args.dataset_seed))
    return 0


def run_readability(args: ReadabilityArguments) -> int:
    size = args.image_size or image_size("colors")
    table = tier_readability(size, args.patch, args.groups, args.dataset_seed)
    print(f"visual tiers at {size} px, {args.patch}-px patches ({args.groups} groups each):")
    print(table.to_string(index=False, float_format="%.3f"))
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "readability.csv", table.to_csv(index=False))
        print(f"wrote {out / 'readability.csv'}")
    return 0


def run_show(args: ShowArguments) -> int:
    data = ConflictData.load(args.data)
    if "evidence" in data.samples.column_names:  # conflict recognition
        rows = data.samples.shuffle(seed=0)
        for r in rows.select(range(min(args.n, len(rows)))):
            print(f"[{r['id']}] {r['evidence']} d_v={r['d_v']} d_t={r['d_t']}  answer {r['answer']!r}\n"
                  f"   {r['text_context']} {r['question']}")
        return 0
    rows = data.samples.filter(lambda c: c == "conflict", input_columns="condition").shuffle(seed=0)
    for r in rows.select(range(min(args.n, len(rows)))):
        print(f"[{r['id']}] d_v={r['d_v']} d_t={r['d_t']}  image says {r['answer_visual']!r}, "
              f"text says {r['answer_text']!r}\n   {r['text_context']} {r['question']}")
    return 0


COMMANDS = {
    "colors": Command("render the colour-recognition conflict dataset", [GenerateArguments], generator("colors")),
    "attributes": Command("render the CLEVR-like attribute conflict dataset", [GenerateArguments], generator("attributes")),
    "recognition": Command("render conflict-recognition data from colour groups (text/caption/image evidence)",
                           [GenerateArguments], generator("recognition")),
    "recognition-attributes": Command("the same from attribute groups", [GenerateArguments],
                                      generator("recognition-attributes")),
    "av": Command("render audio-visual conflict clips (frames + sound; six conditions, two asked modalities)",
                  [GenerateArguments], run_av),
    "import": Command("import a JSONL + image folder of your own conflicts", [ImportArguments], run_import),
    "sheet": Command("write a PNG contact sheet, one sample per visual tier", [SheetArguments], run_sheet),
    "readability": Command("what each visual tier leaves readable at a canvas and patch size (no model)",
                           [ReadabilityArguments], run_readability),
    "show": Command("print a few conflict rows of a saved dataset", [ShowArguments], run_show),
}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_commands(prog or "python -m data_gen", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
