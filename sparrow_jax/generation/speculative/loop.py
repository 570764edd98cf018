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
from sparrow_jax.generation.speculative.tree import BONUS, DRAFT
from sparrow_jax.generation.state import DecodeConfig, PromptState
from sparrow_jax.kv_cache import DeferredWrites, KVCache
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
    # Per output token (same slots as `tokens`): the cycle that emitted it (0: prefill's first token) and its
    # source (DRAFT, COPY, BOTH: a draft node a copy merged into; BONUS: the target's own token). The host
    # derives the per-cycle statistics from them (`state.generation_stats`).
    token_cycle: jax.Array
    token_source: jax.Array
    deep: jax.Array  # [B] cycles that verified the deep copies (HybridShape.deep; 0 without)
    seen: jax.Array | None = None  # [B, V] tokens so far (prompt included), when a repetition penalty applies


def start(target, proposer: Proposer, prompt: PromptState, *, logits, hidden, cache: KVCache, key,
          config: DecodeConfig) -> SpecState:
    """The loop state after the target's prefill (`logits` at each row's last prompt token, `hidden` [B, L, H]
    the target's final hidden states of the prompt): the first token sampled, the draft prefilled."""
    b, max_new = logits.shape[0], config.max_new_tokens
    dmax = config.tree.max_depth
    width = max_new + dmax + 1
    key, k0 = split_rows(key)
    seen = seen_tokens(prompt.ids, cache.lengths, logits.shape[-1]) if prompt.sampler.penalize else None
    first = sample(k0, penalize(logits, seen, prompt.sampler), prompt.sampler)
    return SpecState(
        cache=cache, proposer=proposer.start(target, prompt, hidden=hidden, first=first), prompt=prompt,
        root=first, tokens=jnp.full((b, width), config.pad_id, jnp.int32).at[:, 0].set(first),
        n_out=jnp.ones((b,), jnp.int32),
        done=prompt.is_stop(first) | (prompt.max_new <= 1) | prompt.stopped(first[:, None], 1),
        cycles=jnp.zeros((b,), jnp.int32), accepted=jnp.zeros((b, dmax), jnp.int32), key=key,
        token_cycle=jnp.zeros((b, width), jnp.int32), token_source=jnp.full((b, width), BONUS, jnp.int32),
        deep=jnp.zeros((b,), jnp.int32), seen=None if seen is None else mark_seen(seen, first),
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
    active = ~s.done
    positions = s.cache.lengths[:, None] + tree.depth + s.prompt.rope_delta[:, None]
    hidden, vlogits, out_cache, deep = _verify_forward(target, tree, positions, s.cache, active, shape)
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
    stops = s.prompt.is_stop(seq)
    if s.prompt.stops is not None:  # the output so far ending with a stop sequence at each of this cycle's tokens
        ahead = jax.vmap(lambda buf, w, at: jax.lax.dynamic_update_slice(buf, w, (at,)))(s.tokens, seq, s.n_out)
        stops = stops | jnp.stack([s.prompt.stops.ends(ahead, s.n_out + j + 1) for j in range(dmax + 1)], axis=1)
    stops = stops & (i <= n[:, None])
    first_stop = jnp.where(jnp.any(stops, axis=1), jnp.argmax(stops, axis=1), dmax + 1)
    count = jnp.minimum(jnp.minimum(n + 1, first_stop + 1), s.prompt.max_new - s.n_out)
    count = jnp.where(active, count, 0)
    written = jnp.where(i < count[:, None], seq, pad_id)
    put = jax.vmap(lambda buf, w, at: jax.lax.dynamic_update_slice(buf, w, (at,)))
    tokens = put(s.tokens, written, s.n_out)
    src = DRAFT if tree.source is None else jnp.take_along_axis(tree.source, path[:, 1:], axis=1)
    src = jnp.where(i < n[:, None], jnp.pad(jnp.broadcast_to(src, (seq.shape[0], dmax)), ((0, 0), (0, 1))), BONUS)
    token_source = put(s.token_source, jnp.where(i < count[:, None], src, BONUS), s.n_out)
    token_cycle = put(s.token_cycle, jnp.broadcast_to((s.cycles + 1)[:, None], seq.shape), s.n_out)
    n_out = s.n_out + count
    done = s.done | (active & ((first_stop < n + 1) | (n_out >= s.prompt.max_new)))

    # A chain's accepted nodes already sit in consecutive slots: nothing to compact.
    cache = out_cache if shape.is_chain else out_cache.compact(path)
    cache = cache.advance(jnp.where(active, n + 1, 0))
    pair_hidden = jnp.take_along_axis(hidden, path[..., None], axis=1)
    pstate = proposer.commit(target, pstate, Accepted(seq, pair_hidden, (i <= n[:, None]) & active[:, None], n))
    return s.replace(
        cache=cache, proposer=pstate, root=jnp.where(active, bonus, s.root), tokens=tokens, n_out=n_out,
        done=done, cycles=s.cycles + active.astype(jnp.int32),
        accepted=s.accepted + (active[:, None] & (n[:, None] >= jnp.arange(1, dmax + 1))).astype(jnp.int32),
        key=key, token_cycle=token_cycle, token_source=token_source, deep=s.deep + (active & deep).astype(jnp.int32),
        seen=None if s.seen is None else mark_seen(s.seen, jnp.where(i < count[:, None], seq, s.seen.shape[1])),
    )


def _verify_forward(target, tree, positions, cache, active, shape):
    """(hidden [B, N, H], logits [B, N, V], cache with the nodes' k/v written, whether the deep nodes ran).

    A hybrid shape with deep copies (`HybridShape.deep`) forwards its last `deep` nodes only in cycles where
    an active row proposes any of them (a long copy match), under a `lax.cond`: otherwise the forward covers
    the first N - deep nodes (parents precede children, so that prefix is a tree whose mask is the
    top-left block) and the rest get zero hidden states, logits and k/v; they are invalid then, so never
    accepted, and their cache slots never gathered. So a cycle costs the short tree's verify unless a long
    match asks for more. The branches only read the cache (`DeferredWrites`); the entries are stored after."""
    n = tree.tokens.shape[1]
    extra = getattr(shape, "deep", 0)
    if not extra:
        out = target.decode(target.embed(tree.tokens), positions, cache=cache, mask=tree.mask)
        return out.hidden, target.logits(out.hidden), out.cache, jnp.zeros(active.shape, bool)

    def forward(m):
        def run(reader):
            out = target.decode(target.embed(tree.tokens[:, :m]), positions[:, :m], cache=reader,
                                mask=tree.mask[:, :m, :m])
            pad = lambda x, axis: jnp.pad(x, [(0, n - m) if a == axis else (0, 0) for a in range(x.ndim)])  # noqa: E731
            k_new, v_new = out.cache
            return pad(out.hidden, 1), pad(target.logits(out.hidden), 1), pad(k_new, 2), pad(v_new, 2)
        return run

    deep = jnp.any(tree.valid[:, n - extra:] & active[:, None], axis=1)
    reader = DeferredWrites(cache.k, cache.v, cache.lengths)
    hidden, logits, k_new, v_new = jax.lax.cond(jnp.any(deep), forward(n), forward(n - extra), reader)
    return hidden, logits, cache.write(k_new, v_new), deep


def record(s: SpecState) -> dict:
    """The arrays `state.generation_stats` reads after decoding."""
    return {"cycles": s.cycles, "accepted": s.accepted, "token_cycle": s.token_cycle,
            "token_source": s.token_source, "deep": s.deep}


def decode(target, proposer: Proposer, s: SpecState, config: DecodeConfig) -> SpecState:
    """Speculative decoding from `s` to the end, in one `lax.while_loop`. Pure: call under jit."""
    return jax.lax.while_loop(running, lambda s: cycle(target, proposer, s, config), s)
