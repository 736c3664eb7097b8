"""The main job's scoring and LoRA training speed alone and beside one busy process, as ratios measured in one run.

    python -m align.contention_bench                         # the organism: 80 groups, 40 LoRA steps
    python -m align.contention_bench --wait_policy ACTIVE    # OpenMP threads that spin while they wait, to compare

Each phase runs as the user runs it (`python -m eval score`, `python recipes/align_llava.py`), once alone and once
beside a process that keeps one core busy. Scoring speed is the inputs per second the scorer logs; training speed is
the Trainer's own train_runtime over its steps. The bar is a slowdown of at most 1.6x for both (a fair share of 2
cores with one taken is 1.5x). Figures are of this one run on this machine.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.cli import parse, usage_error
from data_gen.files import write_json

ROOT = Path(__file__).resolve().parents[1]
BAR = 1.6


@dataclass
class ContentionArguments:
    groups: int = field(default=80, metadata={"help": "colour groups scored and trained on"})
    max_steps: int = field(default=40, metadata={"help": "LoRA steps of the timed training"})
    wait_policy: str = field(default="PASSIVE", metadata={
        "help": "OMP_WAIT_POLICY of the timed runs: PASSIVE (the commands' default), ACTIVE (threads spin while they "
                "wait) or DEFAULT (OpenMP's own: spin a while, then sleep)"})
    output_json: str | None = field(default=None, metadata={"help": "also write the figures here"})


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def timed(command: list[str], env: dict, pattern: str, busy: bool) -> re.Match:
    """Run `command` (beside a busy process when `busy`) and return `pattern`'s match in its output."""
    other = busy_process() if busy else None
    try:
        res = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    finally:
        if other is not None:
            other.kill()
            other.wait()
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{res.stderr[-2000:]}")
    match = re.search(pattern, res.stdout + res.stderr)
    if match is None:
        raise RuntimeError(f"{' '.join(command[:3])}: no {pattern!r} in its output")
    return match


def run(args: ContentionArguments) -> dict:
    from data_gen import generate
    if args.wait_policy not in ("PASSIVE", "ACTIVE", "DEFAULT"):
        raise ValueError(f"--wait_policy must be PASSIVE, ACTIVE or DEFAULT, got {args.wait_policy!r}")
    # DEFAULT: an empty value, which OpenMP ignores (its own spin-then-sleep) and the commands do not replace
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_WAIT_POLICY": "" if args.wait_policy == "DEFAULT" else
           args.wait_policy}
    figures = {"wait_policy": args.wait_policy, "cores": len(os.sched_getaffinity(0)), "groups": args.groups,
               "max_steps": args.max_steps}
    with tempfile.TemporaryDirectory() as tmp:
        data = generate("colors", args.groups, 0, 64, split_shares={"train": 0.5, "validation": 0.25, "test": 0.25})
        data.save(Path(tmp) / "data")
        for busy in (False, True):
            key = "busy" if busy else "alone"
            score = timed([sys.executable, "-m", "eval", "score", "--model", "organism", "--data", f"{tmp}/data",
                           "--split", "all", "--no_lens", "--output_dir", f"{tmp}/score-{key}"], env,
                          r"scored (\d+) distinct inputs .*? in ([\d.]+)s", busy)
            figures[f"scoring_{key}_inputs_per_s"] = int(score.group(1)) / float(score.group(2))
            train = timed([sys.executable, "recipes/align_llava.py", "--data", f"{tmp}/data", "--max_steps",
                           str(args.max_steps), "--calibration_rounds", "0", "--report_to", "none", "--n_boot", "100",
                           "--save_steps", str(10 * args.max_steps), "--split_shares",
                           '{"train": 0.5, "validation": 0.25, "test": 0.25}', "--output_dir", f"{tmp}/train-{key}"],
                          env, r"'train_runtime': '?([\d.]+)", busy)
            figures[f"training_{key}_s_per_step"] = float(train.group(1)) / args.max_steps
    figures["scoring_slowdown"] = figures["scoring_alone_inputs_per_s"] / figures["scoring_busy_inputs_per_s"]
    figures["training_slowdown"] = figures["training_busy_s_per_step"] / figures["training_alone_s_per_step"]
    return figures


def main(argv=None) -> int:
    try:
        (args,) = parse([ContentionArguments], argv, "python -m align.contention_bench", __doc__)
        f = run(args)
    except (ValueError, OSError) as e:
        return usage_error(e)
    print(f"OMP_WAIT_POLICY={f['wait_policy']}, {f['cores']} cores, one busy process beside the job:")
    for phase, unit, digits in (("scoring", "inputs_per_s", 1), ("training", "s_per_step", 3)):
        alone, busy, slowdown = f[f"{phase}_alone_{unit}"], f[f"{phase}_busy_{unit}"], f[f"{phase}_slowdown"]
        print(f"{phase + ':':<9} {alone:.{digits}f} {unit.replace('_per_', '/')} alone, {busy:.{digits}f} beside it: "
              f"{slowdown:.2f}x slower ({'within' if slowdown <= BAR else 'over'} the {BAR}x bar)")
    if args.output_json:
        write_json(Path(args.output_json), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
