"""Per-pass draft losses: SmoothL1 on hidden states plus soft cross-entropy against the target, and
top-1 agreement with the target; all averaged over the scored positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_l1(pred, target, beta: float = 1.0):
    """Per position [B, L]: SmoothL1 averaged over the hidden dimension."""
    d = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    return jnp.mean(jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta), axis=-1)


def soft_cross_entropy(logits, target_logits):
    """Per position [B, L]: -sum_v p_target(v) log q_draft(v)."""
    p = jax.nn.softmax(target_logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(p * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def masked_mean(x, mask):
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def pass_loss(out, logits, next_hidden, next_logits, mask, feature_weight: float, ce_weight: float):
    """(loss, metrics) of one pass: out/logits are the draft's at t, next_* the target's at t+1."""
    feat = masked_mean(smooth_l1(out, next_hidden), mask)
    ce = masked_mean(soft_cross_entropy(logits, next_logits), mask)
    top1 = masked_mean((jnp.argmax(logits, -1) == jnp.argmax(next_logits, -1)).astype(jnp.float32), mask)
    return feature_weight * feat + ce_weight * ce, {"feature": feat, "ce": ce, "top1": top1}
