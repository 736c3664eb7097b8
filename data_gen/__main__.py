"""python -m data_gen {colors,attributes,import,sheet,show} ...: build and inspect conflict datasets."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from .contact_sheet import contact_sheet
from .store import ConflictData, generate
from .user_import import ImportRowError, import_jsonl


def _show(data: ConflictData, n: int) -> None:
    rows = data.samples.filter(lambda c: c == "conflict", input_columns="condition").shuffle(seed=0).select(
        range(min(n, len(data.samples))))
    for r in rows:
        print(f"[{r['id']}] d_v={r['d_v']} d_t={r['d_t']}  image says {r['answer_visual']!r}, "
              f"text says {r['answer_text']!r}\n   {r['text_context']} {r['question']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_gen", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for task in ("colors", "attributes"):
        g = sub.add_parser(task, help=f"render the {task} conflict dataset")
        g.add_argument("--out", required=True)
        g.add_argument("--groups", type=int, default=400)
        g.add_argument("--seed", type=int, default=0)
        g.add_argument("--size", type=int, default=224, help="canvas side in px; tiers scale with it")
        g.add_argument("--workers", type=int, default=None)
    i = sub.add_parser("import", help="import a JSONL + image folder of your own conflicts")
    i.add_argument("jsonl")
    i.add_argument("--out", required=True)
    i.add_argument("--images", default=None, help="image folder (default: the JSONL's folder)")
    i.add_argument("--skip-invalid", action="store_true", help="skip malformed rows and count them by reason")
    s = sub.add_parser("sheet", help="write a PNG contact sheet, one sample per visual tier")
    s.add_argument("task", choices=["colors", "attributes"])
    s.add_argument("--out", required=True)
    s.add_argument("--size", type=int, default=224)
    s.add_argument("--seed", type=int, default=0)
    v = sub.add_parser("show", help="print a few conflict rows of a saved dataset")
    v.add_argument("path")
    v.add_argument("-n", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.cmd in ("colors", "attributes"):
        t0 = time.time()
        data = generate(args.cmd, args.groups, args.seed, args.size, args.workers)
        data.save(args.out)
        print(f"wrote {len(data.images)} images, {len(data.samples)} rows to {args.out} in {time.time() - t0:.1f}s "
              f"(splits {data.info['splits']}, fingerprint {data.fingerprint})")
    elif args.cmd == "import":
        try:
            data = import_jsonl(args.jsonl, args.images, args.skip_invalid)
        except (ImportRowError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        data.save(args.out)
        skipped = data.info["skipped"]
        print(f"imported {len(data.samples)} rows to {args.out}" + (f"; skipped {sum(skipped.values())}: {skipped}" if skipped else ""))
    elif args.cmd == "sheet":
        print(contact_sheet(args.task, args.out, args.size, args.seed))
    elif args.cmd == "show":
        _show(ConflictData.load(args.path), args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
