"""What the command line shows on a terminal: text streamed as tokens are accepted, elapsed time while a
step runs, the stats line."""

from __future__ import annotations

import sys
import threading
import time


def show_stream(stream, decode, label: str, quiet: bool):
    """Write row 0's text to stdout as `stream` accepts tokens (elapsed time under `label` until the first
    ones arrive); returns the exhausted stream, whose `output` holds the GenerateOutput.

    When the first tokens come while the decode loop is still compiling (`stream.compiling`: a short prompt's
    prefill ran faster than the loop compiles), they are held and the ticker says "compiling the decode loop"
    until the next ones: text then flows without a stall, and the wait before it has its name on screen."""
    text = IncrementalText(decode)
    held = []
    with Ticker(label, quiet) as ticker:
        for new in stream:
            held.extend(new[0])
            if getattr(stream, "compiling", False):
                ticker.relabel("compiling the decode loop")
                continue
            ticker.stop()
            _write(text.add(held))
            held = []
    _write(text.add(held) + text.flush() + "\n")
    return stream


class IncrementalText:
    """Text of a growing token list, handed out as new suffixes: the whole prefix is decoded each time, so
    characters spanning several tokens come out whole (a trailing incomplete one is held back)."""

    def __init__(self, decode):
        self.decode, self.ids, self.shown = decode, [], ""

    def add(self, ids) -> str:
        self.ids.extend(ids)
        text = self.decode(self.ids)
        return "" if text.endswith("\ufffd") else self._advance(text)

    def flush(self) -> str:
        return self._advance(self.decode(self.ids))

    def _advance(self, text: str) -> str:
        new = text[len(self.shown):] if text.startswith(self.shown) else ""
        if text.startswith(self.shown):
            self.shown = text
        return new


class Ticker:
    """Elapsed seconds on stderr (`label... 3.2 s`) while a step that has no progress of its own runs, shown
    only once it has taken more than `delay` seconds, and only on a terminal (the stats line has the time)."""

    def __init__(self, label: str, quiet: bool = False, delay: float = 1.0):
        self.label, self.delay = label, delay
        self.quiet = quiet or not sys.stderr.isatty()
        self._done = threading.Event()
        self._lock = threading.Lock()  # the line on stderr: the ticking thread and `relabel` write it
        self._shown = False

    def __enter__(self):
        self._t0 = time.perf_counter()
        if not self.quiet:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self):
        if self._done.wait(self.delay):
            return
        while not self._done.wait(0.5):
            with self._lock:
                self._shown = True
                sys.stderr.write(f"\r{self.label}... {time.perf_counter() - self._t0:.1f} s")
                sys.stderr.flush()

    def relabel(self, label: str):
        """Go on timing a next step under `label`: the current one's line is ended with its time, if shown."""
        if label == self.label or self._done.is_set():
            return
        with self._lock:
            if self._shown:
                sys.stderr.write(f"\r{self.label}: {time.perf_counter() - self._t0:.1f} s\n")
            self.label, self._t0, self._shown = label, time.perf_counter(), False

    def stop(self):
        if self._done.is_set():
            return
        self._done.set()
        if not self.quiet:
            self._thread.join()
            if self._shown:
                sys.stderr.write(f"\r{self.label}: {time.perf_counter() - self._t0:.1f} s\n")

    def __exit__(self, *exc):
        self.stop()


def stats_line(stats: dict) -> str:
    src = stats.get("accepted_from")  # with --copy: where the accepted draft tokens came from
    sources = "" if src is None else f" | accepted draft {src['draft']}, copy {src['copy']}, both {src['both']}"
    if "cycles_from" in stats:  # and which cycles accepted from which (deep: those that verified deep copies)
        sources += " | cycles " + ", ".join(f"{k} {v}" for k, v in stats["cycles_from"].items()) + (
            f", deep {stats['deep_cycles']}")
    novel = stats.get("tau_novel")  # tau over the tokens that do not follow a repeated 4-gram
    tau = f"tau {stats['tau']:.2f}" + ("" if "tau_novel" not in stats else
                                       f" (novel {'-' if novel is None else f'{novel:.2f}'})")
    auto = ""
    if "tree_auto" in stats:  # what --tree auto chose
        from sparrow_jax.generation.autotune import describe

        auto = f" | tree auto: {describe(stats['tree_auto'])}"
    draft = f" + draft {stats['draft_prefill_s']:.2f}" if stats.get("draft_prefill_s") else ""
    # Compiling (a first call per shape; later ones load from the compilation cache) is its own figure: the
    # phase timings and tokens/s are the programs' runs.
    compiled = f" | compile {stats['compile_s']:.1f} s" if stats.get("compile_s", 0) >= 0.05 else ""
    return (f"[prefill {stats['prefill_s']:.2f}{draft} s{compiled} | {stats['new_tokens']} tokens in "
            f"{stats['decode_s']:.2f} s = "
            f"{stats['decode_tokens_per_s']:.1f} tokens/s | {tau} | {stats['cycles']} cycles{sources}{auto}]")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
