"""The least a target's step must move and compute: the floors a roofline divides by.

A decode step (or a verify forward over a few tokens) is memory-bound: it must read every decoder weight
once and the KV entries up to the context, so `step_bytes / read bandwidth` is the fastest it can run.
A prefill is compute-bound: `prefill_flops / matmul rate`. `python -m infer.bench roofline` measures the
machine's two rates and divides; `scale_paths` counts the same bytes for the 7B shapes (per device).
"""

from __future__ import annotations

import numpy as np

from sparrow_jax.aot import tree_bytes


def weight_bytes(lm_params, tied: bool) -> int:
    """Bytes of the language model's weights one step reads (`lm_params`: its state, arrays or shapes):
    all of them but the token-embedding table, of which one row per token is read, unless the lm_head is
    tied to it (then the table is the lm_head, read whole)."""
    total = tree_bytes(lm_params)
    return total if tied else total - tree_bytes(lm_params["embed_tokens"])


def kv_bytes(cfg, context: int, itemsize: int, batch: int = 1) -> int:
    """Bytes of keys and values `context` committed tokens hold (`cfg` a TextConfig), all layers."""
    return 2 * cfg.num_layers * batch * context * cfg.num_kv_heads * cfg.head_dim * itemsize


def step_bytes(target, context: int) -> int:
    """The floor of one decode step (or verify forward) of `target` over a cache of `context` tokens."""
    from flax import nnx

    lm = target.lm
    params = nnx.state(lm)
    itemsize = np.dtype(lm.dtype).itemsize
    return weight_bytes(params, lm.lm_head is None) + kv_bytes(lm.config, context, itemsize)


def prefill_flops(cfg, tokens: int) -> float:
    """Multiply-adds x 2 of a causal prefill of `tokens` tokens (`cfg` a TextConfig): the weight matmuls
    (q/k/v/o, the gated MLP, the lm_head of the last token only) and attention's two products over the
    lower triangle (scores and values, tokens^2 / 2 pairs per head)."""
    h, d = cfg.hidden_size, cfg.head_dim
    per_token = (h * cfg.num_heads * d * 2 + h * cfg.num_kv_heads * d * 2 + 3 * h * cfg.intermediate_size)
    attention = 2 * cfg.num_heads * d * tokens * tokens / 2  # q.k and p.v: d multiply-adds each per pair
    return 2.0 * (cfg.num_layers * (per_token * tokens + attention) + h * cfg.vocab_size)


def read_bandwidth(nbytes: int = 2**30, repeats: int = 5) -> float:
    """This device's read bandwidth, bytes/s: a jitted sum over a float32 array of `nbytes` (median)."""
    import jax
    import jax.numpy as jnp

    from sparrow_jax.timing import median_time

    x = jnp.ones((nbytes // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    return x.nbytes / median_time(lambda: jax.block_until_ready(total(x)), repeats)


def matmul_rate(n: int = 2048, dtype="float32", repeats: int = 5) -> float:
    """This device's matmul rate, FLOP/s: a jitted [n, n] @ [n, n] product in `dtype` (median)."""
    import jax
    import jax.numpy as jnp

    from sparrow_jax.timing import median_time

    a = jnp.ones((n, n), dtype)
    product = jax.jit(lambda a: a @ a)
    return 2.0 * n**3 / median_time(lambda: jax.block_until_ready(product(a)), repeats)
