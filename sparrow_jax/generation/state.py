"""Named state of a generate call: the static decode configuration, the per-prompt arrays the loops
read, what prefill hands to decoding, and the result."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sparrow_jax.generation.speculative.tree import HybridShape, TreeShape
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import Sampler


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """How to decode: static (hashable), so it is a compile-time argument of the decode jits. What may
    change from request to request without recompiling (sampling values, each row's token limit, stop
    tokens and stop sequences) is in `PromptState`."""

    max_new_tokens: int  # the token buffer's length: the most any row may generate (rows: PromptState.max_new)
    pad_id: int = 0
    tree: TreeShape | HybridShape | None = None  # the proposer's draft budget; None: autoregressive

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def pow2(n: int, least: int) -> int:
    """n rounded up to a power of two, at least `least`: the bucket of a traced list's length."""
    return max(least, 1 << (max(n, 1) - 1).bit_length())


@struct.dataclass
class StopSequences:
    """Token sequences that end a row once its generated tokens end with one of them (stop strings, as the
    tokenizer spells them): `ids` [B, S, L] right-aligned, `lengths` [B, S] (0: an unused slot). Traced,
    so requests with other stop sequences reuse the compiled programs (S and L are bucketed)."""

    ids: jax.Array
    lengths: jax.Array

    @classmethod
    def of(cls, rows: list[list[list[int]]]) -> "StopSequences":
        """From each row's list of token-id sequences (S and L rounded up to powers of two)."""
        s = pow2(max(len(r) for r in rows), 2)
        width = pow2(max((len(q) for r in rows for q in r), default=1), 4)
        ids, lengths = np.full((len(rows), s, width), -1, np.int32), np.zeros((len(rows), s), np.int32)
        for b, row in enumerate(rows):
            for j, seq in enumerate(row):
                ids[b, j, width - len(seq):], lengths[b, j] = seq, len(seq)
        return cls(jnp.asarray(ids), jnp.asarray(lengths))

    def ends(self, tokens, end):
        """[B] whether each row's generated tokens `tokens` [B, T] before index `end` [B] end with one of
        its sequences (a sequence never reaches back into the prompt)."""
        width = self.ids.shape[-1]
        pos = end[:, None] - width + jnp.arange(width)  # [B, L]
        window = jnp.take_along_axis(tokens, jnp.clip(pos, 0, tokens.shape[1] - 1), axis=1)
        needed = jnp.arange(width) >= width - self.lengths[..., None]  # [B, S, L] the sequence's own slots
        match = jnp.all((window[:, None, :] == self.ids) | ~needed, axis=-1)
        return jnp.any(match & (self.lengths > 0) & (self.lengths <= end[:, None]), axis=-1)


@struct.dataclass
class PromptState:
    """Per-prompt arrays the decode loops read (prefill's inputs live in `inputs.PromptBatch`)."""

    ids: jax.Array  # [B, L] prompt token ids, right-padded
    rope_delta: jax.Array  # [B] position of the token at cache slot s is s + rope_delta
    max_new: jax.Array  # [B] tokens each row may generate (<= DecodeConfig.max_new_tokens)
    sampler: Sampler  # sampling values (traced) and mode (static)
    text_index: jax.Array | None = None  # [B, T] prompt positions the draft reads (speculative only)
    text_len: jax.Array | None = None  # [B] how many of them are real
    stops: StopSequences | None = None  # token sequences that end a row (None: only stop ids do)
    # [B, E] token ids a row stops after (-1 pads; E bucketed): traced, so another EOS set (another model's
    # generation config, a request's own) reuses the compiled programs. None: no stop tokens.
    stop_ids: jax.Array | None = None

    @staticmethod
    def stop_id_rows(ids, batch: int) -> jax.Array:
        """The `stop_ids` array for the same stop tokens `ids` on each of `batch` rows (at least 2 slots:
        models have one or two EOS ids, and both share a program)."""
        row = np.full((pow2(len(ids), 2),), -1, np.int32)
        row[: len(ids)] = ids
        return jnp.asarray(np.tile(row, (batch, 1)))

    def is_stop(self, t):
        """Whether each token of `t` ([B] or [B, T]) is one of its row's stop tokens."""
        if self.stop_ids is None:
            return jnp.zeros(t.shape, bool)
        ids = self.stop_ids.reshape(self.stop_ids.shape[:1] + (1,) * (t.ndim - 1) + self.stop_ids.shape[1:])
        return jnp.any(t[..., None] == ids, axis=-1)

    def stopped(self, tokens, end):
        """[B] whether each row's generated tokens [B, T] before `end` (a scalar or [B]) end with one of its
        stop sequences; False without any."""
        if self.stops is None:
            return False
        return self.stops.ends(tokens, jnp.broadcast_to(end, tokens.shape[:1]))


@struct.dataclass
class Prefilled:
    """What the target's prefill hands to decoding."""

    logits: jax.Array  # [B, V] at each row's last prompt token
    cache: KVCache  # the prompt's k/v, lengths = prompt lengths
    hidden: jax.Array | None = None  # [B, L, H] the prompt's final hidden states (for a draft), else None
    compile_s: float = struct.field(pytree_node=False, default=0.0)  # seconds the prefill spent compiling (host)


@dataclasses.dataclass
class GenerateOutput:
    tokens: np.ndarray  # [B, max_new_tokens] int32; positions past a row's length hold pad_id
    lengths: np.ndarray  # [B] generated tokens per row, a final EOS included
    # prefill_s, draft_prefill_s, decode_s, compile_s, new_tokens, cycles, tau, acceptance, decode_tokens_per_s
    # (see generation_stats)
    stats: dict
    text: list[str] | None = None  # each row's decoded text, when generated with a tokenizer (`Engine`)

    def token_ids(self) -> list[list[int]]:
        """Each row's generated token ids (a final EOS included)."""
        return [t[:n].tolist() for t, n in zip(self.tokens, self.lengths)]


REPEAT_NGRAM = 4  # a token whose preceding 4 tokens occurred earlier in the output counts as repeated


def generation_stats(lengths, record: dict, prefill_s: float, decode_s: float, *, draft_prefill_s: float = 0.0,
                     compile_s: float = 0.0, tokens=None, hybrid: bool = False, choice: dict | None = None) -> dict:
    """The statistics of a decoding: seconds of the target's prefill, of the draft's (its window cache over
    the prompt; 0 without a draft) and of decoding after both, each without compiling, which is `compile_s`
    (tracing, lowering and compiling the programs, or loading them from the compilation cache).
    `record`: `cycles` [B] and `accepted` [B, D] (per depth), and for
    speculative decoding `token_cycle` / `token_source` [B, T] (`loop.record`) with `tokens` [B, T], which add
    `tau_novel` and `repeated_tokens` (see `novel_tau`); with `hybrid` (copies in the tree) also
    `accepted_from` (accepted draft tokens, bonus tokens not counted, that only the draft, only the copies or
    both proposed), `cycles_from` (cycles by where their accepted tokens came from) and `deep_cycles`;
    `choice` (tree="auto") adds `tree_auto`: the budget chosen and its expected figures."""
    new, n_cycles = int(np.sum(lengths)), int(np.sum(record["cycles"]))
    extra = {} if choice is None else {"tree_auto": auto_record(choice)}
    if "token_cycle" in record:
        rows = [(t[:n], c[:n], src[:n]) for t, c, src, n in zip(np.asarray(tokens), record["token_cycle"],
                                                              record["token_source"], lengths)]
        extra["tau_novel"], extra["repeated_tokens"] = novel_tau([(t, c) for t, c, _ in rows])
        if hybrid:
            extra["accepted_from"] = dict(zip(SOURCES, (sum(int(np.sum(src == k)) for _, _, src in rows)
                                                       for k in range(3))))
            extra["cycles_from"] = cycles_from([(c, src) for _, c, src in rows])
            extra["deep_cycles"] = int(np.sum(record["deep"]))
    return {
        "prefill_s": prefill_s,
        "draft_prefill_s": draft_prefill_s,
        "decode_s": decode_s,
        "compile_s": compile_s,
        "new_tokens": new,
        "cycles": n_cycles,
        # Tokens per draft-verify cycle, bonus included; the first token comes from prefill.
        "tau": (new - len(lengths)) / max(n_cycles, 1),
        "acceptance": (np.sum(record["accepted"], 0) / max(n_cycles, 1)).tolist(),  # P(path reaches depth d)
        "decode_tokens_per_s": new / max(decode_s, 1e-9),
        **extra,
    }


SOURCES = ("draft", "copy", "both")  # Tree.source DRAFT, COPY, BOTH


def auto_record(choice: dict) -> dict:
    """The tree="auto" choice as plain values (JSON-ready: `--json` prints the stats)."""
    t, c = choice["tree"], choice["copy"]
    return {"tree": None if t is None else [t.top_k, t.depth, t.total], "chain": t is not None and t.is_chain,
            "copy": None if c is None else {"tokens": c.tokens, "deep": c.deep},
            **{k: choice[k] for k in ("tau", "cycle_ms", "speedup", "acceptance", "context")}}


def repeated(tokens, n: int = REPEAT_NGRAM) -> np.ndarray:
    """[T] bool: token j is repeated when the n tokens before it occurred, in that order, earlier in `tokens`
    (a loop: a copy of what followed would predict it)."""
    tokens = [int(t) for t in tokens]
    seen, out = set(), np.zeros(len(tokens), bool)
    for j in range(n, len(tokens)):
        gram = tuple(tokens[j - n : j])
        out[j] = gram in seen
        seen.add(gram)
    return out


def novel_tau(rows, n: int = REPEAT_NGRAM) -> tuple[float | None, int]:
    """(tau counting only tokens that are not `repeated`, over the cycles that emitted any such token; the
    number of repeated tokens) for rows of (tokens [T], the cycle of each token [T]; cycle 0: the prefill's
    first token). A degenerate loop raises tau (copies of a loop are accepted whole) but not this figure;
    None when no cycle emitted a novel token."""
    novel_tokens, novel_cycles, rep = 0, 0, 0
    for tokens, cycle in rows:
        r = repeated(tokens, n)
        rep += int(np.sum(r))
        novel = np.asarray(cycle)[(np.asarray(cycle) > 0) & ~r]
        novel_tokens += novel.size
        novel_cycles += np.unique(novel).size
    return (novel_tokens / novel_cycles if novel_cycles else None), rep


def cycles_from(rows) -> dict:
    """Cycles counted by where their accepted (non-bonus) tokens came from, for rows of (the cycle of each
    token, its source): `none` (the bonus token only), `draft` or `copy` (all from that source alone), `both`
    (a token both proposed, or tokens of each)."""
    out = dict.fromkeys(("none", "draft", "copy", "both"), 0)
    for cycle, src in rows:
        cycle, src = np.asarray(cycle), np.asarray(src)
        for c in np.unique(cycle[cycle > 0]):
            kinds = set(src[(cycle == c) & (src < 3)].tolist())
            out["none" if not kinds else SOURCES[kinds.pop()] if len(kinds) == 1 else "both"] += 1
    return out
