"""The target alone and the target with a draft, side by side on one prompt: the speedup measurement of
`python -m infer --demo` and `python -m infer.bench video` (`compare`).

Both decodings start from one target prefill (the same jitted prefill `generate` runs, keeping the
prompt's hidden states for the draft), so a long video is prefilled once per measurement, not once per
decoding. Each decoding is compiled by a first run and then timed over `repeats` runs from copies of the
prefilled cache; reported times are medians. DSR = AR decoding time / speculative decoding time (the
speculative time includes the draft's own prefill over the prompt's text); ESR adds the target's
prefill to both.
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
        return (self.prefill_s + self.alone.stats["decode_s"]) / (self.prefill_s + self.speculative.stats["decode_s"])


def compare(target, draft, prompts, video=None, *, repeats: int = 3, warm_prefill: bool = True,
            **kwargs) -> Comparison:
    """Decode `prompts` with `target` alone and with `draft` (`kwargs`: `generate`'s keyword arguments)."""
    request = setup(target, prompts, video, draft=draft, **kwargs)
    if warm_prefill:
        run_prefill(request)
    prefilled, prefill_s = run_prefill(request)

    def median_run(proposer) -> GenerateOutput:
        fresh = lambda: prefilled.replace(cache=jax.tree.map(jnp.copy, prefilled.cache))  # noqa: E731  (donated)
        once = lambda: run_decode(request, fresh(), prefill_s, proposer)  # noqa: E731
        once()  # compiles
        runs = sorted((once() for _ in range(repeats)), key=lambda out: out.stats["decode_s"])
        return runs[len(runs) // 2]

    return Comparison(median_run(None), median_run(request.proposer), prefill_s)
