"""python -m align COMMAND ...: the same as the `modality-align` console command."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
