"""python -m infer.bench verify: what the target's verify forward costs against the number of tokens it
checks, over a cache of each context length, as a ratio to one autoregressive step (N = 1), measured
side by side in one run.

Speculative decoding pays off when checking N draft tokens costs about one step: then DSR approaches tau.
On an accelerator the weights and the cache are read once whatever N is; on a CPU the attention's
arithmetic grows with N, so a cycle costs more than a step and DSR stays under tau.
Each figure is the median over `--repeats` of a jitted loop of `--steps` forwards (the next input is the
previous argmax, so no forward can be skipped), cache filled with random keys and values.
"""

from __future__ import annotations


from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.timing import median_time


def main(argv=None) -> int:
    from sparrow_jax import demo

    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = ArgumentParser(prog="python -m infer.bench verify", description=__doc__)
    p.add_argument("--target", default=str(demo.TARGET), help="converted target")
    p.add_argument("--contexts", type=ints, default=[4096, 16384], help="committed tokens in the cache")
    p.add_argument("--tokens", type=ints, default=[1, 2, 4, 8, 16, 30], help="tokens checked per forward")
    p.add_argument("--steps", type=int, default=20, help="forwards per timed loop")
    p.add_argument("--repeats", type=int, default=5, help="timed loops per figure (their median)")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from flax import nnx

    import sparrow_jax
    from sparrow_jax.attention import round_capacity
    from sparrow_jax.kv_cache import KVCache, causal_mask

    target = sparrow_jax.load(args.target)
    cfg = target.lm.config
    graphdef, state = nnx.split(target)

    @jax.jit
    def loop(state, cache, tokens):
        model = nnx.merge(graphdef, state)
        n = tokens.shape[1]

        def forward(_, carry):
            tokens, cache = carry
            out = model.decode(model.embed(tokens), cache.lengths[:, None] + jnp.arange(n), cache=cache,
                               mask=causal_mask(1, n))
            return jnp.argmax(model.logits(out.hidden), -1).astype(jnp.int32), out.cache  # written, not committed

        return jax.lax.fori_loop(0, args.steps, forward, (tokens, cache))[0]

    print(f"target {args.target} ({cfg.num_layers} layers x {cfg.hidden_size}, {cfg.num_kv_heads} kv heads); "
          f"{jax.devices()[0].device_kind}; ms per forward (median of {args.repeats} loops of {args.steps}), "
          "and its ratio to one token")
    print(f"{'context':>8} " + " ".join(f"{f'N={n}':>14}" for n in args.tokens))
    for ctx in args.contexts:
        shape = (cfg.num_layers, 1, cfg.num_kv_heads, round_capacity(ctx + max(args.tokens)), cfg.head_dim)
        k, v = jax.random.normal(jax.random.key(0), (2, *shape), target.lm.dtype)
        cache = KVCache(k, v, jnp.asarray([ctx], jnp.int32))
        ms = []
        for n in args.tokens:
            tokens = jnp.ones((1, n), jnp.int32)
            ms.append(1000 * median_time(lambda: jax.block_until_ready(loop(state, cache, tokens)),
                                         args.repeats) / args.steps)
        print(f"{ctx:>8} " + " ".join(f"{t:>7.2f} ({t / ms[0]:.2f}x)" for t in ms), flush=True)
    return 0
