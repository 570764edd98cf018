"""Per-pass draft losses: SmoothL1 on hidden states plus soft cross-entropy against the target, and
top-1 agreement with the target; all averaged over the scored positions.

`pass_losses` computes them from hidden states in chunks of scored positions: the lm_head runs on one
chunk at a time inside a rematerialised scan, so no [B, L, V] array exists (at a 25.6k-token row and
Qwen2's 152k vocabulary one float32 logit array is 15.6 GB, and the plain form held several).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_CHUNK = 512  # scored positions per row per chunk: [B, 512, V] float32 logits at a time (312 MB at 152k)


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


def pass_losses(outs, hidden, mask, logits_fn, chunk: int = LOSS_CHUNK, draft_head=None, vocab=None) -> dict:
    """{"feature", "ce", "top1"}: [P] each, pass j's masked means over the positions t with mask[b, t] > 0.

    With a reduced vocabulary (`vocab`, K token ids; `draft_head` the draft's [H, K] head), the draft's
    logits are `draft_head`'s, the soft labels the target's distribution over those K tokens (renormalised)
    and the cross-entropy is 0 where the target's top token lies outside them (EAGLE-3's rule: no token
    there to learn); top-1 compares the token ids, so it counts those positions as misses.

    outs [P, B, L, H]: the draft's output at t in each pass; hidden [B, L, H]: the target's final states,
    whose values at t + 1 (and their distributions through `logits_fn`, the lm_head) the outputs at t are
    scored against. Each row's scored positions are taken first, in order (a stable sort), `chunk` at a
    time; chunks past the longest row's last scored position are skipped (`lax.cond`), so the lm_head runs
    at the scored positions only, once for the target and once per pass. Each chunk is rematerialised in
    the backward pass: only its gathered inputs are kept."""
    p, b, n, _ = outs.shape
    chunk = min(chunk, n)
    count = -(-n // chunk)
    order = jnp.argsort(mask <= 0, axis=1, stable=True)  # scored positions first, in order
    order = jnp.pad(order, ((0, 0), (0, count * chunk - n)))  # index 0 with weight 0 below
    weight = jnp.take_along_axis(mask, order, axis=1) * (jnp.arange(count * chunk) < n)
    scored = jnp.max(jnp.sum(mask > 0, axis=1))

    def pick(x, idx):  # x [..., B, L, H] at idx [B, M] -> [count, ..., B, chunk, H]
        got = jnp.take_along_axis(x, jnp.broadcast_to(idx[..., None], (*x.shape[:-3], *idx.shape, 1)), axis=-2)
        return jnp.moveaxis(got.reshape(*got.shape[:-2], count, chunk, got.shape[-1]), -3, 0)

    xs = (pick(outs, order), pick(hidden, jnp.minimum(order + 1, n - 1)),
          jnp.moveaxis(weight.reshape(b, count, chunk), 1, 0), jnp.arange(count))

    def sums(o, t, w):  # one chunk: o [P, B, C, H], t [B, C, H], w [B, C] -> weighted sums [3, P]
        target_logits = logits_fn(t)
        top = jnp.argmax(target_logits, -1)
        if vocab is None:
            logits = logits_fn(o)
            ce, guess = soft_cross_entropy(logits, target_logits), jnp.argmax(logits, -1)
        else:
            ids = jnp.asarray(vocab, jnp.int32)
            logits = draft_head(o)  # [P, B, C, K]
            inside = jnp.zeros(target_logits.shape[-1], bool).at[ids].set(True)[top]
            ce = jnp.where(inside, soft_cross_entropy(logits, target_logits[..., ids]), 0.0)
            guess = ids[jnp.argmax(logits, -1)]
        per = (smooth_l1(o, t), ce, (guess == top).astype(jnp.float32))
        return jnp.stack([jnp.sum(x * w, axis=(1, 2)) for x in per])

    # The checkpoint outside the cond: its residuals are then its own inputs, and the lm_head among them is
    # seen as loop-invariant (kept once); under the cond it was stacked per chunk (35 GB at 8k tokens).
    @jax.checkpoint
    def chunk_sums(o, t, w, i):
        return jax.lax.cond(i * chunk < scored, sums, lambda *_: jnp.zeros((3, p), jnp.float32), o, t, w)

    def body(acc, x):
        return acc + chunk_sums(*x), None

    if count == 1:  # one chunk (short rows): no loop to skip in, and [B, L, V] is small
        total = sums(*(x[0] for x in xs[:3]))
    else:
        total, _ = jax.lax.scan(body, jnp.zeros((3, p), jnp.float32), xs)
    feature, ce, top1 = total / jnp.maximum(jnp.sum(mask), 1.0)
    return {"feature": feature, "ce": ce, "top1": top1}
