"""Training throughput: python -m train.bench --config FILE [key=value ...]

Runs the trainer with a metric fetch every step and reports the median step time and tokens/s over the
steps after `--warmup` (compilation excluded). Tokens are the real (unpadded) tokens of the global batch,
visual placeholders included; every row is computed at the padded `data.seq_len`.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import add_debug_flag, run_cli
from train import config
from train.trainer import run


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0])
    config.add_arguments(p)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the medians")
    add_debug_flag(p)
    args = p.parse_intermixed_args(argv)
    return run_cli(lambda: _run(args), args.debug)


def _run(args) -> int:
    cfg = config.load(args.config, args.overrides + ["log.every=1", "log.progress=false", "checkpoint.every=100000"])
    rows = run(cfg).history[args.warmup:]
    if not rows:
        raise ValueError(f"no steps after --warmup {args.warmup}; raise steps")
    result = {
        "config": args.config, "overrides": args.overrides, "steps_measured": len(rows),
        "batch": cfg.data.batch_size, "seq_len": cfg.data.seq_len,
        "median_step_s": float(np.median([r["step_time_s"] for r in rows])),
        "median_tokens_per_s": float(np.median([r["tokens_per_s"] for r in rows])),
        "padded_tokens_per_s": cfg.data.batch_size * cfg.data.seq_len / float(np.median([r["step_time_s"] for r in rows])),
        "loss_first_last": [rows[0]["loss"], rows[-1]["loss"]],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
