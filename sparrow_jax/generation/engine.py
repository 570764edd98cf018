"""`Engine`: a target (and a draft) kept ready for requests, HF-style settings resolved per request; and
the one-call entry points `generate` and `stream` on top of it."""

from __future__ import annotations

import inspect

from flax import nnx

from sparrow_jax.errors import UserError
from sparrow_jax.generation.decoding import run_decode, run_prefill
from sparrow_jax.generation.generation_config import GenerationConfig
from sparrow_jax.generation.setup import Request, setup, stop_sequence_rows
from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.generation.state import GenerateOutput
from sparrow_jax.generation.streaming import TokenStream
from sparrow_jax.sharding import shard_model


class Engine:
    """A target (and optionally a draft) ready to answer requests. The compiled programs are kept across
    calls: sampling values (temperature, top-k, top-p, repetition penalty, seed) are traced, and token
    limits, prompt widths and cache capacities are bucketed, so a request that differs only in those
    values reuses what an earlier one compiled (tested by compile counts). What still compiles anew:
    the first greedy and the first sampled request (their programs differ), a top-k in a new power-of-two
    width, turning top-p or the repetition penalty on, new buckets, batch sizes and tree shapes.

    Settings come, in order of precedence, from the call's keyword arguments, its `generation_config`,
    the engine's `generation_config` (by default the checkpoint's generation_config.json when built by
    `from_checkpoint`), then the library's defaults (greedy, 64 new tokens). With a `tokenizer` the outputs
    carry `text` and its EOS and pad ids are the defaults.
    """

    def __init__(self, target, draft=None, *, tree: TreeShape | str | None = None, tokenizer=None,
                 generation_config: GenerationConfig | dict | None = None, **options):
        mesh = options.get("mesh")
        if mesh is not None:  # placed once here, not per request (`setup` finds them placed)
            target = shard_model(target, mesh)
            draft = shard_model(draft, mesh) if isinstance(draft, nnx.Module) else draft
        self.target, self.draft, self.tree, self.tokenizer = target, draft, tree, tokenizer
        self.defaults = GenerationConfig.of(generation_config)
        unknown = set(options) - SETUP_OPTIONS
        if unknown:
            raise TypeError(f"unknown Engine options {sorted(unknown)}; known: {', '.join(sorted(SETUP_OPTIONS))}")
        self.options = options

    @classmethod
    def from_checkpoint(cls, target, draft=None, *, dtype: str | None = None, window: int | None = None,
                        **kwargs) -> "Engine":
        """An engine over converted checkpoints (directories): the target with its tokenizer and
        generation_config.json defaults, and the draft if given (its window resized to `window`); with
        `mesh=` (an Engine option) both are restored into their shards on it."""
        from sparrow_jax import checkpoint
        from sparrow_jax.prompting import load_tokenizer

        config = checkpoint.target_config(target, "target")
        mesh = kwargs.get("mesh")  # each parameter restored straight into its shards
        draft_model = None
        if draft is not None:
            draft_model = checkpoint.load_draft(draft, checkpoint.draft_config(draft, config.text, "draft"), window,
                                                dtype, mesh=mesh)
        kwargs.setdefault("tokenizer", load_tokenizer(target))
        kwargs.setdefault("generation_config", GenerationConfig.from_checkpoint(target))
        return cls(checkpoint.load(target, dtype, mesh=mesh), draft_model, **kwargs)

    def request(self, prompts, video=None, *, generation_config: GenerationConfig | dict | None = None,
                stop_sequences=None, **settings) -> Request:
        """The host-side `Request` for these prompts and settings (HF field names: max_new_tokens,
        temperature, top_k, top_p, do_sample, repetition_penalty, eos_token_id, stop_strings, pad_token_id,
        seed; `seed` and `stop_strings` may be given per row) and `stop_sequences` in token ids (see
        `generate`)."""
        cfg = self.defaults.merged(GenerationConfig.of(generation_config), settings)
        tok = self.tokenizer
        eos = cfg.eos_token_id if cfg.eos_token_id is not None else (tok.eos_token_ids if tok is not None else None)
        pad = cfg.pad_token_id if cfg.pad_token_id is not None else (tok.pad_token_id if tok is not None else 0)
        given = lambda value, default: default if value is None else value  # noqa: E731
        rows = prompts.batch if hasattr(prompts, "batch") else len(prompts)
        return setup(self.target, prompts, video, max_new_tokens=given(cfg.max_new_tokens, 64), **cfg.sampling(),
                     repetition_penalty=given(cfg.repetition_penalty, 1.0), eos_token_id=eos, pad_id=pad,
                     stop_sequences=self._stop_sequences(cfg.stop_strings, stop_sequences, rows),
                     seed=given(cfg.seed, 0),
                     draft=self.draft, tree=self.tree, **self.options)

    def _stop_sequences(self, stop_strings, stop_sequences, rows: int):
        """Each row's stop sequences: `stop_sequences` (token ids) and the stop strings as the tokenizer
        spells them (`ChatTokenizer.stop_sequences`; one string or list for all rows, or a list per row)."""
        if not stop_strings:
            return stop_sequences
        vocab = self.target.lm.config.vocab_size
        if not hasattr(self.tokenizer, "stop_sequences"):
            raise UserError("stop_strings need the target's tokenizer (Engine(..., tokenizer=...), as "
                            "Engine.from_checkpoint loads it); without one, give stop_sequences as token ids")
        per_row = not isinstance(stop_strings, str) and all(not isinstance(x, str) for x in stop_strings)
        strings = [list(r) for r in stop_strings] if per_row else [[stop_strings] if isinstance(stop_strings, str)
                                                                   else list(stop_strings)] * rows
        for row in strings:
            if not all(isinstance(x, str) and x for x in row):
                raise UserError(f"stop_strings must be non-empty strings, got {row!r}")
        given = stop_sequence_rows(stop_sequences, rows, vocab) or [[] for _ in range(rows)]
        if len(strings) != rows:
            raise UserError(f"stop_strings: {len(strings)} lists for {rows} rows; give one list for all rows or "
                            "one per row")
        return [ids + [seq for x in row for seq in self.tokenizer.stop_sequences(x)]
                for ids, row in zip(given, strings)]

    def generate(self, prompts, video=None, *, generation_config=None, **settings) -> GenerateOutput:
        """Generate for `prompts` (token-id lists or a PromptBatch; `video` as `generate` takes it)."""
        request = self.request(prompts, video, generation_config=generation_config, **settings)
        prefilled, prefill_s = run_prefill(request)
        return self._with_text(run_decode(request, prefilled, prefill_s, request.proposer))

    def stream(self, prompts, video=None, *, steps_per_call: int = 1, compile_ahead: bool = True,
               generation_config=None, **settings):
        """`generate` as a `TokenStream` (see `generation.streaming`; `compile_ahead=False`: the decode loop
        compiles on its first call, not in the background while the prefill runs)."""
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        request = self.request(prompts, video, generation_config=generation_config, **settings)
        return TokenStream(request, steps_per_call, finish=self._with_text, ahead=compile_ahead)

    def _with_text(self, out: GenerateOutput) -> GenerateOutput:
        if self.tokenizer is not None:
            out.text = [self.tokenizer.decode(ids) for ids in out.token_ids()]
        return out


# `setup` arguments an Engine fixes at construction (the rest are per request).
SETUP_OPTIONS = frozenset({"capacity", "prompt_bucket", "prefill_chunk", "draft_chunk", "draft_sees_visual", "copy",
                           "mesh"})
# The HF-named settings of a request, and `setup`'s names for those that differ.
_HF_NAMES = {"pad_id": "pad_token_id"}


def generate(target, prompts, video=None, *, generation_config: GenerationConfig | dict | None = None,
             **options) -> GenerateOutput:
    """Generate up to `max_new_tokens` per row with `target` (a loaded model, see `sparrow_jax.load`); a
    one-call `Engine(target, draft, ...).generate(...)`.

    prompts: a list of token-id lists (video placeholders already expanded; rows may differ in length)
      or a `PromptBatch`. video: [B, T, S, S, 3] preprocessed pixels for video targets.
    A row stops after any token in `eos_token_id`, and once its generated tokens end with one of
    `stop_sequences` (token-id lists, for every row or one list per row; `Engine` turns HF's `stop_strings`
    into them with its tokenizer): the stop token or sequence ends the row's output. Greedy at temperature 0,
    else sampling with temperature / top-k / top-p (`repetition_penalty` as HF's, before them); `seed` one
    int or one per row (each row draws from its own key). `generation_config`: HF-style settings (a
    `GenerationConfig` or a dict of its fields, e.g. a generation_config.json's), under the keyword arguments.
    `capacity` (KV slots per row) defaults to the padded prompt length plus max_new_tokens (plus one tree when speculating), rounded up (`attention.round_capacity`) so
    that similar requests share one compiled program. Prompts longer
    than `prefill_chunk` are prefilled chunk by chunk (padded to a multiple of it) to bound memory.

    With `draft` (a loaded Sparrow draft, or any `speculative.proposer.Proposer`) decoding is
    speculative and lossless: the draft proposes a
    `tree` (default: the EAGLE-2 budget top_k 8, depth 3, 30 tokens; `TreeShape.chain(k)` for a chain;
    "auto" or `autotune.Auto(...)`: the budget, copies included unless `copy` is given, with the most expected
    tokens per second on this device, from the target's verify cost measured once and cached, recorded in
    `stats["tree_auto"]`),
    the target verifies it in one forward (at temperature > 0 a chain samples its tokens from the draft,
    a tree proposes the draft's top-k; both are verified by exact speculative sampling). `copy` (a
    `CopyConfig`, or M for `CopyConfig(tokens=M)`) adds up to M tokens copied from where the text's last
    words occurred before (prompt text and answer) to every tree, in the same verify forward; without a
    draft the copies are proposed alone (prompt-lookup decoding). The draft reads only
    the prompt's text positions (`draft_chunk` pairs per prefill step), never the visual tokens;
    `draft_sees_visual=True` is the EAGLE/MSD-style baseline that reads every prompt position (give it
    a window covering the prompt), for comparisons.
    """
    engine, settings = one_call_engine(target, generation_config, options)
    return engine.generate(prompts, video, **settings)


def one_call_engine(target, generation_config, options: dict) -> tuple[Engine, dict]:
    """(the Engine `generate(target, ..., **options)` stands for, the request's settings by HF name)."""
    options = dict(options)
    fixed = {k: options.pop(k) for k in list(options) if k in SETUP_OPTIONS}
    engine = Engine(target, options.pop("draft", None), tree=options.pop("tree", None),
                    generation_config=generation_config, **fixed)
    return engine, {_HF_NAMES.get(k, k): v for k, v in options.items()}


generate.__signature__ = inspect.signature(setup).replace(
    parameters=[*inspect.signature(setup).parameters.values(),
                inspect.Parameter("generation_config", inspect.Parameter.KEYWORD_ONLY, default=None)],
    return_annotation=GenerateOutput)


def stream(target, prompts, video=None, *, steps_per_call: int = 1, compile_ahead: bool = True, generation_config=None,
           **options) -> TokenStream:
    """`generate` with the same arguments (`options` are generate's keyword arguments), as a TokenStream:
    iterate it to decode, `steps_per_call` tokens (or speculative cycles) per jitted call. Arguments are
    checked here; prefill runs when the iteration starts. `compile_ahead`: see `Engine.stream`."""
    engine, settings = one_call_engine(target, generation_config, options)
    return engine.stream(prompts, video, steps_per_call=steps_per_call, compile_ahead=compile_ahead, **settings)
