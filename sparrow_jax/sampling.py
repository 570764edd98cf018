"""Token sampling: temperature, top-k, top-p (HF order), greedy at temperature 0. `SamplingConfig` is a
request's checked values, `Sampler` what the jitted programs take (traced values, static mode).

`log_probs` gives the processed distribution itself, so speculative verification can use exactly the
distribution that plain sampling draws from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """One request's sampling values, checked."""

    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # HF's: logits of tokens already in the sequence / p (x p if negative)

    def __post_init__(self):
        if not math.isfinite(self.temperature) or self.temperature < 0:  # nan would pad, inf sample uniformly
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:  # also rejects nan
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@struct.dataclass
class Sampler:
    """Sampling as the compiled programs see it: the values are traced arrays (a scalar, or one per row
    [B]), so a request with another temperature, top-k or top-p reuses the compiled program; only what
    changes the computation is static: whether every row is greedy, the width of the top-k selection (a
    power of two >= the largest top_k, so nearby values share it), whether some row filters by top-p.
    In a sampling program a row at temperature 0 samples from the point mass at its argmax, i.e. greedily."""

    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    repetition_penalty: jax.Array
    greedy: bool = struct.field(pytree_node=False, default=True)
    top_k_width: int = struct.field(pytree_node=False, default=0)  # 0: no row filters by top-k
    filter_top_p: bool = struct.field(pytree_node=False, default=False)
    penalize: bool = struct.field(pytree_node=False, default=False)  # some row has repetition_penalty != 1

    @classmethod
    def of(cls, configs: SamplingConfig | Sequence[SamplingConfig] = SamplingConfig()) -> "Sampler":
        """From one config (scalar values, any batch) or one per row."""
        one = isinstance(configs, SamplingConfig)
        rows = [configs] if one else list(configs)
        values = lambda name, dtype: jnp.asarray(  # noqa: E731
            [getattr(c, name) for c in rows][0] if one else [getattr(c, name) for c in rows], dtype)
        k = max(c.top_k for c in rows)
        return cls(values("temperature", jnp.float32), values("top_k", jnp.int32), values("top_p", jnp.float32),
                   values("repetition_penalty", jnp.float32), greedy=all(c.greedy for c in rows),
                   top_k_width=1 << (k - 1).bit_length() if k else 0, filter_top_p=any(c.top_p < 1.0 for c in rows),
                   penalize=any(c.repetition_penalty != 1.0 for c in rows))


def seen_tokens(ids, lengths, vocab: int):
    """[B, V] bool: the tokens in each row's first `lengths` ids [B, L] (what a repetition penalty reads)."""
    b, width = ids.shape
    valid = jnp.arange(width)[None] < lengths[:, None]
    return jnp.zeros((b, vocab), bool).at[jnp.arange(b)[:, None], jnp.clip(ids, 0, vocab - 1)].max(valid)


def mark_seen(seen, tokens):
    """`seen` [B, V] with each row's tokens [B] or [B, n] marked (an id >= V marks nothing)."""
    tokens = tokens.reshape(tokens.shape[0], -1)
    return seen.at[jnp.arange(seen.shape[0])[:, None], tokens].set(True, mode="drop")


def penalize(logits, seen, sampler: Sampler):
    """HF's repetition penalty (before temperature): a logit of a token in `seen` ([B, V], or [B, N, V] for
    N positions) is divided by the row's penalty, multiplied when negative (as float32)."""
    if not sampler.penalize:
        return logits
    x = logits.astype(jnp.float32)
    r = _rows(sampler.repetition_penalty, x)
    return jnp.where(seen, jnp.where(x < 0, x * r, x / r), x)


def _rows(value, x):
    """`value` (scalar or [B]) broadcastable against x [B, ..., V]."""
    return value if value.ndim == 0 else value.reshape(value.shape + (1,) * (x.ndim - 1))


def log_probs(logits, sampler: Sampler):
    """Log-probabilities after temperature, top-k and top-p (HF order); filtered tokens get -inf. Rows at
    temperature 0 get the point mass at their argmax."""
    x = logits.astype(jnp.float32)
    t = _rows(sampler.temperature, x)
    x = x / jnp.where(t == 0, 1.0, t)
    vocab = x.shape[-1]
    if sampler.top_k_width:
        width = min(sampler.top_k_width, vocab)
        k = _rows(sampler.top_k, x)
        top = jax.lax.top_k(x, width)[0]  # the `width` largest values, descending
        kth = jnp.take_along_axis(top, jnp.broadcast_to(jnp.clip(k - 1, 0, width - 1), x.shape[:-1] + (1,)), -1)
        x = jnp.where((k > 0) & (k < vocab) & (x < kth), -jnp.inf, x)
    if sampler.filter_top_p:
        p = _rows(sampler.top_p, x)
        order = jnp.argsort(-x, axis=-1)
        sorted_p = jax.nn.softmax(jnp.take_along_axis(x, order, axis=-1), axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        keep_sorted = ((jnp.cumsum(sorted_p, axis=-1) - sorted_p) < p) | (p >= 1.0)
        keep = jnp.put_along_axis(jnp.zeros_like(keep_sorted), order, keep_sorted, axis=-1, inplace=False)
        x = jnp.where(keep, x, -jnp.inf)
    lp = jax.nn.log_softmax(x, axis=-1)
    if sampler.greedy:
        return lp
    point = jnp.where(jax.nn.one_hot(jnp.argmax(logits, -1), vocab, dtype=bool), 0.0, -jnp.inf)
    return jnp.where(t == 0, point, lp)


def sample(keys, logits, sampler: Sampler):
    """One token per row of `logits` [B, ..., V] (int32), row b drawn with its own key `keys[b]`."""
    if sampler.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return categorical_rows(keys, log_probs(logits, sampler))


# Random draws are per row: each row of a batch has its own key [B] and draws only with it, so a
# request's sampled tokens do not depend on the rows it shares a batch with (the server batches
# sampled requests with different seeds, and each gets the answer it would get alone).
def row_keys(seed, batch: int):
    """One PRNG key per row [batch]: `seed` an int (row i gets that seed's key folded with i) or one seed
    per row (row i gets its own seed's key folded with 0, i.e. what it would get as a one-row request)."""
    if isinstance(seed, (int, np.integer)):
        return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(int(seed)), i))(jnp.arange(batch))
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"seed: {len(seeds)} seeds for {batch} rows; give one int or one seed per row")
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0))(jnp.asarray(seeds, jnp.uint32))


def split_rows(keys, n: int = 2) -> tuple:
    """Each row's key split `n` ways: n key arrays [B]."""
    parts = jax.vmap(lambda k: jax.random.split(k, n))(keys)
    return tuple(parts[:, i] for i in range(n))


def uniform_rows(keys, shape: tuple):
    """[B, *shape] uniform draws in [0, 1), row b from `keys[b]`."""
    return jax.vmap(lambda k: jax.random.uniform(k, shape))(keys)


def categorical_rows(keys, log_p):
    """One draw per row of `log_p` [B, ..., V] (int32), row b from `keys[b]`."""
    return jax.vmap(lambda k, x: jax.random.categorical(k, x, axis=-1))(keys, log_p).astype(jnp.int32)
