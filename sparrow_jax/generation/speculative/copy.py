"""Copy candidates (prompt-lookup drafting): the tokens that followed the most recent earlier occurrence
of the sequence's last n tokens, n as long as `max_match` allows (repeating periodically past the end). Video answers repeat their prompt's
words and themselves (object names, colours, whole clauses), and such a copy costs no draft forward.

The sequence is kept on device in a static-shape history (`CopyHistory`): the prompt's text tokens (never
the video placeholders: they repeat by the thousand and predict nothing), the first generated token, then
each cycle's accepted tokens; when it is full the oldest tokens go. `CopyProposer` proposes the copy chain
alone; `hybrid.HybridProposer` merges it into a draft's tree.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.generation.speculative.tree import COPY, DRAFT, HybridShape, Tree, ancestor_mask

EMPTY = -1  # an unused history slot: never equal to a token


@dataclasses.dataclass(frozen=True)
class CopyConfig:
    """`tokens` (M): the copied tokens proposed per cycle; matches of the last `max_match` down to
    `min_match` tokens are tried, the longest that occurs earlier wins; `history`: tokens kept (prompt text
    and answer; the oldest are dropped past it). Adaptive depth: when the match is at least `deep_match`
    tokens long (default `max_match`), `deep` more tokens of the copy are proposed (M + deep in all,
    verified in the same forward, which covers them only in such cycles: `HybridShape.deep`)."""

    tokens: int = 8
    max_match: int = 4
    min_match: int = 1
    history: int = 1024
    deep: int = 0
    deep_match: int | None = None

    def __post_init__(self):
        if self.tokens < 1:
            raise ValueError(f"copy tokens must be >= 1 (the copied tokens proposed per cycle), got {self.tokens}")
        if not 1 <= self.min_match <= self.max_match:
            raise ValueError(f"copy matching needs 1 <= min_match <= max_match, got min_match={self.min_match} "
                             f"max_match={self.max_match}")
        if self.deep < 0:
            raise ValueError(f"copy deep must be >= 0 (extra copied tokens on a long match), got {self.deep}")
        if not self.min_match <= self.long_match <= self.max_match:
            raise ValueError(f"copy deep_match {self.deep_match} must lie in [min_match, max_match] = "
                             f"[{self.min_match}, {self.max_match}] (the match lengths tried); raise max_match")
        if self.history < self.max_match + 1:
            raise ValueError(f"copy history {self.history} must exceed max_match {self.max_match} (a match needs "
                             f"an earlier occurrence); raise history")

    @property
    def long_match(self) -> int:
        """The match length from which the `deep` tokens are proposed too."""
        return self.max_match if self.deep_match is None else self.deep_match

    @property
    def most(self) -> int:
        """The copy nodes of a tree: M + deep."""
        return self.tokens + self.deep

    @classmethod
    def of(cls, value) -> "CopyConfig | None":
        """A CopyConfig from one (returned as is), an int M (`CopyConfig(tokens=M)`) or None."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"copy must be a CopyConfig or an int (tokens per cycle), got {value!r}")
        return cls(tokens=value)


@struct.dataclass
class CopyHistory:
    """The tokens so far, on device: `tokens` [B, H] (slots past `length` hold EMPTY), `length` [B]."""

    tokens: jax.Array
    length: jax.Array

    @classmethod
    def create(cls, batch: int, size: int) -> "CopyHistory":
        return cls(jnp.full((batch, size), EMPTY, jnp.int32), jnp.zeros((batch,), jnp.int32))

    @classmethod
    def of_prompt(cls, prompt, first, size: int) -> "CopyHistory":
        """The prompt's text tokens (`PromptState.text_index` / `text_len`) followed by `first` [B]."""
        text = jnp.take_along_axis(prompt.ids, prompt.text_index, axis=1).astype(jnp.int32)
        h = cls.create(text.shape[0], size).append(text, prompt.text_len)
        return h.append(first[:, None].astype(jnp.int32), jnp.ones_like(h.length))

    def append(self, new, count) -> "CopyHistory":
        """Append each row's first `count` [B] tokens of `new` [B, K]; past the size the oldest drop out."""
        b, size = self.tokens.shape
        k = new.shape[1]
        new = jnp.where(jnp.arange(k)[None] < count[:, None], new, EMPTY)
        wide = jnp.concatenate([self.tokens, jnp.full((b, k), EMPTY, jnp.int32)], axis=1)
        wide = jax.vmap(lambda row, w, at: jax.lax.dynamic_update_slice(row, w, (at,)))(wide, new, self.length)
        length = self.length + count
        shift = jnp.maximum(length - size, 0)
        kept = jax.vmap(lambda row, at: jax.lax.dynamic_slice(row, (at,), (size,)))(wide, shift)
        return CopyHistory(kept, jnp.minimum(length, size))


def copy_candidates(history: CopyHistory, config: CopyConfig):
    """(tokens [B, M + deep], valid [B, M + deep]) the longest suffix match proposes: for n from max_match
    down to min_match, the most recent earlier occurrence of the history's last n tokens (it may overlap
    them), the longest n that occurs; then the tokens that followed it: M of them, M + deep when n >=
    deep_match. Where those run into the history's end they repeat: an occurrence ending d tokens before
    the last one says the text repeats with period d, so token i is the one at `end + 1 + i mod d` (a loop
    of d tokens is copied M deep, not d). No match: nothing valid (tokens 0)."""
    h, length = history.tokens, history.length
    size, m = h.shape[1], config.most
    j = jnp.arange(size)
    # last(k) [B, 1]: the token k before the history's last one; step k compares it with the token k before
    # every position j (the history shifted by k), so after step k `run` says where the last k + 1 tokens end.
    last = lambda k: jnp.take_along_axis(h, jnp.clip(length - 1 - k, 0, size - 1)[:, None], axis=1)  # noqa: E731
    run = jnp.ones(h.shape, bool)
    best_end = jnp.full(length.shape, -1, jnp.int32)
    found_any = jnp.zeros(length.shape, bool)
    long = jnp.zeros(length.shape, bool)  # a match of at least deep_match tokens
    for k in range(config.max_match):
        shifted = jnp.concatenate([jnp.full((h.shape[0], k), EMPTY, jnp.int32), h[:, : size - k]], axis=1)
        run = run & (shifted == last(k)) & (length > k)[:, None]
        if k + 1 < config.min_match:
            continue
        earlier = run & (j[None] <= length[:, None] - 2) & (j[None] >= k)  # ends before the last token
        end = jnp.max(jnp.where(earlier, j[None], -1), axis=1)  # the most recent occurrence
        found = end >= 0
        best_end = jnp.where(found, end, best_end)  # longer n come later and win
        found_any = found_any | found
        long = long | (found & (k + 1 >= config.long_match))
    period = jnp.maximum(length - 1 - best_end, 1)[:, None]
    at = best_end[:, None] + 1 + jnp.arange(m)[None] % period
    valid = found_any[:, None] & (jnp.arange(m)[None] < jnp.where(long, m, config.tokens)[:, None])
    tokens = jnp.take_along_axis(h, jnp.clip(at, 0, size - 1), axis=1)
    return jnp.where(valid, tokens, 0).astype(jnp.int32), valid


def chain_tree(root, tokens, valid) -> Tree:
    """The copy chain under `root` [B] as a Tree of M + 1 nodes (invalid copies are never accepted)."""
    b, m = tokens.shape
    node = jnp.arange(m + 1, dtype=jnp.int32)
    parent = jnp.broadcast_to(jnp.maximum(node - 1, 0), (b, m + 1))
    return Tree(tokens=jnp.concatenate([root[:, None].astype(jnp.int32), tokens], axis=1), parent=parent,
                depth=jnp.broadcast_to(node, (b, m + 1)), mask=ancestor_mask(parent, m),
                valid=jnp.concatenate([jnp.ones((b, 1), bool), valid], axis=1),
                source=jnp.broadcast_to(jnp.where(node > 0, COPY, DRAFT), (b, m + 1)).astype(jnp.int32))


@struct.dataclass
class CopyProposer:
    """Copy candidates alone (no draft model): prompt-lookup decoding over the text and the answer. Its
    shape is a `HybridShape` without a draft, so it is verified as a tree of deterministic candidates
    (`verify.sample_tree` at T > 0, which also honours the invalid copies)."""

    config: CopyConfig = struct.field(pytree_node=False)
    needs_hidden = False  # copies read tokens only: prefill need not keep the prompt's hidden states

    @property
    def shape(self) -> HybridShape:
        return HybridShape(None, self.config.tokens, self.config.deep)

    def start(self, target, prompt, *, hidden, first) -> CopyHistory:
        return CopyHistory.of_prompt(prompt, first, self.config.history)

    def propose(self, target, state: CopyHistory, *, root, n_out, key):
        return chain_tree(root, *copy_candidates(state, self.config)), state

    def commit(self, target, state: CopyHistory, accepted) -> CopyHistory:
        return state.append(accepted.tokens, jnp.sum(accepted.valid, axis=1, dtype=jnp.int32))
