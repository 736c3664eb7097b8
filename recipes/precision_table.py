"""The precision table: targets x training data seeds, each adapter's realized balance point on a fresh data seed.

    python recipes/precision_table.py --config recipes/configs/organism-precision.yaml
    python recipes/precision_table.py --config recipes/configs/organism-precision.yaml --targets 0 0.5 --data_seeds 0

Flags are PrecisionArguments' (align/precision.py) and the recipe's own (recipes/align_llava.py --help); each run is
the recipe, unchanged, in OUTPUT_DIR/seed-S/bT. Writes OUTPUT_DIR/precision.{json,csv,png}; a re-run resumes.
"""
import sys

from align.commands import precision_main


def main(argv: list[str] | None = None) -> int:
    return precision_main(argv, prog="recipes/precision_table.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
