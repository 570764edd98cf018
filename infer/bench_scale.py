"""python -m infer.bench scale: the paper's setting (7B targets, bfloat16, a ~25.6k-token video prompt)
compiled ahead of time over shapes only, no weights allocated and no accelerator needed
(`sparrow_jax.scale_paths`): per path, the memory the compiled program needs per device and the bytes one
step reads, with the memory-bound step time on H100, H200, TPU v5e and v5p.

Figures are per device (with --mesh, each device's shards). peak GiB: the compiled program's arguments
+ outputs + temporaries on this backend (a CPU compile keeps float32 copies of the bfloat16 weights for its
matmuls, so it overstates an accelerator's); resident GiB: arguments + outputs alone (weights, caches,
inputs), the least any device needs. Step: one autoregressive token (decode) or one draft-verify cycle
(chain, tree) at the prompt's context; its time is bytes / bandwidth, a lower bound (a cycle yields tau
tokens). vision and prefill are one-shot and compute-bound: no step time.
"""

from __future__ import annotations

import sys

from sparrow_jax.cli_help import ArgumentParser

# name, memory bandwidth (bytes/s), memory per chip (GiB)
HARDWARE = (("H100", 3.35e12, 80), ("H200", 4.8e12, 141), ("v5e", 819e9, 16), ("v5p", 2.76e12, 95))
GIB = 2**30


def main(argv=None) -> int:
    from sparrow_jax import scale_configs
    from sparrow_jax.scale_paths import PATHS

    words = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    p = ArgumentParser(prog="python -m infer.bench scale", description=__doc__)
    p.add_argument("--family", type=words, default=list(scale_configs.TARGETS),
                   help="target families, comma-separated")
    p.add_argument("--paths", type=words, default=list(PATHS), help="paths to compile, comma-separated")
    p.add_argument("--layers", type=int, help="target layers to compile (unset: all 28); the memory figures are "
                   "then those of that depth")
    p.add_argument("--frames", type=int, help="video frames (unset: the paper's, 128 for LLaVA-OV, 160 for Qwen2.5-VL)")
    p.add_argument("--prompt-tokens", type=int, default=scale_configs.PROMPT_TOKENS, help="prompt length in tokens")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens the decode loops are compiled for")
    p.add_argument("--mesh", metavar="AXIS=N[,AXIS=N]",
                   help="compile for a mesh of the devices found, as python -m infer --mesh shards (e.g. tensor=8; "
                        "figures per device). On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8 makes 8 "
                        "devices (default: one device)")
    args = p.parse_args(argv)
    for name, values, known in (("--family", args.family, scale_configs.TARGETS), ("--paths", args.paths, PATHS)):
        if bad := [v for v in values if v not in known]:
            p.error(f"{name}: unknown {', '.join(bad)}; choose from {', '.join(known)}")
    print(table(figures(args), args.mesh or "1 device"))
    return 0


def figures(args):
    """The PathFigures of every family and path `args` asks for, compiled one after another."""
    from infer.options import mesh_of
    from sparrow_jax.scale_paths import ScaleRun, ScaleSetting

    out, mesh = [], mesh_of(args)
    for family in args.family:
        run = ScaleRun(ScaleSetting(family, layers=args.layers, frames=args.frames, prompt_tokens=args.prompt_tokens,
                                    max_new_tokens=args.max_new_tokens), mesh=mesh)
        for path in args.paths:
            out.append(run.measure(path))
            print(f"compiled {family} {path} in {out[-1].compile_s:.1f} s", file=sys.stderr, flush=True)
    return out


def table(figs, mesh: str) -> str:
    """The scale table of `figs` (PathFigures, compiled on `mesh`, as --mesh names it) as Markdown."""
    head = ["family", "path", "mesh", "prompt / video tokens", "peak GiB", "resident GiB", "GB per step",
            *(f"{name} ms ({bw / 1e12:.2f} TB/s, {mem} GiB)" for name, bw, mem in HARDWARE)]
    rows = []
    for f in figs:
        fp = f.footprint
        resident = fp.argument + fp.output - fp.alias
        times = []
        for _, bw, mem in HARDWARE:
            fits = "" if resident <= mem * GIB else " (does not fit)"
            times.append(("-" if f.step_bytes is None else f"{f.step_bytes / bw * 1e3:.2f}") + fits)
        rows.append([f.family, f.path, mesh, f"{f.prompt_tokens} / {f.video_tokens}", f"{fp.peak / GIB:.1f}",
                     f"{resident / GIB:.1f}", "-" if f.step_bytes is None else f"{f.step_bytes / 1e9:.2f}", *times])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
