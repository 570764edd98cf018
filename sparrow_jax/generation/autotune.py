"""`tree="auto"`: the draft budget chosen per device and target from what a verify forward costs there.

Measured once per device and target (`verify_cost`: the target's forward over N tokens on a cache of a
given context, what `python -m infer.bench verify` prints) and cached as JSON in the user's cache directory
next to the compilation cache (`cost_dir`). The choice (`choose`) maximises expected tokens per unit time
over a small set of budgets (chains, EAGLE-2 trees, copy lengths): expected tokens per cycle come from the
draft's acceptance statistics (`Acceptance`: a small table shipped with the draft as `acceptance.json`,
written by `measure_acceptance`, else a stated prior), a cycle's time from the measured cost curve (the
verify over its nodes, plus the draft's steps costed as the draft's share of the target's layers). On a
CPU, where a verify costs about in proportion to its tokens, that is a short chain; where checking many
tokens costs one step (accelerators), a wide tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from sparrow_jax.generation.speculative.copy import CopyConfig
from sparrow_jax.generation.speculative.tree import HybridShape, TreeShape

ACCEPTANCE_FILE = "acceptance.json"  # in a draft checkpoint's directory


@dataclasses.dataclass(frozen=True)
class Acceptance:
    """What a draft's proposals are worth: `rates[d][r]`, the probability that the target's token at depth
    d + 1 is the draft's rank-(r + 1) candidate given the path to depth d was accepted; `copy_reach[d]`, the
    probability that copies (alone) reach depth d + 1, and `deep_share`, the fraction of cycles whose match is
    long (`CopyConfig.deep`); `source` says where the figures come from."""

    rates: tuple[tuple[float, ...], ...]
    copy_reach: tuple[float, ...] = ()
    deep_share: float = 0.0
    source: str = "prior"

    def __post_init__(self):
        if not self.rates or any(not r for r in self.rates):
            raise ValueError("acceptance rates need at least one depth with at least one rank")
        for d, r in enumerate(self.rates):
            if min(r) < 0 or sum(r) > 1 + 1e-6:
                raise ValueError(f"acceptance rates at depth {d + 1} must be >= 0 and sum to <= 1, got {r}")

    def rate(self, depth: int, rank: int) -> float:
        """rates[depth][rank] (0-based), the last depth's beyond the table, 0 beyond its ranks."""
        row = self.rates[min(depth, len(self.rates) - 1)]
        return row[rank] if rank < len(row) else 0.0

    def copy_at(self, depth: int) -> float:
        return self.copy_reach[depth] if depth < len(self.copy_reach) else 0.0

    @classmethod
    def load(cls, draft_dir) -> "Acceptance | None":
        """The table shipped with a converted draft (`acceptance.json`), None when it has none."""
        path = Path(draft_dir) / ACCEPTANCE_FILE
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return cls(tuple(map(tuple, d["rates"])), tuple(d.get("copy_reach", ())), d.get("deep_share", 0.0),
                   d.get("source", str(path)))

    def save(self, draft_dir) -> Path:
        path = Path(draft_dir) / ACCEPTANCE_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")
        return path


# Without a measured table: the top candidate accepted 0.7 of the time at every depth, the next ranks
# 0.1, 0.05, 0.03, 0.02 (roughly the EAGLE papers' trained drafts); no copy figures, so no copies chosen.
PRIOR = Acceptance(((0.7, 0.1, 0.05, 0.03, 0.02),), source="prior (no acceptance.json with the draft)")


@dataclasses.dataclass(frozen=True)
class CostCurve:
    """Milliseconds of one target forward over `tokens[i]` tokens: `ms[i]`, on a cache of `context` tokens."""

    tokens: tuple[int, ...]
    ms: tuple[float, ...]
    context: int = 0

    def at(self, n: float) -> float:
        """Cost of a forward over n tokens: linear between the measured points, and past the last one
        extended along the last segment's slope (never below the last figure). A forward over more tokens
        never costs less: a noisy figure below an earlier one is raised to it."""
        t, ms = np.asarray(self.tokens, float), np.maximum.accumulate(np.asarray(self.ms, float))
        if n <= t[-1] or len(t) == 1:
            return float(np.interp(n, t, ms))
        slope = max((ms[-1] - ms[-2]) / (t[-1] - t[-2]), 0.0)
        return float(ms[-1] + slope * (n - t[-1]))


@dataclasses.dataclass(frozen=True)
class Auto:
    """`tree="auto"` with its settings: the draft's `acceptance` (default `PRIOR`), the `candidates` to choose
    from (pairs (TreeShape, CopyConfig or None); default `candidates(acceptance)`), and how the cost is
    measured (`contexts`, `tokens`, `steps`, `repeats`; cached in `cache_dir`, default `cost_dir()`)."""

    acceptance: Acceptance | None = None
    candidates: tuple | None = None
    contexts: tuple[int, ...] = (2048, 16384)
    tokens: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    steps: int = 10
    repeats: int = 3
    cache_dir: str | None = None


def candidates(acceptance: Acceptance, copy: CopyConfig | None = None):
    """The budgets `choose` compares: chains of 1-8 and EAGLE-2 trees from 2/2/6 to 8/5/60, each with the
    given `copy`, or (when it is None and the table has copy figures) also with copies of 2-8 tokens, with
    and without deep copies."""
    shapes = [TreeShape.chain(k) for k in range(1, 9)] + [TreeShape(*s) for s in (
        (2, 2, 6), (2, 3, 8), (4, 2, 10), (4, 3, 12), (4, 4, 16), (8, 3, 30), (8, 4, 40), (8, 5, 60))]
    copies = [copy]
    if copy is None and acceptance.copy_reach:
        copies += [CopyConfig(tokens=m, deep=deep) for m in (2, 4, 8) for deep in (0, 8, 16)]
    return tuple((s, c) for s in shapes for c in copies)


def draft_reach(shape: TreeShape, acceptance: Acceptance) -> np.ndarray:
    """[max_depth] the probability that the accepted path reaches each depth, for EAGLE-2's drafting of
    `shape` with the model's path probabilities as the scores (level 1: the root's top_k; each level expands
    its top_k best nodes by top_k children; the total - 1 best candidates are kept). The nodes of one depth
    are disjoint events (one child per node is the target's), so their probabilities add up."""
    k = shape.top_k
    level = [(acceptance.rate(0, r), 1) for r in range(k)]  # (path probability, depth)
    kept = list(level)
    for s in range(1, shape.depth + 1):
        front = sorted(level, reverse=True)[:k]
        level = [(p * acceptance.rate(s, r), s + 1) for p, _ in front for r in range(k)]
        kept += level
    reach = np.zeros(shape.max_depth)
    for p, d in sorted(kept, reverse=True)[: shape.total - 1]:
        reach[d - 1] += p
    return reach


def expected_tokens(shape: TreeShape | None, copy: CopyConfig | None, acceptance: Acceptance) -> float:
    """Expected tokens per cycle (bonus included): 1 + sum over depths of P(the path reaches it), where
    draft and copies are taken as independent, so a depth is reached unless both miss it. Copies of M tokens
    (M + deep on a long match) reach depth d with `copy_reach[d]` up to the deepest they propose."""
    x = np.zeros(0) if shape is None else draft_reach(shape, acceptance)
    m = 0 if copy is None else copy.most
    depth = max(len(x), m)
    x = np.pad(x, (0, depth - len(x)))
    y = np.asarray([acceptance.copy_at(d) for d in range(m)] + [0.0] * (depth - m))
    return float(1 + np.sum(1 - (1 - x) * (1 - y)))


def cycle_ms(shape: TreeShape | None, copy: CopyConfig | None, cost: CostCurve, acceptance: Acceptance,
             draft_share: float) -> float:
    """Expected milliseconds of a cycle: the verify over its nodes (over the short tree, or the whole one in
    the `deep_share` of cycles with a long match), plus the draft's steps (each over the nodes it expands:
    1 for a chain, top_k for a tree; one more for its commit), costed as `draft_share` of the target's."""
    hybrid = HybridShape(shape, copy.tokens, copy.deep) if copy is not None else shape
    full = cost.at(hybrid.total)
    verify = full if copy is None or not copy.deep else (
        acceptance.deep_share * full + (1 - acceptance.deep_share) * cost.at(hybrid.total - copy.deep))
    draft = 0.0 if shape is None else draft_share * (
        shape.depth * cost.at(shape.top_k) + cost.at(hybrid.max_depth + 1))
    return verify + draft


def choose(cost: CostCurve, acceptance: Acceptance, draft_share: float, options) -> dict:
    """The option (TreeShape, CopyConfig or None) with the most expected tokens per millisecond, and the
    figures behind it: {"tree", "copy", "tau", "cycle_ms", "tokens_per_ms", "speedup" (over one step a token),
    "acceptance" (its source)}."""
    best = None
    for shape, copy in options:
        tau = expected_tokens(shape, copy, acceptance)
        ms = cycle_ms(shape, copy, cost, acceptance, draft_share)
        if best is None or tau / ms > best[0]:
            best = (tau / ms, shape, copy, tau, ms)
    rate, shape, copy, tau, ms = best
    return {"tree": shape, "copy": copy, "tau": tau, "cycle_ms": ms, "tokens_per_ms": rate,
            "speedup": rate * cost.at(1), "acceptance": acceptance.source}


def describe(choice: dict) -> str:
    """One line: the chosen budget (as `state.auto_record` writes it in the stats) and its expected figures."""
    t, c = choice["tree"], choice["copy"]
    kind = "no draft" if t is None else f"chain {t[2] - 1}" if choice["chain"] else "tree {}/{}/{}".format(*t)
    if c is not None:
        kind += f" + {c['tokens']} copies" + (f" (+{c['deep']} on a long match)" if c["deep"] else "")
    return (f"{kind}: expected tau {choice['tau']:.2f}, cycle {choice['cycle_ms']:.2f} ms, "
            f"{choice['speedup']:.2f}x over one step a token ({choice['acceptance']})")


def cost_dir() -> Path:
    """Where measured cost curves are kept: next to the compilation cache (`compile_cache.default_dir`)."""
    from sparrow_jax.compile_cache import default_dir

    return default_dir().parent / "verify_cost"


def cost_key(target) -> dict:
    """What a cost curve depends on: the device kind, the JAX version and the target's text config and dtype."""
    import jax

    cfg = target.lm.config
    return {"device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}", "jax": jax.__version__,
            "target": {f.name: repr(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)},
            "dtype": str(target.lm.dtype)}


def _cache_file(target, auto: Auto) -> tuple[dict, Path]:
    key = {**cost_key(target), "contexts": list(auto.contexts), "tokens": list(auto.tokens)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return key, Path(auto.cache_dir or cost_dir()) / f"{digest}.json"


def is_measured(target, auto: Auto | None = None) -> bool:
    """Whether the cost curve `auto` needs (default settings) is cached for this device and target: the
    command lines then default to tree="auto"."""
    key, path = _cache_file(target, auto or Auto())
    try:
        return json.loads(path.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def cached_costs(target, auto: Auto, measure=None, refresh: bool = False) -> list[CostCurve]:
    """One CostCurve per `auto.contexts`, read from the cache or (unread with `refresh`) measured (by
    `measure`, default `verify_cost`) and written there (a JSON file per device, target and settings)."""
    key, path = _cache_file(target, auto)
    if path.exists() and not refresh:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return [CostCurve(tuple(c["tokens"]), tuple(c["ms"]), c["context"]) for c in stored["curves"]]
    measure = measure or verify_cost
    curves = [CostCurve(tuple(auto.tokens), tuple(measure(target, ctx, auto.tokens, auto.steps, auto.repeats)), ctx)
              for ctx in auto.contexts]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "curves": [dataclasses.asdict(c) for c in curves]}, indent=1))
    tmp.replace(path)  # whole or not at all
    return curves


def curve_for(curves: list[CostCurve], context: int) -> CostCurve:
    """The measured curve nearest `context` (on a log scale)."""
    return min(curves, key=lambda c: abs(np.log(max(c.context, 1)) - np.log(max(context, 1))))


def resolve(target, draft, auto: Auto, copy: CopyConfig | None, context: int, measure=None) -> dict:
    """`choose` for this target (its cost curve at the context nearest `context`, measured once) and draft
    (the draft's share of the target's layers prices its steps); a `copy` given is kept as it is."""
    acceptance = auto.acceptance or PRIOR
    options = auto.candidates or candidates(acceptance, copy)
    cost = curve_for(cached_costs(target, auto, measure), context)
    layers = getattr(getattr(draft, "config", None), "layers", None)
    share = layers.num_layers / target.lm.config.num_layers if layers is not None else 0.0
    return {**choose(cost, acceptance, share, options), "context": cost.context}


def verify_cost(target, context: int, tokens, steps: int = 10, repeats: int = 3) -> list[float]:
    """Milliseconds of one target forward over each of `tokens` new tokens, batch 1, on a cache holding
    `context` committed entries (random keys and values): the median of `repeats` jitted loops of `steps`
    forwards, each fed the previous argmax (so none can be skipped)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparrow_jax.attention import round_capacity
    from sparrow_jax.kv_cache import KVCache, causal_mask
    from sparrow_jax.timing import median_time

    cfg = target.lm.config
    graphdef, state = nnx.split(target)

    @jax.jit
    def loop(state, cache, tokens):
        model = nnx.merge(graphdef, state)
        n = tokens.shape[1]

        def forward(_, carry):
            tokens, cache = carry
            out = model.decode(model.embed(tokens), cache.lengths[:, None] + jnp.arange(n), cache=cache,
                               mask=causal_mask(1, n))
            return jnp.argmax(model.logits(out.hidden), -1).astype(jnp.int32), out.cache  # written, not committed

        return jax.lax.fori_loop(0, steps, forward, (tokens, cache))[0]

    shape = (cfg.num_layers, 1, cfg.num_kv_heads, round_capacity(context + max(tokens)), cfg.head_dim)
    k, v = jax.random.normal(jax.random.key(0), (2, *shape), target.lm.dtype)
    cache = KVCache(k, v, jnp.asarray([context], jnp.int32))
    ms = []
    for n in tokens:
        ids = jnp.ones((1, n), jnp.int32)
        ms.append(1000 * median_time(lambda: jax.block_until_ready(loop(state, cache, ids)), repeats) / steps)
    return ms
