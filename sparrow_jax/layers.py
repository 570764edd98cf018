"""Basic parameterised layers shared by every model family.

Parameters carry logical axis names (see `sparrow_jax.sharding`); layers never name mesh axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]


def param(rngs: nnx.Rngs | None, shape, axes: Axes, dtype, init: str = "normal", std: float = 0.02) -> nnx.Param:
    """A parameter tagged with logical axis names. `rngs=None` is only valid for deterministic inits."""
    if init == "normal":
        value = std * jax.random.normal(rngs.params(), shape, jnp.float32)
    elif init == "ones":
        value = jnp.ones(shape, jnp.float32)
    elif init == "zeros":
        value = jnp.zeros(shape, jnp.float32)
    else:
        raise ValueError(f"unknown init {init!r}")
    return nnx.Param(value.astype(dtype), out_sharding=axes, eager_sharding=False)


class Dense(nnx.Module):
    """y = x @ kernel (+ bias), kernel [in, out] (the transpose of a torch Linear weight)."""

    def __init__(self, d_in: int, d_out: int, axes: Axes, *, bias: bool, dtype, rngs: nnx.Rngs):
        self.kernel = param(rngs, (d_in, d_out), axes, dtype)
        self.bias = param(None, (d_out,), axes[1:], dtype, init="zeros") if bias else None

    def __call__(self, x):
        y = x @ self.kernel[...]
        return y if self.bias is None else y + self.bias[...]


class RMSNorm(nnx.Module):
    """Llama/Qwen2 RMSNorm: normalise in float32, cast back, then scale (HF order)."""

    def __init__(self, dim: int, eps: float, *, dtype):
        self.eps = eps
        self.scale = param(None, (dim,), ("norm",), dtype, init="ones")

    def __call__(self, x):
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * x32.astype(dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, dtype):
        self.eps = eps
        self.scale = param(None, (dim,), ("norm",), dtype, init="ones")
        self.bias = param(None, (dim,), ("norm",), dtype, init="zeros")

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


class Embed(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, dtype, rngs: nnx.Rngs):
        self.embedding = param(rngs, (vocab, dim), ("vocab", "embed"), dtype)

    def __call__(self, ids):
        return jnp.take(self.embedding[...], ids, axis=0)

    def attend(self, x):
        """Tied output head: logits against the embedding table."""
        return jnp.einsum("...d,vd->...v", x, self.embedding[...])


MLP_CHUNK = 2048  # positions per chunk of a long SwiGLU (see `SwiGLU.__call__`)


class SwiGLU(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, bias: bool, dtype, rngs: nnx.Rngs):
        self.gate_proj = Dense(dim, hidden, ("embed", "mlp"), bias=bias, dtype=dtype, rngs=rngs)
        self.up_proj = Dense(dim, hidden, ("embed", "mlp"), bias=bias, dtype=dtype, rngs=rngs)
        self.down_proj = Dense(hidden, dim, ("mlp", "embed"), bias=bias, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        """x [..., N, dim]. Over more than MLP_CHUNK positions it runs in position chunks, each recomputed in
        the backward pass: position-wise, so the result is the same, but the [N, hidden] intermediates exist
        a chunk at a time (a 7B MLP over a 25.6k-token row: 1.9 GB per float32 intermediate, ~8 live)."""
        n = x.shape[-2] if x.ndim >= 2 else 1
        if n <= MLP_CHUNK:
            return self._mlp(x)
        count = -(-n // MLP_CHUNK)
        size = -(-n // count)
        pad = [(0, 0)] * (x.ndim - 2) + [(0, count * size - n), (0, 0)]
        chunks = jnp.moveaxis(jnp.pad(x, pad).reshape(*x.shape[:-2], count, size, x.shape[-1]), -3, 0)
        out = jax.lax.map(jax.checkpoint(self._mlp), chunks)
        return jnp.moveaxis(out, 0, -3).reshape(*x.shape[:-2], count * size, -1)[..., :n, :]

    def _mlp(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def stacked(make, n: int, rngs: nnx.Rngs):
    """`n` copies of the module built by `make(rngs)`, parameters stacked on a leading 'layers' axis."""

    @nnx.split_rngs(splits=n)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(rngs):
        return make(rngs)

    return create(rngs)


def scan_layers(layers, body, carry, xs, start: int, stop: int, remat: bool = False):
    """Run `body(layer, carry, x) -> (carry, y)` over stacked layers[start:stop] with `lax.scan`.

    One compiled layer body regardless of depth; `xs` is sliced alongside the parameters. `remat`: each
    layer is recomputed in the backward pass, so only its input is kept (see `checkpointed`).
    """
    graphdef, state = nnx.split(layers)
    state = jax.tree.map(lambda a: a[start:stop], state)

    def step(c, inputs):
        layer_state, x = inputs
        return body(nnx.merge(graphdef, layer_state), c, x)

    return jax.lax.scan(jax.checkpoint(step) if remat else step, carry, (state, xs))


def checkpointed(module, fn, *args):
    """fn(module, *args), its intermediates recomputed in the backward pass instead of kept (`jax.checkpoint`):
    a 7B-shaped layer over a 25.6k-token row keeps ~8 GB of activations for its backward pass otherwise."""
    graphdef, state = nnx.split(module)
    return jax.checkpoint(lambda s, *a: fn(nnx.merge(graphdef, s), *a))(state, *args)
