"""The draft's training sequence (IVSB), MTP shifting and loss masks: pure functions of arrays.

Conventions (EAGLE shift): draft position t reads the pair (h_t, token t+1) and its output o_t predicts
the target's next state h_{t+1}, whose lm_head distribution is the target's prediction of token t+2.

- IVSB input: at visual positions the target's middle-layer state m_t, directly (no fc); at text
  positions fc(norm(embed(token t+1)) ++ h_t) (`SparrowDraft.fuse`).
- MTP pass j >= 1: text positions inside an assistant answer take the previous pass's output o_{t-1}
  in place of h_t (what the draft feeds itself when drafting ahead); the prompt keeps the target's
  states (at inference the accepted prefix always comes from the target); visual anchors stay fixed.
- Loss: position t counts when tokens t+1 and t+2 are both the assistant's: the draft reads a generated
  token and predicts the next one, as at inference.
- Text-only rows: the sequence exactly as the draft meets it at inference (VATA): visual keys hidden,
  text positions compacted, the last text position before the video paired with the first one after.
  IVSB rows learn from the visual states; text-only rows learn to do without them, as at inference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sparrow_jax.attention import CausalMask


def shift_left(x, n: int = 1, fill=0):
    """x[:, t] <- x[:, t + n] along axis 1; the last n entries take `fill`."""
    pad = jnp.full((x.shape[0], n, *x.shape[2:]), fill, x.dtype)
    return jnp.concatenate([x[:, n:], pad], axis=1)


def shift_right(x, n: int = 1, fill=0):
    """x[:, t] <- x[:, t - n] along axis 1; the first n entries take `fill`."""
    pad = jnp.full((x.shape[0], n, *x.shape[2:]), fill, x.dtype)
    return jnp.concatenate([pad, x[:, :-n]], axis=1)


def _rows(text_only, visual):
    """`text_only` (a bool, or [B] bool per row) as [B] bool."""
    return jnp.broadcast_to(jnp.asarray(text_only, bool), visual.shape[:1])


def next_tokens(ids, visual, text_only):
    """The token each position pairs with: token t+1 over the IVSB sequence; in text-only rows the next
    *text* token (the video is not in the draft's sequence at inference, so the last text position before
    it pairs with the first text token after it)."""
    n = ids.shape[1]
    own = jnp.where(visual, n, jnp.arange(n)[None])  # a text position's own index, n for visual ones
    nxt = jax.lax.cummin(shift_left(own, 1, n), axis=1, reverse=True)  # smallest text index > t
    text = jnp.where(nxt < n, jnp.take_along_axis(ids, jnp.minimum(nxt, n - 1), axis=1), 0)
    return jnp.where(_rows(text_only, visual)[:, None], text, shift_left(ids))


def text_rows(visual, lengths, width: int, *arrays):
    """Each row's text positions, in order, packed into `width` slots: what a text-only row is without its
    video. arrays [B, L, ...] -> [B, width, ...]; also returns the packed rows' real lengths [B] (text past
    `width` is cut off). Padding follows the real tokens, so it follows the text after packing too."""
    order = jnp.argsort(visual, axis=1, stable=True)[:, :width]  # text positions first, in order
    packed = [jnp.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), axis=1) for a in arrays]
    return packed, jnp.minimum(lengths - jnp.sum(visual, axis=1, dtype=lengths.dtype), width)


def loss_mask(assistant):
    """[B, L] float32: position t is scored when tokens t+1 and t+2 are assistant tokens."""
    return (shift_left(assistant, 1, False) & shift_left(assistant, 2, False)).astype(jnp.float32)


def mtp_shiftable(assistant, visual):
    """[B, L] bool: positions that take the draft's own previous output in MTP passes: answer tokens
    (t >= 1) whose predecessor is a text position."""
    return assistant & ~visual & ~shift_right(visual, 1, True)


def ivsb_inputs(fused, mid, visual):
    """The draft's input sequence: mid-layer states at visual positions, fc outputs at text ones."""
    return jnp.where(visual[..., None], mid.astype(fused.dtype), fused)


def mtp_hidden(target_hidden, prev_out, shiftable):
    """Hidden inputs of the next MTP pass: o_{t-1} of the previous pass where shiftable, else h_t."""
    return jnp.where(shiftable[..., None], shift_right(prev_out.astype(target_hidden.dtype)), target_hidden)


def attention_mask(visual, lengths, text_only) -> CausalMask:
    """Causal over the row's real tokens; text-only rows hide visual keys (as VATA does at inference).
    Every query sees itself, so no softmax row is empty. Described per key ([B, L]), never [B, L, L]:
    `attention.attend` builds it a query chunk at a time (`.block(0, L, L)` is the dense form)."""
    keys = jnp.arange(visual.shape[1])[None] < lengths[:, None]
    return CausalMask(keys & ~(visual & _rows(text_only, visual)[:, None]))


def draft_positions(visual, text_only):
    """RoPE positions: the sequence index over the IVSB sequence; in text-only rows the compacted text
    index (exactly the positions the draft gets at inference)."""
    compact = jnp.maximum(jnp.cumsum(~visual, axis=1, dtype=jnp.int32) - 1, 0)
    return jnp.where(_rows(text_only, visual)[:, None], compact, jnp.arange(visual.shape[1], dtype=jnp.int32))
