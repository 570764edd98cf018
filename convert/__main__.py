"""python -m convert {target,draft,export} ...: import HF checkpoints, export them back."""

from __future__ import annotations

import sys
from pathlib import Path

from convert.draft import convert_draft
from convert.target import DTYPES, convert_target, export
from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import add_debug_flag, run_cli


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m convert", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("target", help="HF target model directory -> converted checkpoint")
    t.add_argument("--src", required=True, help="HF directory (config.json + safetensors or .bin)")
    t.add_argument("--dst", required=True, help="output directory (Orbax params + config.json)")
    t.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype the parameters are stored in")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint already in --dst (kept until the new one is complete)")
    d = sub.add_parser("draft", help="released Sparrow / EAGLE-1/2 draft directory -> converted draft checkpoint")
    d.add_argument("--src", required=True, help="HF draft directory (config.json + pytorch_model.bin or safetensors)")
    d.add_argument("--target", required=True, help="the converted target (output of `convert target`) it drafts for")
    d.add_argument("--dst", required=True, help="output directory (Orbax params + config.json)")
    d.add_argument("--window", type=int, default=1024, help="text slots of the draft's ring-buffer KV cache")
    d.add_argument("--pinned", type=int, default=0, help="leading prompt slots the draft cache always keeps")
    d.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype the parameters are stored in")
    d.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint already in --dst (kept until the new one is complete)")
    e = sub.add_parser("export", help="converted checkpoint -> HF directory (safetensors)")
    e.add_argument("--src", required=True, help="converted checkpoint directory")
    e.add_argument("--dst", required=True, help="output HF directory")
    e.add_argument("--overwrite", action="store_true", help="replace a directory already in --dst")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    # A mistake (a missing or damaged file, a model of another kind, a mismatched key) is one line, exit 2.
    return run_cli(lambda: _run(args), args.debug, extra=(KeyError, ImportError))


def _run(args) -> int:
    for flag in ("src", "target"):  # a destination is replaced whole: never one of the inputs
        if getattr(args, flag, None) and Path(getattr(args, flag)).absolute() == Path(args.dst).absolute():
            raise ValueError(f"--dst {args.dst} is --{flag}: write the conversion to another directory")
    if args.command == "target":
        if not convert_target(args.src, args.dst, args.dtype, args.overwrite):
            print(f"note: no tokenizer files in {args.src}; `python -m infer` needs them in {args.dst}/tokenizer/",
                  file=sys.stderr)
    elif args.command == "draft":
        dropped = convert_draft(args.src, args.target, args.dst, args.window, args.pinned, args.dtype,
                                args.overwrite)
        if dropped:
            print(f"note: dropped {', '.join(dropped)}: the draft uses the target's own", file=sys.stderr)
    else:
        export(args.src, args.dst, args.overwrite)
    print(f"wrote {args.dst}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
