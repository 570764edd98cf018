"""A proposer of known tokens, for tests and benchmarks: the speculative loop's behaviour at a chosen
acceptance (everything accepted gives the engine's speedup ceiling)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.generation.speculative.tree import Tree, TreeShape, ancestor_mask


@struct.dataclass
class OracleProposer:
    """Proposes a known continuation (e.g. the target's own greedy output): a chain of the reference
    tokens down the tree's first branch, the rest siblings of its first token, each a different token
    (so a tree has at most `vocab` children of the root). `poison` [B, L] marks reference
    positions where it proposes a wrong token instead, to exercise partial acceptance.
    For sampling it reports a one-hot draft distribution."""

    reference: jax.Array  # [B, L] tokens the target produces after the first one
    poison: jax.Array  # [B, L] bool
    vocab: int = struct.field(pytree_node=False)
    shape: TreeShape = struct.field(pytree_node=False)

    def start(self, target, prompt, *, hidden, first):
        return ()

    def propose(self, target, state, *, root, n_out, key):
        s, b = self.shape, root.shape[0]
        chain = s.max_depth
        extra = s.total - 1 - chain  # siblings of the first chain node, children of the root
        if extra < 0:
            raise ValueError("the oracle needs total_tokens >= depth + 2 for its full chain")
        if extra > self.vocab - 1:
            raise ValueError(f"the oracle's {extra + 1} children of the root cannot be distinct tokens of a "
                             f"vocabulary of {self.vocab}: total_tokens must be at most {chain + self.vocab}")
        at = n_out[:, None] - 1 + jnp.arange(chain)  # reference index of each chain node's token
        ref = jnp.take_along_axis(self.reference, jnp.clip(at, 0, self.reference.shape[1] - 1), axis=1)
        bad = jnp.take_along_axis(self.poison, jnp.clip(at, 0, self.poison.shape[1] - 1), axis=1)
        chain_tok = jnp.where(bad, (ref + 1) % self.vocab, ref)
        # Offsets 2, 3, ..., vocab - 1, then 1 from the chain token: never the chain token itself.
        sib = (chain_tok[:, :1] + 1 + (1 + jnp.arange(extra)) % (self.vocab - 1)) % self.vocab
        tokens = jnp.concatenate([root[:, None], chain_tok, sib], axis=1).astype(jnp.int32)
        parent = jnp.concatenate([jnp.zeros(1), jnp.arange(chain), jnp.zeros(extra)]).astype(jnp.int32)
        parent = jnp.broadcast_to(parent, (b, s.total))
        depth = jnp.concatenate([jnp.arange(chain + 1), jnp.ones(extra)]).astype(jnp.int32)
        tree = Tree(
            tokens=tokens, parent=parent, depth=jnp.broadcast_to(depth, (b, s.total)),
            mask=ancestor_mask(parent, chain), valid=jnp.ones((b, s.total), bool),
            q=jax.nn.one_hot(tokens, self.vocab, dtype=jnp.float32),
        )
        return tree, state

    def commit(self, target, state, accepted):
        return state
