"""Named state of a generate call: the static decode configuration, the per-prompt arrays the loops
read, what prefill hands to decoding, and the result."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import Sampler


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How to decode: static (hashable), so it is a compile-time argument of the decode jits. What may
    change from request to request without recompiling (sampling values, each row's token limit) is in
    `PromptState`."""

    max_new_tokens: int  # the token buffer's length: the most any row may generate (rows: PromptState.max_new)
    pad_id: int = 0
    stop_ids: tuple[int, ...] = ()  # a row stops after any of these
    tree: TreeShape | None = None  # the proposer's draft budget; None: autoregressive

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def is_stop(self, t):
        """Whether each token of `t` (any shape) is a stop token."""
        stops = jnp.asarray(self.stop_ids or (-1,), jnp.int32)
        return jnp.any(t[..., None] == stops, axis=-1)


@struct.dataclass
class PromptState:
    """Per-prompt arrays the decode loops read (prefill's inputs live in `inputs.PromptBatch`)."""

    ids: jax.Array  # [B, L] prompt token ids, right-padded
    rope_delta: jax.Array  # [B] position of the token at cache slot s is s + rope_delta
    max_new: jax.Array  # [B] tokens each row may generate (<= DecodeConfig.max_new_tokens)
    sampler: Sampler  # sampling values (traced) and mode (static)
    text_index: jax.Array | None = None  # [B, T] prompt positions the draft reads (speculative only)
    text_len: jax.Array | None = None  # [B] how many of them are real


@struct.dataclass
class Prefilled:
    """What the target's prefill hands to decoding."""

    logits: jax.Array  # [B, V] at each row's last prompt token
    cache: KVCache  # the prompt's k/v, lengths = prompt lengths
    hidden: jax.Array | None = None  # [B, L, H] the prompt's final hidden states (for a draft), else None


@dataclasses.dataclass
class GenerateOutput:
    tokens: np.ndarray  # [B, max_new_tokens] int32; positions past a row's length hold pad_id
    lengths: np.ndarray  # [B] generated tokens per row, a final EOS included
    stats: dict  # prefill_s, decode_s, new_tokens, cycles, tau, acceptance, decode_tokens_per_s
    text: list[str] | None = None  # each row's decoded text, when generated with a tokenizer (`Engine`)

    def token_ids(self) -> list[list[int]]:
        """Each row's generated token ids (a final EOS included)."""
        return [t[:n].tolist() for t, n in zip(self.tokens, self.lengths)]


def generation_stats(lengths, cycles, accepted, prefill_s: float, decode_s: float) -> dict:
    new, n_cycles = int(np.sum(lengths)), int(np.sum(cycles))
    return {
        "prefill_s": prefill_s,
        "decode_s": decode_s,
        "new_tokens": new,
        "cycles": n_cycles,
        # Tokens per draft-verify cycle, bonus included; the first token comes from prefill.
        "tau": (new - len(lengths)) / max(n_cycles, 1),
        "acceptance": (np.sum(accepted, 0) / max(n_cycles, 1)).tolist(),  # P(accepted path reaches depth d)
        "decode_tokens_per_s": new / max(decode_s, 1e-9),
    }
