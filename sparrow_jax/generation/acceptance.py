"""Measuring a draft's `autotune.Acceptance` table by decoding with it (greedy), for `acceptance.json`.

Three kinds of runs over the given prompts: a chain of `depth` (the top candidate's acceptance at each
depth, conditional on the depth before), one-level trees of each of `ranks` candidates (how often the
target's token is among the draft's top r at depth 1: the lower ranks' shares, spread evenly between the
measured r and applied at every depth in proportion to that depth's top-1 rate), and copies alone with
deep copies (`copy_reach`, and the share of cycles with a long match)."""

from __future__ import annotations

from sparrow_jax.generation.autotune import Acceptance
from sparrow_jax.generation.engine import generate
from sparrow_jax.generation.speculative.copy import CopyConfig
from sparrow_jax.generation.speculative.tree import TreeShape


def measure(target, draft, prompts, video=None, *, depth: int = 6, ranks=(2, 4, 8), copy_tokens: int = 8,
            source: str = "measured", **settings) -> Acceptance:
    """The Acceptance of `draft` on `prompts` (and `video`), `settings` as `generate` takes them."""
    run = lambda **kw: generate(target, prompts, video, **settings, **kw).stats  # noqa: E731
    reach = run(draft=draft, tree=TreeShape.chain(depth))["acceptance"]
    top1 = [reach[0]] + [reach[d] / reach[d - 1] if reach[d - 1] > 0 else 0.0 for d in range(1, depth)]
    cover = {1: reach[0]}
    for r in ranks:
        cover[r] = max(run(draft=draft, tree=TreeShape(r, 0, r + 1))["acceptance"][0], cover[max(cover)])
    shares, last = [1.0], 1  # each rank's share relative to rank 1's
    for r in sorted(ranks):
        shares += [(cover[r] - cover[last]) / (r - last) / max(cover[1], 1e-9)] * (r - last)
        last = r
    rates = []
    for a in top1:
        row = [a * s for s in shares]
        scale = min(1.0, 1.0 / max(sum(row), 1e-9))  # a depth's ranks are disjoint events: at most 1 in all
        rates.append(tuple(round(x * scale, 4) for x in row))
    copies = run(copy=CopyConfig(tokens=1, deep=copy_tokens - 1))
    return Acceptance(tuple(rates), tuple(round(x, 4) for x in copies["acceptance"]),
                      round(copies["deep_cycles"] / max(copies["cycles"], 1), 4), source)
