"""Token sampling: temperature, top-k, top-p (HF order), greedy at temperature 0.

`log_probs` gives the processed distribution itself, so speculative verification can use exactly the
distribution that plain sampling draws from.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self):
        if not math.isfinite(self.temperature) or self.temperature < 0:  # nan would pad, inf sample uniformly
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:  # also rejects nan
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def log_probs(logits, cfg: SamplingConfig):
    """Log-probabilities after temperature, top-k and top-p; filtered tokens get -inf."""
    x = logits.astype(jnp.float32) / cfg.temperature
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, cfg.top_k)[0][..., -1:]
        x = jnp.where(x < kth, -jnp.inf, x)
    if cfg.top_p < 1.0:
        order = jnp.argsort(-x, axis=-1)
        sorted_p = jax.nn.softmax(jnp.take_along_axis(x, order, axis=-1), axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        keep_sorted = (jnp.cumsum(sorted_p, axis=-1) - sorted_p) < cfg.top_p
        keep = jnp.put_along_axis(jnp.zeros_like(keep_sorted), order, keep_sorted, axis=-1, inplace=False)
        x = jnp.where(keep, x, -jnp.inf)
    return jax.nn.log_softmax(x, axis=-1)


def sample(key, logits, cfg: SamplingConfig):
    """One token per row of `logits` [..., V] (int32)."""
    if cfg.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, log_probs(logits, cfg), axis=-1).astype(jnp.int32)
