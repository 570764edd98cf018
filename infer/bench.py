"""python -m infer.bench {engine,video,tables,verify,scale,roofline,first-call}: benchmarks, every figure a
median after a warm-up and every comparison a ratio measured side by side in one run.

engine: a target of realistic depth (random weights, converted from a PyTorch checkpoint so both
  engines run the same weights) at several context lengths, batch 1:
  - our autoregressive decoding against HF transformers `generate` (PyTorch, CPU);
  - oracle-draft speculative decoding (chain of K, everything accepted: tau = K + 1) against our
    autoregressive decoding: the engine's speedup ceiling;
  - one draft proposal (Sparrow: text-only window cache) against the number of visual tokens, next to a
    draft that attends to every prompt token (what EAGLE/MSD drafts do): flat vs growing.
video: the embedded (or a given) target alone vs with its Sparrow draft against visual tokens: tau, DSR, ESR.
tables: the paper's robustness and MTP / IVSB / VATA ablation tables, from drafts trained alike for the demo
  target (examples/reproduce_tables.sh): tau, DSR, ESR against visual tokens; tau per ablation row.
verify: the target's forward over N tokens against one token, over caches of several context lengths.
roofline: each phase's time as a fraction of this machine's bandwidth or matmul bound, ours and HF's; the 7B
  targets' draft-verify cycle costs in target steps, from shapes.
first-call: a fresh process's first streamed answer, the decode loop compiled in the background or on its first call.
scale: the 7B targets on a 25.6k-token video prompt, compiled over shapes only: memory per device per path,
  bytes per step and memory-bound step times on H100 / H200 / TPU v5e / v5p.
A mistake is one line on stderr and exit code 2; --debug shows the traceback.
"""

from __future__ import annotations

import sys

from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import run_cli


def main(argv=None) -> int:
    # --debug anywhere (the video and verify subcommands parse their own arguments): tracebacks, not one line.
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    p = ArgumentParser(prog="python -m infer.bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("engine", help="our engine vs HF; oracle speculative ceiling; draft cost vs visual tokens")
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    e.add_argument("--layers", type=int, default=24, help="decoder layers of the random target")
    e.add_argument("--hidden", type=int, default=256, help="the random target's hidden size")
    e.add_argument("--contexts", type=ints, default=[4096, 16384], help="prompt lengths, comma-separated")
    e.add_argument("--visual", type=ints, default=[1024, 4096, 16384],
                   help="visual token counts of the draft-cost comparison, comma-separated")
    e.add_argument("--new-tokens", type=int, default=64, help="tokens generated per run")
    e.add_argument("--k", type=int, default=4, help="oracle chain length")
    e.add_argument("--repeats", type=int, default=3, help="timed runs per figure (their median)")
    sub.add_parser("video", help="target alone vs with its draft against visual tokens: tau, DSR, ESR", add_help=False)
    sub.add_parser("tables", help="the paper's robustness and ablation tables from drafts trained alike",
                   add_help=False)
    sub.add_parser("verify", help="the target's forward over N tokens vs one token, per context", add_help=False)
    sub.add_parser("scale", help="7B paths compiled over shapes: memory per device, bytes and time per step",
                   add_help=False)
    sub.add_parser("roofline", help="each phase against this machine's bandwidth and matmul bound; 7B cycle costs",
                   add_help=False)
    sub.add_parser("first-call", help="a fresh process's first streamed answer: the decode loop compiled ahead or not",
                   add_help=False)
    args, rest = p.parse_known_args(argv)
    return run_cli(lambda: _run(p, args, rest), debug)


def _run(p, args, rest) -> int:
    if args.command == "engine":
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        from infer.bench_engine import engine

        engine(args)
        return 0
    if args.command == "scale":
        from infer.bench_scale import main as scale_main

        return scale_main(rest)
    if args.command == "tables":
        from infer.bench_tables import main as tables_main

        return tables_main(rest)
    if args.command == "roofline":
        from infer.bench_roofline import main as roofline_main

        return roofline_main(rest)
    if args.command == "first-call":
        from infer.bench_first_call import main as first_call_main

        return first_call_main(rest)
    if args.command == "verify":
        from infer.bench_verify import main as verify_main

        return verify_main(rest)
    from infer.bench_video import main as video_main

    return video_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
