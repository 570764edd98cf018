"""Time spent compiling, apart from running: the wall seconds a thread spends tracing, lowering and compiling
jitted programs (loading one from the persistent compilation cache counts), read off jax.monitoring's
events. The generation stats report it as `compile_s`, and the phase timings (`prefill_s`,
`draft_prefill_s`, `decode_s`) exclude it, so a first call's tokens/s is the decoding's, not the compiler's.

    with compile_time.clock() as compiling:
        out = jitted(x)
    compiling.seconds

A jitted call compiles before it runs, in the calling thread, so wall time minus `seconds` is the run.
Nested events (a jit traced inside another's trace) are counted once: the clock measures the union of
their time spans.

`in_background(work)` runs `work` (e.g. `jitted.lower(shapes).compile()`, which leaves the program in
JAX's in-memory caches, so the later call of `jitted` on arrays of those shapes compiles nothing) in a
thread of its own, and its future holds the seconds it spent compiling there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import Future

import jax

EVENTS = frozenset({"/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                    "/jax/core/compile/backend_compile_duration"})
_local = threading.local()


class Clock:
    """The compile spans seen while the clock was open, in this thread."""

    def __init__(self):
        self.spans: list[tuple[float, float]] = []

    @property
    def seconds(self) -> float:
        total, reach = 0.0, float("-inf")
        for start, end in sorted(self.spans):
            if end > reach:
                total += end - max(start, reach)
                reach = end
        return total


@contextlib.contextmanager
def clock():
    c = Clock()
    clocks = _local.__dict__.setdefault("clocks", [])
    clocks.append(c)
    try:
        yield c
    finally:
        clocks.remove(c)


def in_background(work) -> Future:
    """Run `work()` in a daemon thread (a compile there must not hold up the process's exit); the future's
    result is the seconds it spent compiling. A failure is logged and swallowed: the work only warms the
    caches, and the real call raises the same error where its caller can see it."""
    done: Future = Future()

    def run():
        with clock() as c:
            try:
                work()
            except Exception:  # noqa: BLE001  (see the docstring)
                logging.getLogger(__name__).debug("compiling ahead failed", exc_info=True)
        done.set_result(c.seconds)

    threading.Thread(target=run, name="sparrow-jax-compile-ahead", daemon=True).start()
    return done


def _on_span(event: str, start: float, end: float, **_) -> None:
    if event in EVENTS:
        for c in getattr(_local, "clocks", ()):
            c.spans.append((start, end))


jax.monitoring.register_event_time_span_listener(_on_span)
