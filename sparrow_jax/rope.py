"""Rotary position embeddings (HF `rotate_half` convention).

Inverse frequencies are computed on the host in numpy (float32, as HF does); cos/sin for given
positions are computed inside jit from integer positions.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from sparrow_jax.config import RopeConfig


def inv_freq(rope: RopeConfig, head_dim: int) -> np.ndarray:
    freq = 1.0 / (rope.theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    freq = freq.astype(np.float32)
    if rope.type == "linear":
        freq = freq / rope.factor
    elif rope.type == "llama3":  # Llama 3.1 frequency smoothing
        old = rope.original_max_position_embeddings
        low_wavelen, high_wavelen = old / rope.low_freq_factor, old / rope.high_freq_factor
        wavelen = 2 * math.pi / freq
        scaled = np.where(wavelen > low_wavelen, freq / rope.factor, freq)
        smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        freq = np.where(medium, smoothed, scaled).astype(np.float32)
    return freq


def cos_sin(freq: np.ndarray, positions, dtype):
    """cos, sin of shape positions.shape + [head_dim] for integer `positions`."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(freq)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply(x, cos, sin):
    """Rotate x [..., N, heads, D] with cos/sin [..., N, D]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[..., None, :] + rotated * sin[..., None, :]
