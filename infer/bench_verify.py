"""python -m infer.bench verify: what the target's verify forward costs against the number of tokens it
checks, over a cache of each context length, as a ratio to one autoregressive step (N = 1), measured
side by side in one run.

Speculative decoding pays off when checking N draft tokens costs about one step: then DSR approaches tau.
On an accelerator the weights and the cache are read once whatever N is; on a CPU the attention's
arithmetic grows with N, so a cycle costs more than a step and DSR stays under tau.
Each figure is the median over `--repeats` of a jitted loop of `--steps` forwards (the next input is the
previous argmax, so no forward can be skipped), cache filled with random keys and values
(`sparrow_jax.generation.autotune.verify_cost`, which `--tree auto` runs once per device and target).
"""

from __future__ import annotations

from sparrow_jax.cli_help import ArgumentParser


def main(argv=None) -> int:
    from sparrow_jax import demo

    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = ArgumentParser(prog="python -m infer.bench verify", description=__doc__)
    p.add_argument("--target", default=str(demo.TARGET), help="converted target")
    p.add_argument("--contexts", type=ints, default=[4096, 16384], help="committed tokens in the cache")
    p.add_argument("--tokens", type=ints, default=[1, 2, 4, 8, 16, 30], help="tokens checked per forward")
    p.add_argument("--steps", type=int, default=20, help="forwards per timed loop")
    p.add_argument("--repeats", type=int, default=5, help="timed loops per figure (their median)")
    p.add_argument("--save", action="store_true",
                   help="measure what --tree auto reads (its contexts and token counts, whatever --contexts/--tokens "
                        "say) and write it to the cache, replacing an earlier measurement: run on a quiet machine")
    args = p.parse_args(argv)

    import jax

    import sparrow_jax
    from sparrow_jax.generation import autotune

    target = sparrow_jax.load(args.target)
    cfg = target.lm.config
    print(f"target {args.target} ({cfg.num_layers} layers x {cfg.hidden_size}, {cfg.num_kv_heads} kv heads); "
          f"{jax.devices()[0].device_kind}; ms per forward (median of {args.repeats} loops of {args.steps}), "
          "and its ratio to one token")
    if args.save:  # --tree auto's measurement, written to its cache
        curves = autotune.cached_costs(target, autotune.Auto(steps=args.steps, repeats=args.repeats), refresh=True)
    else:
        curves = [autotune.CostCurve(tuple(args.tokens), tuple(autotune.verify_cost(
            target, ctx, args.tokens, args.steps, args.repeats)), ctx) for ctx in args.contexts]
    print(f"{'context':>8} " + " ".join(f"{f'N={n}':>14}" for n in curves[0].tokens))
    for c in curves:
        print(f"{c.context:>8} " + " ".join(f"{t:>7.2f} ({t / c.ms[0]:.2f}x)" for t in c.ms), flush=True)
    if args.save:
        print(f"saved for --tree auto in {autotune.cost_dir()}")
    return 0
