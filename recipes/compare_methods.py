"""Every way to move a model's modality preference, side by side, on data none of them trained on.

    python recipes/compare_methods.py --config recipes/configs/organism-compare.yaml
    python recipes/compare_methods.py --config recipes/configs/organism-compare.yaml --methods soft steer --targets 0.5

Flags are CompareArguments' (align/compare.py) and the recipe's own (recipes/align_llava.py --help); each run is the
recipe, unchanged, in OUTPUT_DIR/METHOD/bT. Writes OUTPUT_DIR/comparison.{json,csv,png}; a re-run resumes.
"""
import sys

from align.commands import compare_main


def main(argv: list[str] | None = None) -> int:
    return compare_main(argv, prog="recipes/compare_methods.py", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
