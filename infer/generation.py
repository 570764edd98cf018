"""`infer.generate`: a jitted prefill, then one jitted `lax.while_loop` that decodes autoregressively
or speculatively (with a draft / proposer, see `sparrow_jax.spec`).

The two stages are separate jits (the cache is donated from one to the other) so that prefill and
decoding times are measured honestly; within decoding there is no host round trip per token.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from sparrow_jax.attention import check_capacity, round_capacity
from sparrow_jax.config import draft_mismatch
from sparrow_jax.inputs import PromptBatch, bucket, pad_to, prepare, text_positions
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import SamplingConfig, sample
from sparrow_jax.spec.loop import is_stop, spec_decode
from sparrow_jax.spec.proposer import SparrowProposer
from sparrow_jax.spec.tree import TreeShape


@dataclasses.dataclass
class GenerateOutput:
    tokens: np.ndarray  # [B, max_new_tokens] int32; positions past a row's length hold pad_id
    lengths: np.ndarray  # [B] generated tokens per row, a final EOS included
    stats: dict  # prefill_s, decode_s, new_tokens, cycles, tau, acceptance, decode_tokens_per_s

    def texts(self) -> list[list[int]]:
        return [t[:n].tolist() for t, n in zip(self.tokens, self.lengths)]


@struct.dataclass
class _Loop:
    step: jax.Array  # next output index
    tokens: jax.Array  # [B, max_new]
    last: jax.Array  # [B] last sampled token
    done: jax.Array  # [B]
    lengths: jax.Array  # [B]
    cache: KVCache
    key: jax.Array


@partial(jax.jit, static_argnames=("graphdef", "capacity", "chunk", "with_hidden"))
def _prefill(graphdef, state, ids, lengths, positions, video, capacity, chunk, with_hidden=False):
    """Prefill in chunks of `chunk` tokens: attention scores are [chunk, capacity], never [L, capacity],
    which is what keeps a 25k-token video prompt within memory."""
    target = nnx.merge(graphdef, state)
    cfg = target.lm.config
    b, width = ids.shape
    cache = KVCache.create(cfg.num_layers, b, capacity, cfg.num_kv_heads, cfg.head_dim, target.lm.dtype)
    split = lambda x, axis: jnp.moveaxis(x.reshape(*x.shape[:axis], width // chunk, chunk, *x.shape[axis + 1 :]), axis, 0)
    embeds = split(target.embed(ids, video), 1)  # [n, B, chunk, H]
    pos = split(positions, positions.ndim - 1)  # [n, ..., B, chunk]

    def step(cache, xs):
        out = target.decode(xs[0], xs[1], cache=cache)
        return out.cache.advance(chunk), out.hidden

    cache, hidden = jax.lax.scan(step, cache, (embeds, pos))
    hidden = jnp.moveaxis(hidden, 0, 1).reshape(b, width, -1)
    last = hidden[jnp.arange(b), lengths - 1]
    return target.logits(last), cache.replace(lengths=lengths), (hidden if with_hidden else None)


@partial(jax.jit, static_argnames=("graphdef", "max_new", "sampling"), donate_argnames=("cache",))
def _spec(graphdef, state, proposer, logits, cache, hidden, ids, text_index, text_len, rope_delta, stop_ids, key,
          pad_id, max_new, sampling):
    return spec_decode(
        nnx.merge(graphdef, state), proposer, logits, cache, hidden, ids, text_index, text_len, rope_delta,
        stop_ids, key, pad_id, max_new, sampling,
    )


def _ar_start(logits, cache, stop_ids, key, pad_id, max_new: int, sampling: SamplingConfig) -> _Loop:
    """Autoregressive loop state after prefill: the first token sampled from the prefill logits."""
    b = logits.shape[0]
    key, sub = jax.random.split(key)
    first = sample(sub, logits, sampling)
    return _Loop(
        step=jnp.int32(1),
        tokens=jnp.full((b, max_new), pad_id, jnp.int32).at[:, 0].set(first),
        last=first,
        done=is_stop(first, stop_ids) | (max_new <= 1),
        lengths=jnp.ones((b,), jnp.int32),
        cache=cache,
        key=key,
    )


def _ar_running(s: _Loop, max_new: int):
    return (s.step < max_new) & ~jnp.all(s.done)


def _ar_step(target, s: _Loop, rope_delta, stop_ids, pad_id, sampling: SamplingConfig) -> _Loop:
    """One autoregressive token for every row (rows already done get pad_id)."""
    positions = (s.cache.lengths + rope_delta)[:, None]
    out = target.decode(target.embed(s.last[:, None]), positions, cache=s.cache)
    key, sub = jax.random.split(s.key)
    tok = sample(sub, target.logits(out.hidden[:, 0]), sampling)
    tok = jnp.where(s.done, pad_id, tok)
    return _Loop(
        step=s.step + 1,
        tokens=s.tokens.at[:, s.step].set(tok),
        last=tok,
        done=s.done | is_stop(tok, stop_ids),
        lengths=s.lengths + (~s.done).astype(jnp.int32),
        cache=out.cache.advance(1),
        key=key,
    )


@partial(jax.jit, static_argnames=("graphdef", "max_new", "sampling"), donate_argnames=("cache",))
def _decode(graphdef, state, logits, cache, rope_delta, stop_ids, key, pad_id, max_new, sampling):
    target = nnx.merge(graphdef, state)
    init = _ar_start(logits, cache, stop_ids, key, pad_id, max_new, sampling)
    step = lambda s: _ar_step(target, s, rope_delta, stop_ids, pad_id, sampling)  # noqa: E731
    final = jax.lax.while_loop(lambda s: _ar_running(s, max_new), step, init)
    # Returning the cache lets XLA alias it with the donated input: one cache in memory, not two.
    return final.tokens, final.lengths, final.step, final.cache


def generate(
    target,
    prompts,
    video=None,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_id: int = 0,
    seed: int = 0,
    capacity: int | None = None,
    prompt_bucket: int = 64,
    prefill_chunk: int = 512,
    draft=None,
    tree: TreeShape | None = None,
    draft_chunk: int = 64,
    draft_sees_visual: bool = False,
) -> GenerateOutput:
    """Generate up to `max_new_tokens` per row with `target` (a loaded model, see `sparrow_jax.load`).

    prompts: a list of token-id lists (video placeholders already expanded; rows may differ in length)
      or a `PromptBatch`. video: [B, T, S, S, 3] preprocessed pixels for video targets.
    A row stops after any token in `eos_token_id`. Greedy at temperature 0, else sampling with
    temperature / top-k / top-p. `capacity` (KV slots per row) defaults to the padded prompt length
    plus max_new_tokens (plus one tree when speculating), rounded up (`attention.round_capacity`) so
    that similar requests share one compiled program. Prompts longer
    than `prefill_chunk` are prefilled chunk by chunk (padded to a multiple of it) to bound memory.

    With `draft` (a loaded Sparrow draft, or any proposer of `sparrow_jax.spec.proposer`) decoding is
    speculative and lossless: the draft proposes a
    `tree` (default: the EAGLE-2 budget top_k 8, depth 3, 30 tokens; `TreeShape.chain(k)` for a chain),
    the target verifies it in one forward (at temperature > 0 a chain samples its tokens from the draft,
    a tree proposes the draft's top-k; both are verified by exact speculative sampling). The draft reads only
    the prompt's text positions (`draft_chunk` pairs per prefill step), never the visual tokens;
    `draft_sees_visual=True` is the EAGLE/MSD-style baseline that reads every prompt position (give it
    a window covering the prompt), for comparisons.
    """
    run = _setup(target, prompts, video, max_new_tokens, temperature, top_k, top_p, eos_token_id, pad_id, seed,
                 capacity, prompt_bucket, prefill_chunk, draft, tree, draft_chunk, draft_sees_visual)
    logits, cache, hidden, prefill_s = _run_prefill(run)
    return _run_decode(run, logits, cache, hidden, prefill_s, run.proposer)


def setup_like_generate(target, prompts, video=None, **kwargs) -> "_Run":
    """The host-side setup `generate` does for the same arguments (its defaults applied), for callers that
    drive prefill and decoding themselves (`infer.stream`, `infer.compare`)."""
    args = inspect.signature(generate).bind(target, prompts, video, **kwargs)
    args.apply_defaults()
    return _setup(**args.arguments)


def _run_decode(run: _Run, logits, cache, hidden, prefill_s: float, proposer) -> GenerateOutput:
    """Decode after `run`'s prefill: autoregressively when `proposer` is None, else speculatively. The cache
    is donated (consumed)."""
    t1 = time.perf_counter()
    if proposer is None:
        tokens, lengths, _, _ = _decode(
            run.graphdef, run.state, logits, cache, run.rope_delta, run.stop_ids, run.key, run.pad_id,
            run.max_new_tokens, run.sampling,
        )
        cycles, accepted = lengths - 1, jnp.zeros((run.batch.batch, 0), jnp.int32)
    else:
        tokens, lengths, cycles, accepted, _ = _spec(
            run.graphdef, run.state, proposer, logits, cache, hidden, run.ids, run.text_index, run.text_len,
            run.rope_delta, run.stop_ids, run.key, run.pad_id, run.max_new_tokens, run.sampling,
        )
    tokens, lengths, cycles, accepted = jax.device_get((tokens, lengths, cycles, accepted))
    return GenerateOutput(np.asarray(tokens), np.asarray(lengths),
                          generation_stats(lengths, cycles, accepted, prefill_s, time.perf_counter() - t1))


def kv_slots_needed(prompt_tokens: int, max_new_tokens: int, tree: TreeShape | None = None,
                    prompt_bucket: int = 64, prefill_chunk: int = 512) -> int:
    """KV cache slots a row of `prompt_tokens` needs: the prompt padded to its bucket (to a multiple of
    `prefill_chunk` when longer than one chunk), the new tokens and, when speculating, one tree past them."""
    width = bucket(prompt_tokens, prompt_bucket)
    if width > prefill_chunk:
        width = bucket(width, prefill_chunk)
    return _slots(width, max_new_tokens, tree)


def _slots(width: int, max_new_tokens: int, tree: TreeShape | None) -> int:
    # Speculation writes a whole tree past the committed tokens and may commit a path past max_new.
    return width + max_new_tokens + (0 if tree is None else tree.total + tree.max_depth)


@dataclasses.dataclass
class _Run:
    """Everything one generate call decided on the host before running anything."""

    graphdef: object
    state: object
    batch: PromptBatch
    ids: jax.Array
    capacity: int
    chunk: int
    max_new_tokens: int
    sampling: SamplingConfig
    proposer: object | None
    text_index: jax.Array | None
    text_len: jax.Array | None
    rope_delta: jax.Array
    stop_ids: jax.Array
    key: jax.Array
    pad_id: jax.Array


def _setup(target, prompts, video, max_new_tokens, temperature, top_k, top_p, eos_token_id, pad_id, seed, capacity,
           prompt_bucket, prefill_chunk, draft, tree, draft_chunk, draft_sees_visual) -> _Run:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampling = SamplingConfig(temperature, top_k, top_p)
    batch = prompts if isinstance(prompts, PromptBatch) else prepare(
        target.config, prompts, video, pad_id=pad_id, multiple=prompt_bucket
    )
    if prompt_bucket < 1 or prefill_chunk < 1:
        raise ValueError("prompt_bucket and prefill_chunk must be >= 1")
    if batch.input_ids.shape[1] > prefill_chunk:
        batch = pad_to(batch, bucket(batch.input_ids.shape[1], prefill_chunk), pad_id)
    width = batch.input_ids.shape[1]
    if draft is not None and not hasattr(draft, "propose"):  # a draft model: wrap it as the Sparrow proposer
        _check_draft(target, draft)
        tree = tree or TreeShape()
        draft = SparrowProposer.create(draft, tree, sampling, draft_chunk)
    need = _slots(width, max_new_tokens, None if draft is None else draft.shape)
    capacity = round_capacity(need) if capacity is None else capacity
    check_capacity(capacity)
    if capacity < need:
        raise ValueError(
            f"KV cache capacity {capacity} is too small: prompt (longest {int(batch.lengths.max())} tokens, padded "
            f"to {width}) + max_new_tokens {max_new_tokens} = {need}; raise capacity or shorten the prompt/video"
        )
    stops = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    text_index = text_len = None
    if draft is not None:
        text_index, text_len = map(jnp.asarray, text_positions(batch, target.config, draft_chunk, draft_sees_visual))
    graphdef, state = nnx.split(target)
    return _Run(
        graphdef, state, batch, jnp.asarray(batch.input_ids), capacity, min(width, prefill_chunk), max_new_tokens,
        sampling, draft,
        text_index, text_len, jnp.asarray(batch.rope_delta), jnp.asarray(stops or [-1], jnp.int32),
        jax.random.key(seed), jnp.int32(pad_id),
    )


def _run_prefill(run: _Run):
    """(logits at each row's last prompt token, cache, prompt hidden states or None, seconds)."""
    t0 = time.perf_counter()
    video_arg = jax.tree.map(jnp.asarray, run.batch.video)  # models cast pixels to their own dtype
    logits, cache, hidden = _prefill(
        run.graphdef, run.state, run.ids, jnp.asarray(run.batch.lengths), jnp.asarray(run.batch.positions),
        video_arg, run.capacity, run.chunk, with_hidden=run.proposer is not None,
    )
    jax.block_until_ready(logits)
    return logits, cache, hidden, time.perf_counter() - t0


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


def _check_draft(target, draft) -> None:
    if problem := draft_mismatch(draft.config, target.lm.config):
        raise ValueError(problem)

