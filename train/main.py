"""python -m train.main --config FILE [key=value ...]: train a Sparrow draft against a frozen target.

Multi-host (a TPU pod, or several processes): pass --distributed (auto-detected coordinator on Cloud TPU)
or --coordinator HOST:PORT --num-processes N --process-id I; every process runs the same command.
"""

from __future__ import annotations

import json
import sys

import jax

from sparrow_jax import compile_cache
from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import add_debug_flag, one_line, run_cli
from train import config, sharding
from train.trainer import run


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m train.main", description=__doc__.split("\n\n")[0])
    config.add_arguments(p, required=False)
    p.add_argument("--print-config", action="store_true",
                   help="print every setting this command would train with (the defaults, under --config, under "
                        "the overrides) as JSON, and exit without training")
    p.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() with auto-detection")
    p.add_argument("--coordinator", help="HOST:PORT of process 0, for several processes without auto-detection")
    p.add_argument("--num-processes", type=int, help="with --coordinator: how many processes run the command")
    p.add_argument("--process-id", type=int, help="with --coordinator: this process's index, 0 .. N-1")
    compile_cache.add_flag(p)
    add_debug_flag(p)
    args = p.parse_intermixed_args(argv)
    command = _print_config if args.print_config else _main
    return run_cli(lambda: command(args), args.debug)  # a user's mistake: one line, exit 2


def _print_config(args) -> int:
    """The resolved settings on stdout (a valid --config file); what would stop training, if anything, on stderr."""
    print(json.dumps(config.resolve(args.config, args.overrides), indent=2))
    try:
        config.load(args.config, args.overrides)
    except ValueError as e:  # e.g. the defaults alone: no target.path yet
        print(f"note: training with these settings would stop: {one_line(e)}", file=sys.stderr)
    return 0


def _main(args) -> int:
    compile_cache.from_args(args)
    cfg = config.load(args.config, args.overrides)
    if args.coordinator:
        if jax.config.jax_platforms in ("cpu", None):  # CPU processes talk through gloo
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.distributed:
        jax.distributed.initialize()
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    result = run(cfg, mesh)
    if jax.process_index() == 0:
        last = result.history[-1] if result.history else {}
        print(f"done: step {cfg.steps}, loss {last.get('loss', float('nan')):.4f}; {cfg.mode} written to {result.export}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
