"""python -m infer --target CKPT [--draft CKPT] --video FILE --prompt TEXT: see `infer/cli.py`."""

import sys

from infer.cli import main

if __name__ == "__main__":
    sys.exit(main())
