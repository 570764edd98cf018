"""python -m train.regenerate --config train/configs/tiny.json [key=value ...]: the regeneration stage
alone (`train.regeneration`): each record's last answer rewritten by the target itself."""

from __future__ import annotations

import argparse
import sys

from train import config as cfgmod
from train.prepare import load_target, prepare_data
from train.tokenizer import load as load_tokenizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.regenerate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = cfgmod.load(args.config, args.overrides + ["regenerate.enabled=true"])
    target = load_target(cfg.target)
    prepare_data(cfg, target, load_tokenizer(cfg.data.tokenizer, cfg.data.video_placeholder))
    print(f"wrote {cfg.regenerate.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
