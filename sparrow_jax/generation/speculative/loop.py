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

from sparrow_jax.generation.speculative import verify
from sparrow_jax.generation.speculative.proposer import Accepted, Proposer
from sparrow_jax.generation.speculative.tree import HybridShape
from sparrow_jax.generation.state import DecodeConfig, PromptState
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import mark_seen, penalize, sample, seen_tokens, split_rows


@struct.dataclass
class SpecState:
    cache: KVCache
    proposer: object  # the proposer's own state
    prompt: PromptState
    root: jax.Array  # [B] last token the target produced (not yet in any cache)
    tokens: jax.Array  # [B, max_new + max_depth + 1]
    n_out: jax.Array  # [B]
    done: jax.Array  # [B]
    cycles: jax.Array  # [B]
    accepted: jax.Array  # [B, max_depth] cycles whose accepted path reached depth d + 1
    key: jax.Array  # [B] one PRNG key per row (sampling.row_keys)
    seen: jax.Array | None = None  # [B, V] tokens so far (prompt included), when a repetition penalty applies
    sources: jax.Array | None = None  # [B, 3] accepted draft tokens by source (DRAFT, COPY, BOTH): hybrid trees


def start(target, proposer: Proposer, prompt: PromptState, *, logits, hidden, cache: KVCache, key,
          config: DecodeConfig) -> SpecState:
    """The loop state after the target's prefill (`logits` at each row's last prompt token, `hidden` [B, L, H]
    the target's final hidden states of the prompt): the first token sampled, the draft prefilled."""
    b, max_new = logits.shape[0], config.max_new_tokens
    dmax = config.tree.max_depth
    key, k0 = split_rows(key)
    seen = seen_tokens(prompt.ids, cache.lengths, logits.shape[-1]) if prompt.sampler.penalize else None
    first = sample(k0, penalize(logits, seen, prompt.sampler), prompt.sampler)
    return SpecState(
        cache=cache, proposer=proposer.start(target, prompt, hidden=hidden, first=first), prompt=prompt,
        root=first, tokens=jnp.full((b, max_new + dmax + 1), config.pad_id, jnp.int32).at[:, 0].set(first),
        n_out=jnp.ones((b,), jnp.int32),
        done=prompt.is_stop(first) | (prompt.max_new <= 1) | prompt.stopped(first[:, None], 1),
        cycles=jnp.zeros((b,), jnp.int32), accepted=jnp.zeros((b, dmax), jnp.int32), key=key,
        seen=None if seen is None else mark_seen(seen, first),
        sources=jnp.zeros((b, 3), jnp.int32) if isinstance(config.tree, HybridShape) else None,
    )


def running(s: SpecState):
    return ~jnp.all(s.done)


def cycle(target, proposer: Proposer, s: SpecState, config: DecodeConfig) -> SpecState:
    """One draft -> verify -> accept -> compact -> commit cycle (rows already done are left as they are)."""
    shape, sampling, pad_id = config.tree, s.prompt.sampler, config.pad_id
    dmax = shape.max_depth
    i = jnp.arange(dmax + 1)
    key, k_draft, k_accept = split_rows(s.key, 3)
    tree, pstate = proposer.propose(target, s.proposer, root=s.root, n_out=s.n_out, key=k_draft)
    positions = s.cache.lengths[:, None] + tree.depth + s.prompt.rope_delta[:, None]
    out = target.decode(target.embed(tree.tokens), positions, cache=s.cache, mask=tree.mask)
    vlogits = target.logits(out.hidden)
    if s.seen is not None:  # each node's logits see the tokens so far plus its own path's
        on_path = jnp.einsum("bnm,bmv->bnv", tree.mask.astype(jnp.float32), jax.nn.one_hot(tree.tokens, vlogits.shape[-1]))
        vlogits = penalize(vlogits, s.seen[:, None] | (on_path > 0), sampling)
    if sampling.greedy:
        n, path, bonus = verify.greedy(tree, vlogits, dmax)
    elif shape.is_chain:
        n, path, bonus = verify.sample_chain(tree, vlogits, sampling, k_accept)
    else:
        n, path, bonus = verify.sample_tree(tree, vlogits, sampling, k_accept, dmax)

    # Tokens of this cycle: the accepted draft tokens, then the bonus token.
    nxt = jnp.take_along_axis(tree.tokens, jnp.concatenate([path[:, 1:], path[:, -1:]], axis=1), axis=1)
    seq = jnp.where(i < n[:, None], nxt, jnp.where(i == n[:, None], bonus[:, None], pad_id))
    active = ~s.done
    stops = s.prompt.is_stop(seq)
    if s.prompt.stops is not None:  # the output so far ending with a stop sequence at each of this cycle's tokens
        ahead = jax.vmap(lambda buf, w, at: jax.lax.dynamic_update_slice(buf, w, (at,)))(s.tokens, seq, s.n_out)
        stops = stops | jnp.stack([s.prompt.stops.ends(ahead, s.n_out + j + 1) for j in range(dmax + 1)], axis=1)
    stops = stops & (i <= n[:, None])
    first_stop = jnp.where(jnp.any(stops, axis=1), jnp.argmax(stops, axis=1), dmax + 1)
    count = jnp.minimum(jnp.minimum(n + 1, first_stop + 1), s.prompt.max_new - s.n_out)
    count = jnp.where(active, count, 0)
    written = jnp.where(i < count[:, None], seq, pad_id)
    tokens = jax.vmap(lambda buf, w, at: jax.lax.dynamic_update_slice(buf, w, (at,)))(s.tokens, written, s.n_out)
    n_out = s.n_out + count
    done = s.done | (active & ((first_stop < n + 1) | (n_out >= s.prompt.max_new)))

    # A chain's accepted nodes already sit in consecutive slots: nothing to compact.
    cache = out.cache if shape.is_chain else out.cache.compact(path)
    cache = cache.advance(jnp.where(active, n + 1, 0))
    pair_hidden = jnp.take_along_axis(out.hidden, path[..., None], axis=1)
    pstate = proposer.commit(target, pstate, Accepted(seq, pair_hidden, (i <= n[:, None]) & active[:, None], n))
    return s.replace(
        cache=cache, proposer=pstate, root=jnp.where(active, bonus, s.root), tokens=tokens, n_out=n_out,
        done=done, cycles=s.cycles + active.astype(jnp.int32),
        accepted=s.accepted + (active[:, None] & (n[:, None] >= jnp.arange(1, dmax + 1))).astype(jnp.int32),
        key=key,
        seen=None if s.seen is None else mark_seen(s.seen, jnp.where(i < count[:, None], seq, s.seen.shape[1])),
        sources=s.sources if s.sources is None or tree.source is None else s.sources + _sources(
            tree, path, jnp.minimum(n, count)),
    )


def _sources(tree, path, emitted):
    """[B, 3] the sources (Tree.source) of the `emitted` [B] accepted draft tokens on `path`."""
    src = jnp.take_along_axis(tree.source, path[:, 1:], axis=1)  # [B, max_depth]
    on = jnp.arange(src.shape[1])[None] < emitted[:, None]
    return jnp.sum(jax.nn.one_hot(src, 3, dtype=jnp.int32) * on[..., None], axis=1)


def decode(target, proposer: Proposer, s: SpecState, config: DecodeConfig) -> SpecState:
    """Speculative decoding from `s` to the end, in one `lax.while_loop`. Pure: call under jit."""
    return jax.lax.while_loop(running, lambda s: cycle(target, proposer, s, config), s)
