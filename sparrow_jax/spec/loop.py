"""The speculative decode loop: draft prefill over the prompt's text, then one `lax.while_loop` of
draft (tree) -> verify (one target forward with the tree mask) -> accept -> compact -> commit.

Everything is static-shape: the target writes all N tree nodes after each row's committed length and
the accepted path is gathered back to consecutive slots; the draft writes speculative nodes to scratch
slots and commits the accepted pairs (target hidden state of a token, next token) to its ring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import SamplingConfig, sample
from sparrow_jax.spec import verify


@struct.dataclass
class SpecState:
    cache: KVCache
    proposer: object  # the proposer's own state
    root: jax.Array  # [B] last token the target produced (not yet in any cache)
    tokens: jax.Array  # [B, max_new + max_depth + 1]
    n_out: jax.Array  # [B]
    done: jax.Array  # [B]
    cycles: jax.Array  # [B]
    accepted: jax.Array  # [B, max_depth] cycles whose accepted path reached depth d + 1
    key: jax.Array


def _compact(cache: KVCache, path):
    """Move the accepted nodes' k/v (slots length + path[i]) to slots length + i: a gather and a
    scatter of the path's entries only (never a pass over the whole cache)."""
    rows = jnp.arange(path.shape[0])[:, None]
    src = cache.lengths[:, None] + path
    dst = cache.lengths[:, None] + jnp.arange(path.shape[1])
    k = cache.k.at[:, rows, :, dst].set(cache.k[:, rows, :, src], mode="drop")  # slot axis 3 (see KVCache)
    v = cache.v.at[:, rows, :, dst].set(cache.v[:, rows, :, src], mode="drop")
    return cache.replace(k=k, v=v)


def spec_start(target, proposer, logits, hidden, ids, text_index, text_len, cache, stop_ids, key, pad_id,
               max_new: int, sampling: SamplingConfig) -> SpecState:
    """The loop state after the target's prefill (`logits` at each row's last prompt token, `hidden` [B, L, H]
    the target's final hidden states of the prompt): the first token sampled, the draft prefilled."""
    b = logits.shape[0]
    dmax = proposer.shape.max_depth
    key, k0 = jax.random.split(key)
    first = sample(k0, logits, sampling)
    return SpecState(
        cache=cache, proposer=proposer.start(target, hidden, ids, text_index, text_len, first), root=first,
        tokens=jnp.full((b, max_new + dmax + 1), pad_id, jnp.int32).at[:, 0].set(first),
        n_out=jnp.ones((b,), jnp.int32), done=is_stop(first, stop_ids) | (max_new <= 1),
        cycles=jnp.zeros((b,), jnp.int32), accepted=jnp.zeros((b, dmax), jnp.int32), key=key,
    )


def is_stop(t, stop_ids):
    """Whether each token of `t` (any shape) is one of `stop_ids` [S]."""
    return jnp.any(t[..., None] == stop_ids, axis=-1)


def spec_cycle(target, proposer, s: SpecState, rope_delta, stop_ids, pad_id, max_new: int,
               sampling: SamplingConfig) -> SpecState:
    """One draft -> verify -> accept -> compact -> commit cycle (rows already done are left as they are)."""
    dmax = proposer.shape.max_depth
    i = jnp.arange(dmax + 1)
    key, k_draft, k_accept = jax.random.split(s.key, 3)
    tree, pstate = proposer.propose(target, s.proposer, s.root, s.n_out, k_draft)
    positions = s.cache.lengths[:, None] + tree.depth + rope_delta[:, None]
    out = target.decode(target.embed(tree.tokens), positions, cache=s.cache, mask=tree.mask)
    vlogits = target.logits(out.hidden)
    if sampling.greedy:
        n, path, bonus = verify.greedy(tree, vlogits, dmax)
    elif proposer.shape.is_chain:
        n, path, bonus = verify.sample_chain(tree, vlogits, sampling, k_accept)
    else:
        n, path, bonus = verify.sample_tree(tree, vlogits, sampling, k_accept, dmax)

    # Tokens of this cycle: the accepted draft tokens, then the bonus token.
    nxt = jnp.take_along_axis(tree.tokens, jnp.concatenate([path[:, 1:], path[:, -1:]], axis=1), axis=1)
    seq = jnp.where(i < n[:, None], nxt, jnp.where(i == n[:, None], bonus[:, None], pad_id))
    active = ~s.done
    stops = is_stop(seq, stop_ids) & (i <= n[:, None])
    first_stop = jnp.where(jnp.any(stops, axis=1), jnp.argmax(stops, axis=1), dmax + 1)
    count = jnp.minimum(jnp.minimum(n + 1, first_stop + 1), max_new - s.n_out)
    count = jnp.where(active, count, 0)
    written = jnp.where(i < count[:, None], seq, pad_id)
    tokens = jax.vmap(lambda buf, w, at: jax.lax.dynamic_update_slice(buf, w, (at,)))(s.tokens, written, s.n_out)
    n_out = s.n_out + count
    done = s.done | (active & ((first_stop < n + 1) | (n_out >= max_new)))

    # A chain's accepted nodes already sit in consecutive slots: nothing to compact.
    cache = out.cache if proposer.shape.is_chain else _compact(out.cache, path)
    cache = cache.advance(jnp.where(active, n + 1, 0))
    pair_hidden = jnp.take_along_axis(out.hidden, path[..., None], axis=1)
    pstate = proposer.commit(target, pstate, seq, pair_hidden, (i <= n[:, None]) & active[:, None], n)
    return SpecState(
        cache=cache, proposer=pstate, root=jnp.where(active, bonus, s.root), tokens=tokens, n_out=n_out,
        done=done, cycles=s.cycles + active.astype(jnp.int32),
        accepted=s.accepted + (active[:, None] & (n[:, None] >= jnp.arange(1, dmax + 1))).astype(jnp.int32),
        key=key,
    )


def spec_decode(target, proposer, logits, cache, hidden, ids, text_index, text_len, rope_delta, stop_ids, key,
                pad_id, max_new: int, sampling: SamplingConfig):
    """Speculative decoding after the target's prefill, to the end, in one `lax.while_loop`. Pure: call under jit."""
    state = spec_start(target, proposer, logits, hidden, ids, text_index, text_len, cache, stop_ids, key, pad_id,
                       max_new, sampling)
    cycle = lambda s: spec_cycle(target, proposer, s, rope_delta, stop_ids, pad_id, max_new, sampling)  # noqa: E731
    final = jax.lax.while_loop(lambda s: ~jnp.all(s.done), cycle, state)
    return final.tokens[:, :max_new], final.n_out, final.cycles, final.accepted, final.cache
