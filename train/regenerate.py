"""python -m train.regenerate --config train/configs/tiny.json [key=value ...]: the regeneration stage
alone (`train.regeneration`): each record's last answer rewritten by the target itself."""

from __future__ import annotations

import sys

from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import add_debug_flag, run_cli
from train import config as cfgmod
from train.prepare import load_target, prepare_data
from train.tokenizer import load as load_tokenizer


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m train.regenerate", description=__doc__.split("\n\n")[0])
    cfgmod.add_arguments(p)
    add_debug_flag(p)
    args = p.parse_args(argv)

    def go() -> int:
        cfg = cfgmod.load(args.config, args.overrides + ["regenerate.enabled=true"])
        target = load_target(cfg.target)
        prepare_data(cfg, target, load_tokenizer(cfg.data.tokenizer, cfg.data.video_placeholder))
        print(f"wrote {cfg.regenerate.output}")
        return 0

    return run_cli(go, args.debug)


if __name__ == "__main__":
    sys.exit(main())
