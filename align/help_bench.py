"""How long every command takes to answer `--help`, each in a fresh process (what a user waits for).

    python -m align.help_bench            # every command, best of 2 runs each; bar 3 s

Prints seconds per command beside the bar and what the slowest import was. Figures are of this one run on this
machine.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from data_gen.cli import usage_error

ROOT = Path(__file__).resolve().parents[1]
BAR = 3.0
COMMANDS = [
    ["-m", "align.cli"], ["-m", "align.cli", "measure"], ["-m", "align.cli", "data"],
    ["-m", "eval"], ["-m", "eval", "measure"], ["-m", "eval", "score"], ["-m", "eval", "report"],
    ["-m", "eval", "recognition"], ["-m", "eval", "av"],
    ["-m", "data_gen"], ["-m", "data_gen", "colors"], ["-m", "align.organism", "build"],
    ["recipes/align_llava.py"], ["recipes/align_omni.py"], ["recipes/precision_table.py"],
    ["recipes/compare_methods.py"], ["recipes/gpu_figures.py"],
]


def seconds(command: list[str], runs: int = 2) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} --help exited {res.returncode}: {res.stderr[-500:]}")
    return best


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        if argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0
        return usage_error(ValueError(f"python -m align.help_bench takes no arguments, got {argv}"))
    over = 0
    for command in COMMANDS:
        took = seconds(command)
        over += took > BAR
        print(f"{took:5.2f} s  {took / BAR:4.2f} of the bar  python {' '.join(command)} --help")
    print(f"{len(COMMANDS) - over} of {len(COMMANDS)} commands answer --help within {BAR:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
