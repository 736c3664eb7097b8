"""The recipes' command-line mains: `recipes/*.py` and `modality-align align|align-av|precision` run these.

Flags are the fields of the method's arguments, ModelArguments and transformers' TrainingArguments; YAML keys
(`--config FILE.yaml`) are the same names and the command line wins. Bad input is one line and exit code 2.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from data_gen.cli import parse, usage_error

ALIGN_DOC = """Move a VLM's balance point with uncertainty-aware LoRA, proven by the same measurement code.

    python recipes/align_llava.py                                  # the embedded model organism
    python recipes/align_llava.py --config recipes/configs/llava-1.5-7b.yaml
    python recipes/align_llava.py --launch recipes/accelerate_configs/zero2.yaml --target_balance_point 0.5
"""

PRECISION_DOC = """The precision table: targets x training data seeds, each adapter's realized balance point on a fresh
data seed. Each run is the recipe, unchanged, in OUTPUT_DIR/seed-S/bT; writes OUTPUT_DIR/precision.{json,csv,png};
a re-run resumes.

    python recipes/precision_table.py --config recipes/configs/organism-precision.yaml
    python recipes/precision_table.py --config recipes/configs/organism-precision.yaml --targets 0 0.5 --data_seeds 0
"""

COMPARE_DOC = """Every way to move a model's modality preference, side by side: each method aimed at each b* on the training
data seed, every result measured on the groups of a fresh data seed beside the base. Writes OUTPUT_DIR/comparison.
{json,csv,png}; each run is the recipe, unchanged, in OUTPUT_DIR/METHOD/bT; a re-run resumes.

    python recipes/compare_methods.py --config recipes/configs/organism-compare.yaml
    python recipes/compare_methods.py --config recipes/configs/organism-compare.yaml --methods soft steer --targets 0.5
"""

AV_DOC = """Asked-modality alignment of an audio-visual model: answer from the modality the question asks about.
Measures accuracy per condition x asked modality and attention on frames vs sound per layer on held-out groups,
trains a LoRA adapter whose answer is the asked modality's class, and measures again with the same code.

    python recipes/align_omni.py                                    # the embedded AV organism
    python recipes/align_omni.py --config recipes/configs/qwen2.5-omni-7b-thinker.yaml
"""


LAUNCH_HELP = """
Several processes (GPUs, or DeepSpeed on CPUs): add `--launch ACCELERATE_CONFIG.yaml`. The inputs are checked here
first (a bad one is one line and exit code 2, before any process starts), then the command runs under
`accelerate launch --config_file ACCELERATE_CONFIG.yaml` and exits with its code. Under a bare `accelerate launch`
the same checks run in every process, and accelerate adds its own traceback and exit code 1 to a failure."""


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def help_without_peft_or_accelerate(argv: list[str] | None) -> None:
    """On the command line's own `--help` (argv None: read from sys.argv), transformers' TrainingArguments is imported
    without peft and accelerate (2.5 s of its 4.5 s): the help lists its fields and the process ends after printing
    it. transformers' modules bind `is_peft_available` / `is_accelerate_available` when first imported, so this runs
    before them; a call with an explicit argv (a notebook, a test) never changes transformers, whose Trainer needs
    both for what follows in that process."""
    if argv is not None or "transformers.trainer_utils" in sys.modules:
        return
    if "-h" in sys.argv[1:] or "--help" in sys.argv[1:]:
        import transformers.utils
        transformers.utils.is_peft_available = lambda: False
        transformers.utils.is_accelerate_available = lambda *_, **__: False


def split_launch(argv: list[str] | None) -> tuple[str | None, list[str]]:
    """`--launch CONFIG` taken out of the command line; the rest is the recipe's own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for k, arg in enumerate(argv):
        if arg == "--launch" or arg.startswith("--launch="):
            value = arg.split("=", 1)[1] if "=" in arg else (argv[k + 1] if k + 1 < len(argv) else "")
            rest = argv[:k] + argv[k + (1 if "=" in arg else 2):]
            return value, rest
    return None, argv


def launched(config: str, argv: list[str]) -> int:
    """This command, its inputs already checked, under `accelerate launch --config_file CONFIG`; its exit code.
    `--quiet` keeps the launcher's traceback out: a failing process prints its own message."""
    if not Path(config).is_file():
        raise ValueError(f"--launch {config!r}: no such accelerate config file (e.g. "
                         f"recipes/accelerate_configs/zero2.yaml)")
    from .recipe import STARTED_WITH, started_with
    script = os.path.abspath(sys.argv[0])
    return subprocess.call([sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", config,
                            script, *argv], env={**os.environ, STARTED_WITH: started_with()})


def align_main(argv: list[str] | None = None, prog: str = "modality-align align", description: str = ALIGN_DOC) -> int:
    """Measure -> targets -> LoRA -> re-measure -> report -> release; prints the before/after line and the guarantee."""
    help_without_peft_or_accelerate(argv)
    from transformers import TrainingArguments

    from eval.models import ModelArguments

    from .arguments import TRAINING_DEFAULTS, AlignArguments, check_inputs
    _logging()
    launch, argv = split_launch(argv)
    try:
        align, model, training = parse([AlignArguments, ModelArguments, TrainingArguments], argv, prog,
                                       description + LAUNCH_HELP, TRAINING_DEFAULTS)
        if launch:
            check_inputs(align, model, training)
            return launched(launch, argv)
        from .recipe import run_alignment  # after parsing: --help does not load the measuring stack
        result = run_alignment(align, model, training)
    except (ValueError, OSError) as e:
        return usage_error(e)
    if result:
        b, a = result["base"]["balance_point"], result["aligned"]["balance_point"]
        print(f"balance point: {b['description']} -> {a['description']} (target {result['target_balance_point']:+.2f})")
        if "guarantee" in result:
            print(result["guarantee"]["description"])
        print(f"release bundle (adapter, model card, report) in {result['release']} ({result['seconds']:.0f}s)")
    return 0


def recipe_table_main(argv, prog: str, description: str, own: type, run, show, output_dir: str) -> int:
    """A command that runs the recipe many times: its own arguments (`own`) beside the recipe's, `run(own, align,
    model, training)`, then `show(result)` on the main process."""
    from transformers import TrainingArguments

    from eval.models import ModelArguments

    from .arguments import TRAINING_DEFAULTS, AlignArguments, check_inputs
    _logging()
    launch, argv = split_launch(argv)
    try:
        mine, align, model, training = parse([own, AlignArguments, ModelArguments, TrainingArguments], argv, prog,
                                             description + LAUNCH_HELP, {**TRAINING_DEFAULTS, "output_dir": output_dir})
        if launch:
            check_inputs(align, model, training)
            return launched(launch, argv)
        result = run(mine, align, model, training)
    except (ValueError, OSError) as e:
        return usage_error(e)
    if result:
        show(result)
    return 0


def precision_main(argv: list[str] | None = None, prog: str = "modality-align precision",
                   description: str = PRECISION_DOC) -> int:
    """The precision table over targets and training data seeds, measured on a fresh data seed."""
    help_without_peft_or_accelerate(argv)
    from .arguments import PrecisionArguments

    def run_precision(*args):
        from .precision import run_precision
        return run_precision(*args)

    def show(result):
        from .precision import describe_summary, format_table
        print(format_table(result["rows"]))
        print(describe_summary(result["summary"]))
        print(f"table and plot in {result['figure'].rsplit('/', 1)[0]} ({result['summary']['seconds']:.0f}s)")
    return recipe_table_main(argv, prog, description, PrecisionArguments, run_precision, show,
                             "outputs/precision-organism")


def compare_main(argv: list[str] | None = None, prog: str = "modality-align compare-methods",
                 description: str = COMPARE_DOC) -> int:
    """The method comparison: every method and target, measured on a fresh data seed."""
    help_without_peft_or_accelerate(argv)
    from .arguments import CompareArguments

    def run_comparison(*args):
        from .compare import run_comparison
        return run_comparison(*args)

    def show(result):
        from .compare import format_comparison
        print(format_comparison(result["rows"]))
        print(f"comparison.json, comparison.csv and comparison.png in {result['figure'].rsplit('/', 1)[0]} "
              f"({result['seconds']:.0f}s)")
    return recipe_table_main(argv, prog, description, CompareArguments, run_comparison, show,
                             "outputs/compare-organism")


def align_av_main(argv: list[str] | None = None, prog: str = "modality-align align-av", description: str = AV_DOC) -> int:
    """Asked-modality alignment of an audio-visual model, before/after accuracy per condition."""
    help_without_peft_or_accelerate(argv)
    from transformers import TrainingArguments

    from eval.models import ModelArguments

    from .arguments import AV_TRAINING_DEFAULTS, AVAlignArguments, check_inputs
    _logging()
    launch, argv = split_launch(argv)
    try:
        align, model, training = parse([AVAlignArguments, ModelArguments, TrainingArguments], argv, prog,
                                       description + LAUNCH_HELP,
                                       {**AV_TRAINING_DEFAULTS, "model_name_or_path": "organism:av"})
        if launch:
            check_inputs(align, model, training)
            return launched(launch, argv)
        from .av_recipe import run_av_alignment  # after parsing: --help does not load the measuring stack
        result = run_av_alignment(align, model, training)
    except (ValueError, OSError) as e:
        return usage_error(e)
    if result:
        from eval.av import describe_change
        print("accuracy against the asked modality's class, both questions pooled (base -> aligned):")
        print(describe_change(result["change"]))
        print(f"release bundle (adapter, model card, report) in {result['release']} ({result['seconds']:.0f}s)")
    return 0
