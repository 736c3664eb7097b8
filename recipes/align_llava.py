"""Move a VLM's balance point with uncertainty-aware LoRA, proven by the same measurement code.

    accelerate launch recipes/align_llava.py                        # the embedded model organism
    accelerate launch recipes/align_llava.py --config recipes/configs/llava-1.5-7b.yaml
    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml recipes/align_llava.py --target_balance_point 0.5
"""
import logging
import sys

from align.config import parse_config
from align.recipe import AlignConfig, run_alignment


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = parse_config(AlignConfig)
        result = run_alignment(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result:
        b, a = result["base"]["balance_point"], result["aligned"]["balance_point"]
        print(f"balance point: {b['description']} -> {a['description']} (target {result['target_balance_point']:+.2f})")
        print(f"adapter, model card and report in {cfg.output_dir} ({result['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
