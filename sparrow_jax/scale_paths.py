"""The user's inference paths at the paper's scale, compiled ahead of time over shapes only (`aot`): a 7B
target of either family (`scale_configs`, bfloat16) on a ~25.6k-token video prompt, through the project's
own jitted programs — `setup` (host), `prefill`, the autoregressive `_decode` loop and the speculative
`_speculate` loop (chain or tree) — with nothing allocated but the prompt's token ids.

Paths: `vision` (the target's embedding of the prompt with its video: tower, projector, scatter, as
prefill starts), `prefill` (vision included, chunked), `decode`, `chain`, `tree`. Each `PathFigure` holds
the compiled program's per-device footprint and, for the loops, the bytes one step (autoregressive) or
one draft-verify cycle (speculative) reads from memory: the figure a memory-bound step time comes from.
Layers are scanned, so compile time does not grow with depth: the full 28 layers are compiled.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sparrow_jax import aot, roofline, scale_configs
from sparrow_jax.config import Qwen25VLConfig
from sparrow_jax.generation.decoding import _decode, _spec_begin, _speculate
from sparrow_jax.generation.prefill import prefill
from sparrow_jax.generation.setup import Request, setup
from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.generation.speculative.window_cache import WindowCache
from sparrow_jax.inputs import prepare
from sparrow_jax.kv_cache import LAYOUT, KVCache
from sparrow_jax.models import abstract_model
from sparrow_jax.sharding import on_mesh, spec_for

PATHS = ("vision", "prefill", "decode", "chain", "tree")
CHAIN = TreeShape.chain(4)
TREE = TreeShape()  # EAGLE-2's budget, generate's default: top_k 8, depth 3, 30 tokens
TEXT_TOKEN = 1000  # any id outside the special tokens: only the prompt's layout matters here


@dataclasses.dataclass(frozen=True)
class ScaleSetting:
    """What to compile: a family's 7B config (`layers` target layers, default all), its video at `frames`
    frames (the paper's count by default), a prompt of `prompt_tokens` tokens, `max_new_tokens` to decode."""

    family: str
    layers: int | None = None
    frames: int | None = None
    prompt_tokens: int = scale_configs.PROMPT_TOKENS
    max_new_tokens: int = 256
    draft_vocab: int = 0  # > 0: the draft scores that many tokens through its own head (0: the target's lm_head)

    def __post_init__(self):
        if self.family not in scale_configs.TARGETS:
            raise ValueError(f"unknown family {self.family!r}; choose one of {sorted(scale_configs.TARGETS)}")
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")


@dataclasses.dataclass(frozen=True)
class PathFigure:
    family: str
    path: str
    footprint: aot.Footprint
    step_bytes: int | None  # bytes one decode step / speculative cycle reads; None for one-shot paths
    compile_s: float
    prompt_tokens: int
    video_tokens: int


class ScaleRun:
    """One setting's shape-only target, draft and prompt, and its paths compiled on demand (on `mesh`: per
    device, the target and draft sharded by the logical-axis table, as `generate(mesh=)` places them)."""

    def __init__(self, setting: ScaleSetting, dtype=jnp.bfloat16, mesh: Mesh | None = None):
        self.setting = s = setting
        self.mesh = mesh  # compile for this mesh as generate(mesh=) runs (`sharding`); None: one device
        self.config = scale_configs.TARGETS[s.family](s.layers)
        self.target = abstract_model(self.config, dtype=dtype)
        self.draft = abstract_model(scale_configs.sparrow_draft_7b(self.config, vocab=s.draft_vocab), dtype=dtype)
        self.batch, self.video_tokens = video_prompt(self.config, s.frames, s.prompt_tokens)
        self._requests: dict = {}

    def request(self, tree: TreeShape | None) -> Request:
        """`setup`'s Request for this prompt, autoregressive (tree None) or with the draft and `tree`."""
        if tree not in self._requests:
            self._requests[tree] = setup(self.target, self.batch, max_new_tokens=self.setting.max_new_tokens,
                                         draft=None if tree is None else self.draft, tree=tree)
        return self._requests[tree]

    def measure(self, path: str) -> PathFigure:
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; choose from {', '.join(PATHS)}")
        t0 = time.perf_counter()
        tree = {"chain": CHAIN, "tree": TREE}.get(path)
        r = self.request(tree)
        b = r.batch
        params = self.placed(r.params, r.params)
        ids, lengths, positions, video = self.placed((b.input_ids, b.lengths, b.positions, b.video))
        with on_mesh(self.mesh):  # as generate runs every jitted call (caches are born sharded inside)
            if path == "vision":
                compiled, step = aot.compile_shapes(_embed, r.graphdef, params, ids, video), None
            else:
                args = (r.graphdef, params, ids, lengths, positions, video)
                kw = dict(capacity=r.capacity, chunk=r.chunk, with_hidden=tree is not None)
                if path == "prefill":
                    compiled, step = aot.compile_shapes(prefill, *args, **kw), None
                else:
                    out = jax.eval_shape(partial(prefill, **kw), *args)
                    cache = out.cache.replace(k=self.placed(out.cache.k, LAYOUT), v=self.placed(out.cache.v, LAYOUT),
                                              lengths=self.placed(out.cache.lengths))
                    prompt, logits, key = self.placed((r.prompt, out.logits, r.key))
                    if tree is None:
                        compiled = aot.compile_shapes(_decode, r.graphdef, params, prompt, logits, cache, key,
                                                      r.config)
                        step = self.step_bytes(None, params, None, cache)
                    else:
                        p = r.proposer
                        proposer = p.replace(params=self.placed(p.params, p.params), sampling=self.placed(p.sampling))
                        # The loop after the draft's prefill (`_spec_begin`), from that state's shapes.
                        begun = jax.eval_shape(partial(_spec_begin, config=r.config), r.graphdef, params, proposer,
                                               prompt, logits, self.placed(out.hidden), cache, key)
                        begun = self.placed_state(begun)
                        compiled = aot.compile_shapes(_speculate, r.graphdef, params, proposer,
                                                      begun.replace(cache=None), begun.cache, r.config)
                        step = self.step_bytes(tree, params, proposer.params, cache)
        return PathFigure(self.setting.family, path, aot.footprint(compiled), step, time.perf_counter() - t0,
                          int(b.lengths.max()), self.video_tokens)

    def floor_bytes(self, tree: TreeShape | None) -> int:
        """`step_bytes` of one step (`tree` None) or draft-verify cycle of `tree`, from shapes alone: the
        prefill is traced for its cache's shapes, nothing is compiled."""
        r = self.request(tree)
        b = r.batch
        params = self.placed(r.params, r.params)
        args = (r.graphdef, params, *self.placed((b.input_ids, b.lengths, b.positions, b.video)))
        with on_mesh(self.mesh):
            out = jax.eval_shape(partial(prefill, capacity=r.capacity, chunk=r.chunk, with_hidden=tree is not None),
                                 *args)
        cache = out.cache.replace(k=self.placed(out.cache.k, LAYOUT), v=self.placed(out.cache.v, LAYOUT))
        draft = None if tree is None else self.placed(r.proposer.params, r.proposer.params)
        return self.step_bytes(tree, params, draft, cache)

    def placed(self, tree, logical=None):
        """`tree` as shapes, placed on the mesh as generate places it: a model's state by the logical-axis
        table (`logical`: that state, whose variables name their axes; or one tuple of axis names for every
        array), every other array replicated with its rows over the batch axes. Shapes alone without a mesh."""
        mesh = self.mesh
        if mesh is None:
            return aot.shape_of(tree)
        named = lambda a, names: NamedSharding(mesh, spec_for(np.shape(a), names, mesh))  # noqa: E731
        if isinstance(logical, tuple):
            shardings = jax.tree.map(lambda a: named(a, logical), tree)
        elif logical is not None:
            specs = nnx.get_partition_spec(logical)
            shardings = jax.tree.map(lambda spec, a: named(a, tuple(spec)), specs, tree,
                                     is_leaf=lambda x: isinstance(x, P))
        else:
            rows = self.batch.batch
            shardings = jax.tree.map(lambda a: named(a, ("batch",) if np.ndim(a) and np.shape(a)[0] == rows else ()),
                                     tree)
        return aot.shape_of(tree, shardings)

    def placed_state(self, state):
        """A loop state's shapes placed as generate's arrays are: the k/v of every cache in it (the target's,
        the draft's window cache) by the cache layout, every other array by its rows."""
        caches = (KVCache, WindowCache)

        def place(x):
            if not isinstance(x, caches):
                return self.placed(x)
            rest = self.placed(x.replace(k=None, v=None))
            return rest.replace(k=self.placed(x.k, LAYOUT), v=self.placed(x.v, LAYOUT))

        return jax.tree.map(place, state, is_leaf=lambda x: isinstance(x, caches))

    def step_bytes(self, tree: TreeShape | None, params, draft_params, cache) -> int:
        """Bytes one step reads at the prompt's context: the target's decoder weights (all but the token
        embedding, of which one row is read) and its KV entries up to the context (attention reads cache
        blocks up to the longest row); speculating, per cycle, that verify forward plus, per draft level
        (`depth + 1`, the commit forward included), the draft's weights, its window cache and the target's
        lm_head the draft's logits go through (or the draft's own head over a reduced vocabulary, which its
        parameters hold). Per device: a sharded array counts its shard (`params`,
        `draft_params`, `cache` as placed)."""
        lm = params["language_model"]
        weights = roofline.weight_bytes(lm, self.target.lm.lm_head is None)
        context = int(self.batch.lengths.max())
        kv = aot.tree_bytes((cache.k, cache.v)) * context // cache.capacity
        if tree is None:
            return weights + kv
        p = self.request(tree).proposer
        widest = max(p.chunk, tree.max_depth + 1, p.commit_width)
        window = jax.eval_shape(lambda: WindowCache.create(self.draft.config, self.batch.batch, widest, tree.scratch,
                                                           self.draft.dtype))
        # The draft's own head (a reduced vocabulary) is among its parameters; else it reads the target's.
        head = lm["embed_tokens"] if self.target.lm.lm_head is None else lm["lm_head"]
        head_bytes = aot.tree_bytes(head) if self.draft.head is None else 0
        per_level = aot.tree_bytes(draft_params) + aot.tree_bytes(self.placed((window.k, window.v), LAYOUT))
        return weights + kv + tree.max_depth * (per_level + head_bytes)


@partial(jax.jit, static_argnames=("graphdef",))
def _embed(graphdef, params, ids, video):
    """The prompt's embedding with its video's features in place: what prefill computes first."""
    return nnx.merge(graphdef, params).embed(ids, video)


def video_prompt(config, frames: int | None, prompt_tokens: int):
    """A one-row PromptBatch of `prompt_tokens` tokens holding a video of `frames` frames (the paper's
    count by default) as `prepare` builds it, its pixels as shapes only; and the video's token count."""
    qwen = isinstance(config, Qwen25VLConfig)
    frames = frames or (scale_configs.QWEN_FRAMES if qwen else scale_configs.LLAVA_FRAMES)
    step = config.vision.temporal_patch_size if qwen else 1
    if frames < 1 or frames % step:
        raise ValueError(f"frames must be a positive multiple of {step} for {type(config).__name__} (its vision "
                         f"tower takes frames {step} at a time), got {frames}")
    if qwen:
        v, side = config.vision, scale_configs.QWEN_SIDE
        grid = np.array([frames // v.temporal_patch_size, side // v.patch_size, side // v.patch_size])
        n = config.num_video_tokens(grid)
        span = [config.vision_start_token_id] + [config.video_token_id] * n + [config.vision_end_token_id]
        # np.zeros pages are never touched: prepare only reads the pixel array's shape
        video = [(np.zeros((int(np.prod(grid)), v.patch_dim), np.float32), grid, 1.0)]  # 1 s per grid step (2 fps)
    else:
        n = config.num_video_tokens(frames)
        span = [config.video_token_id] * n
        video = np.zeros((1, frames, config.vision.image_size, config.vision.image_size, 3), np.float32)
    head = 14  # the chat template's system turn and "user:" before the video
    if prompt_tokens < len(span) + head + 1:
        raise ValueError(f"prompt_tokens {prompt_tokens} cannot hold the video's {len(span)} tokens and the text "
                         f"around it; raise prompt_tokens or lower frames")
    ids = [TEXT_TOKEN] * head + span + [TEXT_TOKEN] * (prompt_tokens - head - len(span))
    batch = prepare(config, [ids], video)
    shapes = aot.shape_of(batch.video)
    return dataclasses.replace(batch, video=shapes), n
