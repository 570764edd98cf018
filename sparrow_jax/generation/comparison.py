"""The target alone and the target with a draft, side by side on one prompt: the speedup measurement of
`python -m infer --demo` and `python -m infer.bench video` (`compare`), and of several drafts on one prompt
for `python -m infer.bench tables` (`compare_drafts`).

Both decodings start from one target prefill (the same jitted prefill `generate` runs, keeping the
prompt's hidden states for the draft), so a long video is prefilled once per measurement, not once per
decoding. Each decoding is compiled by a first run and then timed over `repeats` runs from copies of the
prefilled cache; reported times are medians. DSR = AR decoding time / speculative decoding time, the
decoding alone: the draft's own prefill (its window cache over the prompt: the text, or every position for
the all-token baseline) is timed apart (`draft_prefill_s`). ESR is end to end: the target's prefill added to
both, the draft's prefill to the speculative side.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from sparrow_jax.generation.decoding import run_decode, run_prefill
from sparrow_jax.generation.setup import setup
from sparrow_jax.generation.state import GenerateOutput


@dataclasses.dataclass
class Comparison:
    alone: GenerateOutput  # the target's autoregressive decoding (median run by decoding time)
    speculative: GenerateOutput  # with the draft
    prefill_s: float  # the target's prefill (compiled before, when `warm_prefill`)

    @property
    def identical(self) -> bool:
        return self.alone.token_ids() == self.speculative.token_ids()

    @property
    def tau(self) -> float:
        return self.speculative.stats["tau"]

    @property
    def dsr(self) -> float:
        return self.alone.stats["decode_s"] / self.speculative.stats["decode_s"]

    @property
    def esr(self) -> float:
        spec_s = self.prefill_s + self.draft_prefill_s + self.speculative.stats["decode_s"]
        return (self.prefill_s + self.alone.stats["decode_s"]) / spec_s

    @property
    def draft_prefill_s(self) -> float:
        return self.speculative.stats["draft_prefill_s"]


def compare(target, draft, prompts, video=None, *, repeats: int = 3, warm_prefill: bool = True,
            **kwargs) -> Comparison:
    """Decode `prompts` with `target` alone and with `draft` (`kwargs`: `generate`'s keyword arguments)."""
    return compare_drafts(target, {"draft": {"draft": draft}}, prompts, video, repeats=repeats,
                          warm_prefill=warm_prefill, **kwargs)["draft"]


def compare_drafts(target, drafts: dict[str, dict], prompts, video=None, *, repeats: int = 3,
                   warm_prefill: bool = True, **kwargs) -> dict[str, Comparison]:
    """`compare` for several drafts on one prompt: one target prefill and one autoregressive measurement
    shared by all, then each draft's speculative decoding. `drafts` maps a name to that draft's own
    `generate` keyword arguments (`draft=` and, e.g., `draft_sees_visual=`); `kwargs` are everyone's. The
    drafts must size the target's cache alike (the same tree budget)."""
    requests = {name: setup(target, prompts, video, **kwargs, **own) for name, own in drafts.items()}
    first = next(iter(requests.values()))
    for name, r in requests.items():
        if (r.capacity, r.chunk) != (first.capacity, first.chunk) or r.proposer is None:
            raise ValueError(f"compare_drafts: draft {name!r} needs a target cache of {r.capacity} slots (prefill "
                             f"chunk {r.chunk}) where the first needs {first.capacity} ({first.chunk}), or has no "
                             "draft: give every draft the same tree budget")
    if warm_prefill:
        run_prefill(first)
    prefilled, prefill_s = run_prefill(first)

    def median_run(request, proposer) -> GenerateOutput:
        fresh = lambda: prefilled.replace(cache=jax.tree.map(jnp.copy, prefilled.cache))  # noqa: E731  (donated)
        once = lambda: run_decode(request, fresh(), prefill_s, proposer)  # noqa: E731
        once()  # compiles
        runs = sorted((once() for _ in range(repeats)), key=lambda out: out.stats["decode_s"])
        return runs[len(runs) // 2]

    alone = median_run(first, None)
    return {name: Comparison(alone, median_run(r, r.proposer), prefill_s) for name, r in requests.items()}
