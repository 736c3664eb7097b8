"""GPU figures of every registered family in one command: scoring rows/s, one LoRA step and peak memory of each
family's recipe checkpoint shape (random weights, no download).

    python recipes/gpu_figures.py --readme README.md          # one GPU, bf16, every family
    python recipes/gpu_figures.py --device cpu --dtype float32 --tiny --image_size 64   # tiny models, same code

Flags: align/gpu_figures.py (GPUFiguresArguments).
"""
import sys

from align.gpu_figures import main

if __name__ == "__main__":
    sys.exit(main())
