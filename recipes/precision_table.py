"""The precision table: targets x training data seeds, each adapter's realized balance point on a fresh data seed.

    python recipes/precision_table.py --config recipes/configs/organism-precision.yaml
    python recipes/precision_table.py --config recipes/configs/organism-precision.yaml --targets 0 0.5 --data_seeds 0

Flags are PrecisionArguments' (align/precision.py) and the recipe's own (recipes/align_llava.py --help); each run is
the recipe, unchanged, in OUTPUT_DIR/seed-S/bT. Writes OUTPUT_DIR/precision.{json,csv,png}; a re-run resumes.
"""
import logging
import sys

from transformers import TrainingArguments

from align.arguments import TRAINING_DEFAULTS, AlignArguments
from align.precision import PrecisionArguments, describe_summary, format_table, run_precision
from data_gen.cli import parse, usage_error
from models import ModelArguments


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        precision, align, model, training = parse(
            [PrecisionArguments, AlignArguments, ModelArguments, TrainingArguments], argv, "recipes/precision_table.py",
            __doc__, {**TRAINING_DEFAULTS, "output_dir": "outputs/precision-organism"})
        result = run_precision(precision, align, model, training)
    except (ValueError, OSError) as e:
        return usage_error(e)
    if result:
        print(format_table(result["rows"]))
        print(describe_summary(result["summary"]))
        print(f"table and plot in {result['figure'].rsplit('/', 1)[0]} ({result['summary']['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
