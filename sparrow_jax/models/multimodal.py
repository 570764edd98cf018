"""Shared multimodal plumbing: placing vision features at their placeholder tokens."""

from __future__ import annotations

import jax.numpy as jnp


def scatter_features(embeds, is_slot, features):
    """Replace embeds [B, L, H] at `is_slot` [B, L] with `features` [n, H], consumed in row-major order.

    Same semantics as HF's `masked_scatter`; the host has checked that the slot count equals n.
    """
    flat = is_slot.reshape(-1)
    idx = jnp.clip(jnp.cumsum(flat) - 1, 0, features.shape[0] - 1)
    gathered = features.astype(embeds.dtype)[idx].reshape(embeds.shape)
    return jnp.where(is_slot[..., None], gathered, embeds)
