"""python -m convert {target,export} ...: import HF checkpoints, export them back."""

from __future__ import annotations

import argparse
import sys

from convert.target import DTYPES, convert_target, export


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("target", help="HF target model directory -> converted checkpoint")
    t.add_argument("--src", required=True, help="HF directory (config.json + safetensors or .bin)")
    t.add_argument("--dst", required=True, help="output directory (Orbax params + config.json)")
    t.add_argument("--dtype", default="float32", choices=DTYPES)
    t.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --dst")
    e = sub.add_parser("export", help="converted checkpoint -> HF directory (safetensors)")
    e.add_argument("--src", required=True, help="converted checkpoint directory")
    e.add_argument("--dst", required=True, help="output HF directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "target":
            convert_target(args.src, args.dst, args.dtype, args.overwrite)
        else:
            export(args.src, args.dst)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
