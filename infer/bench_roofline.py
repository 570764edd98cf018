"""python -m infer.bench roofline: each phase's time against the fastest this machine allows.

The machine's read bandwidth and matmul rate are measured first (`sparrow_jax.roofline`). Then, on the
engine benchmark's random target (the same weights in HF transformers and ours), per context: an
autoregressive step and a verify forward over a few tokens (memory-bound: their floor is every weight and
the KV cache read once, `roofline.step_bytes`) and the prompt's prefill (compute-bound:
`roofline.prefill_flops`), ours and HF's, each as a percentage of its bound (bound time / measured time).
Last, the 7B targets from shapes alone (`scale_paths`, nothing allocated or compiled): the bytes per device
one step and one draft-verify cycle read, and so a cycle's cost in target steps, the figure speculative
decoding divides tau by on a memory-bound accelerator; with the draft reading the target's lm_head at each
level, and with its own head over a reduced vocabulary (`--draft-vocab`).
"""

from __future__ import annotations

import os
import statistics

import numpy as np

from sparrow_jax.cli_help import ArgumentParser


def main(argv=None) -> int:
    from sparrow_jax import scale_configs

    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    words = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    p = ArgumentParser(prog="python -m infer.bench roofline", description=__doc__)
    p.add_argument("--layers", type=int, default=24, help="decoder layers of the random target")
    p.add_argument("--hidden", type=int, default=256, help="the random target's hidden size")
    p.add_argument("--contexts", type=ints, default=[4096, 16384], help="prompt lengths, comma-separated")
    p.add_argument("--verify", type=ints, default=[5, 30], help="tokens per verify forward, comma-separated")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure (their median)")
    p.add_argument("--family", type=words, default=list(scale_configs.TARGETS),
                   help="7B target families for the cycle costs, comma-separated (empty: none)")
    p.add_argument("--draft-vocab", type=int, default=32768,
                   help="the 7B cycles also with a draft over this many tokens (EAGLE-3's reduced vocabulary; 0: not)")
    args = p.parse_args(argv)
    if bad := [f for f in args.family if f not in scale_configs.TARGETS]:
        p.error(f"--family: unknown {', '.join(bad)}; choose from {', '.join(scale_configs.TARGETS)}")
    if args.new_tokens < 2 or args.repeats < 1 or min(args.contexts + args.verify) < 1 or args.draft_vocab < 0:
        p.error("--new-tokens must be >= 2, --repeats, --contexts and --verify >= 1, --draft-vocab >= 0")
    small_target(args)
    for family in args.family:
        cycle_costs(family, args.draft_vocab)
    return 0


def small_target(args) -> None:
    import jax
    import torch

    from infer.bench_engine import hf_step_s, random_target
    from sparrow_jax import roofline
    from sparrow_jax.generation import generate
    from sparrow_jax.generation.autotune import verify_cost
    from sparrow_jax.timing import median_time

    bandwidth, rate = roofline.read_bandwidth(), roofline.matmul_rate()
    print(f"machine: {jax.devices()[0].device_kind} ({os.cpu_count()} host cores), read bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s (a float32 sum over 1 GiB), matmul {rate / 1e9:.1f} GFLOP/s (float32, "
          "2048^3); medians of 5")
    hf, target = random_target(args.layers, args.hidden)
    cfg = target.lm.config
    print(f"target: random Qwen2, {cfg.num_layers} layers x {cfg.hidden_size}, {np.dtype(target.lm.dtype).name}, "
          f"batch 1; ms, medians of {args.repeats}; % of bound = bound time / measured time")
    print("| context | phase | floor | ours ms | ours % of bound | HF ms | HF % of bound | ours / HF |\n"
          "|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    n = args.new_tokens
    for ctx in args.contexts:
        ids = rng.integers(0, 4000, ctx)
        generate(target, [ids], max_new_tokens=n)  # compiles
        runs = [generate(target, [ids], max_new_tokens=n).stats for _ in range(args.repeats)]
        ours_step = statistics.median(r["decode_s"] for r in runs) / (n - 1)
        ours_prefill = statistics.median(r["prefill_s"] for r in runs)
        hf_step = hf_step_s(hf, ids, n, args.repeats)
        x = torch.from_numpy(ids[None])
        with torch.no_grad():
            hf_prefill = median_time(lambda: hf(x), args.repeats)
        step_bytes, flops = roofline.step_bytes(target, ctx), roofline.prefill_flops(cfg, ctx)
        step_floor, prefill_floor = step_bytes / bandwidth, flops / rate
        pct = lambda floor, s: f"{100 * floor / s:.0f}%"  # noqa: E731
        mb = f"{step_bytes / 1e6:.1f} MB"
        print(f"| {ctx} | AR step | {mb} | {1e3 * ours_step:.2f} | {pct(step_floor, ours_step)} | "
              f"{1e3 * hf_step:.2f} | {pct(step_floor, hf_step)} | {hf_step / ours_step:.2f}x |")
        one, *verify = verify_cost(target, ctx, [1, *args.verify], repeats=args.repeats)
        for tokens, ms in zip(args.verify, verify):
            print(f"| {ctx} | verify {tokens} tokens ({ms / one:.2f}x of 1) | {mb} | {ms:.2f} | "
                  f"{pct(step_floor, ms / 1e3)} | - | - | - |")
        print(f"| {ctx} | prefill | {flops / 1e9:.1f} GFLOP | {1e3 * ours_prefill:.0f} | "
              f"{pct(prefill_floor, ours_prefill)} | {1e3 * hf_prefill:.0f} | {pct(prefill_floor, hf_prefill)} | "
              f"{hf_prefill / ours_prefill:.2f}x |", flush=True)


def cycle_costs(family: str, draft_vocab: int) -> None:
    from sparrow_jax.generation.speculative.tree import TreeShape
    from sparrow_jax.scale_paths import ScaleRun, ScaleSetting

    runs = {v: ScaleRun(ScaleSetting(family, draft_vocab=v)) for v in dict.fromkeys((0, draft_vocab))}
    run = runs[0]
    step = run.floor_bytes(None)
    print(f"\n7B {family} (bfloat16, {run.setting.prompt_tokens}-token prompt, {run.video_tokens} visual tokens; "
          f"shapes only): one step reads {step / 1e9:.2f} GB")
    print("| cycle | draft vocabulary | GB per cycle | target steps |\n|---|---|---|---|")
    for name, tree in (("chain 3", TreeShape.chain(3)), ("tree 8/3/30", TreeShape())):
        for vocab, r in runs.items():
            cycle = r.floor_bytes(tree)
            words = f"{run.config.text.vocab_size} (the target's lm_head)" if vocab == 0 else f"{vocab} (its own head)"
            print(f"| {name} | {words} | {cycle / 1e9:.2f} | {cycle / step:.3f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
