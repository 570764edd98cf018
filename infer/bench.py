"""python -m infer.bench {engine,video}: benchmarks, every figure a median after a warm-up and every
comparison a ratio measured side by side in one run.

engine: a target of realistic depth (random weights, converted from a PyTorch checkpoint so both
  engines run the same weights) at several context lengths, batch 1:
  - our autoregressive decoding against HF transformers `generate` (PyTorch, CPU);
  - oracle-draft speculative decoding (chain of K, everything accepted: tau = K + 1) against our
    autoregressive decoding: the engine's speedup ceiling;
  - one draft proposal (Sparrow: text-only window cache) against the number of visual tokens, next to a
    draft that attends to every prompt token (what EAGLE/MSD drafts do): flat vs growing.
video: the embedded (or a given) target alone vs with its Sparrow draft against visual tokens: tau, DSR, ESR.
verify: the target's forward over N tokens against one token, over caches of several context lengths.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def engine(args) -> None:
    import jax
    import jax.numpy as jnp
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import infer
    import sparrow_jax
    from convert.target import convert_target
    from sparrow_jax.config import DraftConfig, TextConfig
    from sparrow_jax.models import build_model
    from sparrow_jax.sampling import SamplingConfig
    from sparrow_jax.spec.proposer import OracleProposer, SparrowProposer
    from sparrow_jax.spec.tree import TreeShape

    hf_cfg = Qwen2Config(vocab_size=4096, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=65536)
    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(hf_cfg).eval()
    root = tempfile.mkdtemp()
    hf.save_pretrained(f"{root}/hf")
    convert_target(f"{root}/hf", f"{root}/ours")
    target = sparrow_jax.load(f"{root}/ours")
    rng = np.random.default_rng(0)
    n, k = args.new_tokens, args.k
    print(f"target: {args.layers} layers, hidden {args.hidden}, batch 1, {n} new tokens, greedy, "
          f"{args.repeats} repeats (median)")
    print(f"{'context':>8} {'HF tok/s':>9} {'ours tok/s':>11} {'ours/HF':>8} {'oracle K=' + str(k) + ' tok/s':>17} "
          f"{'oracle/ours':>12} {'tau':>5}")
    for ctx in args.contexts:
        ids = rng.integers(0, 4000, ctx)
        ref = infer.generate(target, [ids], max_new_tokens=n)
        ours = statistics.median(
            infer.generate(target, [ids], max_new_tokens=n).stats["decode_s"] for _ in range(args.repeats))
        reference = jnp.asarray(np.append(ref.tokens[0, 1:], [0] * (k + 2))[None].astype(np.int32))
        oracle = OracleProposer(reference, jnp.zeros(reference.shape, bool), 4096, TreeShape.chain(k))
        spec = [infer.generate(target, [ids], max_new_tokens=n, draft=oracle) for _ in range(args.repeats + 1)]
        assert spec[-1].texts() == ref.texts(), "speculative output differs from autoregressive"
        spec_s = statistics.median(s.stats["decode_s"] for s in spec[1:])
        x = torch.from_numpy(ids[None])
        with torch.no_grad():
            gen = lambda m: hf.generate(x, max_new_tokens=m, min_new_tokens=m, do_sample=False)  # noqa: E731
            hf_s = median_time(lambda: gen(n), args.repeats) - median_time(lambda: gen(1), args.repeats)
        tps = lambda s: (n - 1) / s  # noqa: E731  tokens after the first, which prefill produces
        print(f"{ctx:>8} {tps(hf_s):>9.1f} {tps(ours):>11.1f} {hf_s / ours:>7.2f}x {tps(spec_s):>17.1f} "
              f"{ours / spec_s:>11.2f}x {spec[-1].stats['tau']:>5.2f}")
        sys.stdout.flush()

    # Draft proposal cost against visual tokens.
    lm = target.lm.config
    layers = TextConfig(vocab_size=lm.vocab_size, hidden_size=lm.hidden_size, intermediate_size=4 * lm.hidden_size,
                        num_layers=1, num_heads=4, num_kv_heads=4, head_dim=lm.hidden_size // 4)
    tree, text = TreeShape(), 64
    print(f"\ndraft proposal (EAGLE-2 tree {tree.top_k}/{tree.depth}/{tree.total}), {text} text tokens, median ms:")
    print(f"{'visual tokens':>13} {'Sparrow (text window)':>22} {'draft over all tokens':>22} {'ratio':>7}")
    base = None
    for visual in args.visual:
        row = []
        for sees_all in (False, True):
            seen = text + visual if sees_all else text
            draft = build_model(DraftConfig(layers, window=seen if sees_all else 1024))
            prop = SparrowProposer.create(draft, tree, SamplingConfig(), chunk=64)
            hidden = jnp.asarray(rng.standard_normal((1, seen, lm.hidden_size)), jnp.float32)
            ids = jnp.asarray(rng.integers(0, 4000, (1, seen)), jnp.int32)
            index = jnp.arange(-(-seen // 64) * 64)[None].clip(max=seen - 1).astype(jnp.int32)
            state = jax.jit(lambda h, i, ix: prop.start(target, h, i, ix, jnp.asarray([seen]), jnp.asarray([5])))(
                hidden, ids, index)
            propose = jax.jit(lambda st: prop.propose(target, st, jnp.asarray([5]), jnp.asarray([1]), jax.random.key(0))[0].tokens)
            row.append(1000 * median_time(lambda: jax.block_until_ready(propose(state)), args.repeats))
        base = base or row[0]
        print(f"{visual:>13} {row[0]:>22.2f} {row[1]:>22.2f} {row[1] / row[0]:>6.1f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m infer.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("engine", help="our engine vs HF; oracle speculative ceiling; draft cost vs visual tokens")
    e.add_argument("--layers", type=int, default=24)
    e.add_argument("--hidden", type=int, default=256)
    e.add_argument("--contexts", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 16384])
    e.add_argument("--visual", type=lambda s: [int(x) for x in s.split(",")], default=[1024, 4096, 16384])
    e.add_argument("--new-tokens", type=int, default=64)
    e.add_argument("--k", type=int, default=4, help="oracle chain length")
    e.add_argument("--repeats", type=int, default=3)
    sub.add_parser("video", help="target alone vs with its draft against visual tokens: tau, DSR, ESR", add_help=False)
    sub.add_parser("verify", help="the target's forward over N tokens vs one token, per context", add_help=False)
    args, rest = p.parse_known_args(argv)
    if args.command == "engine":
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        engine(args)
        return 0
    if args.command == "verify":
        from infer.bench_verify import main as verify_main

        return verify_main(rest)
    from infer.bench_video import main as video_main

    return video_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
