"""`modality-align COMMAND ...`: every command of the project under one entry point.

    modality-align data colors --output_dir data/colors --groups 400
    modality-align measure --model organism --data data/colors --output_dir runs/base
    modality-align report --runs runs/base runs/aligned --output_dir reports/compare
    modality-align align --config recipes/configs/organism.yaml

Each command imports only what it runs, so `--help` answers without loading torch for the others. The
`python -m data_gen|eval|align.organism` forms and the scripts in `recipes/` run the same code.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module, its main's name, the sub-command it runs there or None, one line of help)
COMMANDS: dict[str, tuple[str, str, str | None, str]] = {
    "data": ("data_gen.__main__", "main", None, "build and inspect conflict datasets (colors, attributes, "
                                               "recognition, av, import, sheet, show, readability)"),
    "score": ("eval.__main__", "main", "score", "score a dataset into a per-sample table"),
    "measure": ("eval.__main__", "main", "measure", "score and analyse: balance point, TFR/VFR, oscillation"),
    "report": ("eval.__main__", "main", "report", "figures, report.html and summary.json for one or more runs"),
    "recognition": ("eval.__main__", "main", "recognition", "conflict recognition and attention imbalance"),
    "recognition-report": ("eval.__main__", "main", "recognition-report", "report over recognition runs"),
    "av": ("eval.__main__", "main", "av", "audio-visual conflicts: accuracy per condition x asked modality"),
    "av-report": ("eval.__main__", "main", "av-report", "report over audio-visual runs"),
    "organism": ("align.organism.__main__", "main", None, "build a model organism or check its quality bars"),
    "align": ("align.commands", "align_main", None, "move the balance point: measure -> LoRA -> re-measure -> release"),
    "align-av": ("align.commands", "align_av_main", None, "asked-modality alignment of an audio-visual model"),
    "precision": ("align.commands", "precision_main", None, "the recipe's precision over targets and data seeds"),
    "compare-methods": ("align.commands", "compare_main", None, "every method and target side by side on fresh data"),
}


def usage() -> str:
    lines = [f"usage: modality-align {{{','.join(COMMANDS)}}} [--help] [--config FILE.yaml] [--flag value ...]", "",
             __doc__.strip(), "", "commands:"]
    return "\n".join(lines + [f"  {name:<20}{c[3]}" for name, c in COMMANDS.items()])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"usage: modality-align COMMAND ...\nerror: unknown command {argv[0]!r}; choose one of {list(COMMANDS)}",
              file=sys.stderr)
        return 2
    module, function, sub, _ = COMMANDS[argv[0]]
    run = getattr(importlib.import_module(module), function)
    if sub:  # one of a module's commands: its runner names it after the prog
        return run([sub, *argv[1:]], prog="modality-align")
    return run(argv[1:], prog=f"modality-align {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
