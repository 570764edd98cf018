"""Host-side setup of a generate call: arguments checked, prompts batched and padded, the cache sized,
the draft wrapped as a proposer; nothing runs on a device here."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax.attention import check_capacity, round_capacity
from sparrow_jax.config import Qwen25VLConfig, draft_mismatch
from sparrow_jax.errors import UserError
from sparrow_jax.generation import autotune
from sparrow_jax.generation.speculative.copy import CopyConfig, CopyProposer
from sparrow_jax.generation.speculative.hybrid import HybridProposer
from sparrow_jax.generation.speculative.proposer import Proposer, SparrowProposer
from sparrow_jax.generation.speculative.tree import HybridShape, TreeShape
from sparrow_jax.generation.state import DecodeConfig, PromptState, StopSequences
from sparrow_jax.inputs import PromptBatch, bucket, pad_to, prepare, text_positions
from sparrow_jax.sampling import Sampler, SamplingConfig, row_keys
from sparrow_jax.sharding import put_rows, shard_model


@dataclasses.dataclass
class Request:
    """Everything one generate call decided on the host before running anything."""

    graphdef: object
    params: object
    batch: PromptBatch
    prompt: PromptState
    capacity: int
    chunk: int  # prefill chunk
    max_new_tokens: int  # as asked (config.max_new_tokens is its bucket)
    config: DecodeConfig
    proposer: Proposer | None
    key: jax.Array  # [B] one PRNG key per row
    mesh: jax.sharding.Mesh | None = None  # where it runs (`sharding.on_mesh`); None: one device
    choice: dict | None = None  # tree="auto": what `autotune.choose` picked and why (recorded in the stats)


def setup(
    target,
    prompts,
    video=None,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    stop_sequences: list | None = None,
    pad_id: int = 0,
    seed: int | list[int] = 0,
    capacity: int | None = None,
    prompt_bucket: int = 64,
    prefill_chunk: int = 512,
    draft=None,
    tree: TreeShape | str | None = None,
    copy: CopyConfig | int | None = None,
    draft_chunk: int = 64,
    draft_sees_visual: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> Request:
    """The `Request` for `generate`'s arguments (see there); `stream` and `compare` start from it too."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    sampler = Sampler.of(SamplingConfig(temperature, top_k, top_p, repetition_penalty))
    stops = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    vocab = target.lm.config.vocab_size
    check_tokens([r[:n] for r, n in zip(prompts.input_ids, prompts.lengths)]
                 if isinstance(prompts, PromptBatch) else prompts, vocab, stops)
    if not isinstance(prompts, PromptBatch):
        check_video(target.config, video)
    batch = prompts if isinstance(prompts, PromptBatch) else prepare(
        target.config, prompts, video, pad_id=pad_id, multiple=prompt_bucket
    )
    if prompt_bucket < 1 or prefill_chunk < 1:
        raise ValueError("prompt_bucket and prefill_chunk must be >= 1")
    if batch.input_ids.shape[1] > prefill_chunk:
        batch = pad_to(batch, bucket(batch.input_ids.shape[1], prefill_chunk), pad_id)
    width = batch.input_ids.shape[1]
    if mesh is not None:  # no-ops for models already there (`Engine` places them once)
        target = shard_model(target, mesh)
        draft = shard_model(draft, mesh) if isinstance(draft, nnx.Module) else draft
    copy, choice = CopyConfig.of(copy), None
    if isinstance(tree, str) or isinstance(tree, autotune.Auto):  # measured once per device and target, cached
        tree, copy, choice = _auto(target, draft, tree, copy, width)
    draft = proposer_of(target, draft, tree=tree, copy=copy, sampler=sampler, draft_chunk=draft_chunk,
                        draft_sees_visual=draft_sees_visual)
    shape = None if draft is None else draft.shape
    need = _slots(width, max_new_tokens, shape)
    capacity = round_capacity(need) if capacity is None else capacity
    check_capacity(capacity)
    if capacity < need:
        raise ValueError(
            f"KV cache capacity {capacity} is too small: prompt (longest {int(batch.lengths.max())} tokens, padded "
            f"to {width}) + max_new_tokens {max_new_tokens} = {need}; raise capacity or shorten the prompt/video"
        )
    text_index = text_len = None
    if draft is not None:
        text_index, text_len = map(jnp.asarray, text_positions(batch, target.config, draft_chunk, draft_sees_visual))
    graphdef, params = nnx.split(target)
    stop_rows = stop_sequence_rows(stop_sequences, batch.batch, vocab)
    prompt = PromptState(jnp.asarray(batch.input_ids), jnp.asarray(batch.rope_delta),
                         jnp.full((batch.batch,), max_new_tokens, jnp.int32), sampler, text_index, text_len,
                         None if stop_rows is None else StopSequences.of(stop_rows),
                         PromptState.stop_id_rows([int(t) for t in stops], batch.batch))
    config = DecodeConfig(token_bucket(max_new_tokens), int(pad_id), shape)
    prompt, key = put_rows((prompt, row_keys(seed, batch.batch)), mesh, batch.batch)  # rows over `data`
    return Request(graphdef, params, batch, prompt, capacity, min(width, prefill_chunk), max_new_tokens, config,
                   draft if mesh is None else put_rows(draft, mesh, batch.batch), key, mesh, choice)


def _auto(target, draft, tree, copy: CopyConfig | None, context: int):
    """(tree, copy, the choice) for tree="auto" or an `autotune.Auto`: the budget with the most expected tokens
    per unit time on this device (a `copy` given stays as it is)."""
    if isinstance(tree, str) and tree != "auto":
        raise UserError(f"tree must be a TreeShape or 'auto', got {tree!r}")
    if draft is None or hasattr(draft, "propose"):
        raise UserError("tree='auto' chooses a Sparrow draft's budget: give draft= a draft model")
    auto = tree if isinstance(tree, autotune.Auto) else autotune.Auto()
    choice = autotune.resolve(target, draft, auto, copy, context)
    return choice["tree"], choice["copy"], choice


def proposer_of(target, draft, *, tree: TreeShape | None, copy: CopyConfig | None, sampler: Sampler,
                draft_chunk: int, draft_sees_visual: bool) -> Proposer | None:
    """The proposer for `draft` (a draft model is wrapped as the Sparrow proposer) and `copy`: copies alone,
    or merged into the draft's tree (`hybrid.HybridProposer`); None: autoregressive."""
    if draft is not None and not hasattr(draft, "propose"):  # a draft model: wrap it as the Sparrow proposer
        if problem := draft_mismatch(draft.config, target.lm.config):
            raise ValueError(problem)
        # In a hybrid every candidate is deterministic (verified by sample_tree): a chain drafts its argmax.
        draft = SparrowProposer.create(draft, tree or TreeShape(), sampler if copy is None else Sampler.of(),
                                       draft_chunk)
    if copy is None:
        return draft
    if draft_sees_visual:
        raise UserError("copy drafting reads the prompt's text only; draft_sees_visual=True (the all-token "
                        "baseline) cannot be combined with copy: drop one of them")
    return CopyProposer(copy) if draft is None else HybridProposer.create(draft, copy)


def stop_sequence_rows(stop_sequences, batch: int, vocab_size: int) -> list[list[list[int]]] | None:
    """Each row's stop sequences from `stop_sequences`: token-id sequences for every row ([[id, ...], ...])
    or one such list per row; None when there are none."""
    if stop_sequences is None or len(stop_sequences) == 0:
        return None
    per_row = all(isinstance(x, (list, tuple)) and all(isinstance(q, (list, tuple, np.ndarray)) for q in x)
                  for x in stop_sequences)
    rows = [list(r) for r in stop_sequences] if per_row else [list(stop_sequences)] * batch
    if len(rows) != batch:
        raise UserError(f"stop_sequences: {len(rows)} lists for {batch} rows; give one list for all rows or "
                        "one per row")
    out = []
    for b, row in enumerate(rows):
        seqs = []
        for seq in row:
            seq = np.asarray(seq).reshape(-1)
            if seq.size == 0 or not np.issubdtype(seq.dtype, np.integer):
                raise UserError(f"stop_sequences (row {b}): each stop sequence is a non-empty list of token ids, "
                                f"got {seq.tolist()!r}")
            if (bad := seq[(seq < 0) | (seq >= vocab_size)]).size:
                raise UserError(f"stop_sequences (row {b}): token id {int(bad[0])} is outside the target's "
                                f"vocabulary [0, {vocab_size})")
            seqs.append(seq.astype(int).tolist())
        out.append(seqs)
    return out if any(out) else None


def token_bucket(max_new_tokens: int) -> int:
    """The token buffer a request of `max_new_tokens` decodes into: a power of two (at least 16), so
    requests of similar lengths share one compiled program (each row stops at its own limit)."""
    return max(16, 1 << (max_new_tokens - 1).bit_length())


def kv_slots_needed(prompt_tokens: int, max_new_tokens: int, tree: TreeShape | HybridShape | None = None,
                    prompt_bucket: int = 64, prefill_chunk: int = 512) -> int:
    """KV cache slots a row of `prompt_tokens` needs: the prompt padded to its bucket (to a multiple of
    `prefill_chunk` when longer than one chunk), the new tokens and, when speculating, one tree past them
    (`tree`: the proposer's shape, `proposal_shape` for a draft and copies)."""
    width = bucket(prompt_tokens, prompt_bucket)
    if width > prefill_chunk:
        width = bucket(width, prefill_chunk)
    return _slots(width, max_new_tokens, tree)


def proposal_shape(tree: TreeShape | None, copy: CopyConfig | int | None, draft: bool = True):
    """The shape a request's proposer has: the draft's `tree` (default EAGLE-2's) with `copy` copies
    merged in, copies alone without a `draft`, None without either."""
    copy = CopyConfig.of(copy)
    tree = (tree or TreeShape()) if draft else None
    return tree if copy is None else HybridShape(tree, copy.tokens, copy.deep)


def _slots(width: int, max_new_tokens: int, tree: TreeShape | HybridShape | None) -> int:
    # Speculation writes a whole tree past the committed tokens and may commit a path past max_new.
    return width + max_new_tokens + (0 if tree is None else tree.total + tree.max_depth)


RAW_PIXELS = 10.0  # preprocessed pixels lie within about [-2, 2]; larger ones look like raw 0-255 values


def check_tokens(prompts, vocab_size: int, stops=()) -> None:
    """Prompt token ids and stop ids must lie in [0, vocab_size): on a device an id outside would be
    clamped into the embedding and generate meaningless text without a word."""
    for i, row in enumerate(prompts):
        row = np.asarray(row).reshape(-1)
        if row.size and not np.issubdtype(row.dtype, np.integer):
            if not np.issubdtype(row.dtype, np.number) or not np.all(np.isfinite(row) & (row == np.round(row))):
                raise UserError(f"prompt {i}: token ids must be integers, got {row.dtype} values")
        bad = np.flatnonzero((row < 0) | (row >= vocab_size))
        if bad.size:
            raise UserError(f"prompt {i}: token id {int(row[bad[0]])} at position {int(bad[0])} is outside the "
                             f"target's vocabulary [0, {vocab_size}); tokenize with the target's own tokenizer")
    for t in stops:
        if not 0 <= int(t) < vocab_size:
            raise UserError(f"eos_token_id {int(t)} is outside the target's vocabulary [0, {vocab_size})")


def check_video(config, video) -> None:
    """Video inputs must be the family's preprocessed float pixels (`sparrow_jax.processing.video_prompt`
    turns uint8 frames into them), all finite; float values far outside [-2, 2] get a warning."""
    if video is None:
        return
    qwen = isinstance(config, Qwen25VLConfig)
    rows = list(video) if qwen or isinstance(video, (list, tuple)) else list(np.asarray(video))
    for i, row in enumerate(rows):
        if row is None:
            continue
        pixels = np.asarray(row[0] if qwen else row)
        if not np.issubdtype(pixels.dtype, np.floating):
            raise UserError(f"video {i}: got {pixels.dtype} values, but generate takes preprocessed float pixels; "
                             "turn decoded frames into them with sparrow_jax.processing.video_prompt(config, ids, "
                             "frames)")
        if not np.all(np.isfinite(pixels)):
            raise UserError(f"video {i}: the pixels hold NaN or inf ({int(np.sum(~np.isfinite(pixels)))} values)")
        if pixels.size and (peak := float(np.abs(pixels).max())) > RAW_PIXELS:
            warnings.warn(f"video {i}: pixel values reach {peak:.4g}; preprocessed pixels lie within about [-2, 2], "
                          "so these look like raw 0-255 values (use sparrow_jax.processing.video_prompt)",
                          stacklevel=3)
