"""The server's batching worker: requests queue up; one thread collects those arriving within a short window
(up to --max-batch), splits them into compatible groups (same video frame count and frame size, same
sampling values; seeds may differ) and runs each group as one batch through `Engine.stream`, handing each row's text
to its request as tokens are accepted. Rows may differ in prompt length; a batch decodes up to its largest
token limit and each row is cut at its own. Stop strings end a row inside the decode loop (as the
tokenizer spells them, `ChatTokenizer.stop_sequences`) and are applied here as well, on the text: a row's
text is cut before the first stop string, whatever tokens spelled it, and the request ends."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time

from infer.terminal import IncrementalText


@dataclasses.dataclass
class Job:
    """One chat completion: its prompt and video, settings and where its events go. `emit` is called from
    the worker thread with ("delta", text), then ("done", finish_reason, completion_tokens, stats) or
    ("error", message)."""

    ids: list
    pixels: object
    key: tuple  # jobs with equal keys may share a batch
    settings: dict  # HF-named settings for Engine.stream (max_new_tokens = this job's limit)
    stops: list[str]
    emit: object


class Scheduler:
    def __init__(self, engine, eos_ids, max_batch: int = 4, window_s: float = 0.02):
        self.engine, self.eos, self.max_batch, self.window_s = engine, set(eos_ids), max_batch, window_s
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="sparrow-batches", daemon=True)
        self.batches: list[int] = []  # the size of each batch run (for logs and tests)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, deadline, stop = [first], time.monotonic() + self.window_s, False
            while len(jobs) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    job = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            for group in compatible_groups(jobs):
                self._run(group)
            if stop:
                return

    def _run(self, jobs: list[Job]) -> None:
        self.batches.append(len(jobs))
        settings = dict(jobs[0].settings, max_new_tokens=max(j.settings["max_new_tokens"] for j in jobs),
                        seed=[j.settings["seed"] for j in jobs], stop_strings=[j.stops for j in jobs])
        rows = [Row(self.engine.tokenizer.decode, job, self.eos, settings["max_new_tokens"]) for job in jobs]
        try:
            stream = self.engine.stream([j.ids for j in jobs], [j.pixels for j in jobs], **settings)
            t0 = time.perf_counter()
            for new in stream:
                for row, tokens in zip(rows, new):
                    row.add(tokens)
                if all(row.finished for row in rows) and any(row.early for row in rows):
                    break  # every row ended, some before the engine would stop it: no need to decode on
            stats = stream.output.stats if stream.output is not None else {
                "prefill_s": stream.prefill_s, "decode_s": time.perf_counter() - t0 - (stream.prefill_s or 0.0),
                "new_tokens": sum(len(r.ids) for r in rows), "stopped_early": True}
        except Exception as e:  # noqa: BLE001  the request fails, the server keeps serving
            for row in rows:
                if not row.finished:
                    row.job.emit(("error", f"{type(e).__name__}: {' '.join(str(e).split())}"))
            return
        for row in rows:
            row.finish({**stats, "batch_size": len(jobs)})


def compatible_groups(jobs: list[Job]) -> list[list[Job]]:
    """`jobs` grouped by key, in the order of each group's first arrival."""
    groups: dict = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    return list(groups.values())


class Row:
    """One request's row of a batch: its tokens, its text handed out as deltas (held back where it could
    be the start of a stop string), and why it ended."""

    def __init__(self, decode, job: Job, eos: set, batch_max: int):
        self.job, self.eos, self.text = job, eos, IncrementalText(decode)
        self.early = job.settings["max_new_tokens"] < batch_max  # ends before the batch's decoding does
        self.ids: list[int] = []
        self.pending = ""  # decoded, not yet handed out
        self.reason: str | None = None
        self.finished = False

    def add(self, tokens) -> None:
        if self.reason is not None:
            return
        tokens = tokens[: self.job.settings["max_new_tokens"] - len(self.ids)]
        self.ids.extend(tokens)
        self.pending += self.text.add(tokens)
        if any(t in self.eos for t in tokens):
            self.reason = "stop"
        elif len(self.ids) >= self.job.settings["max_new_tokens"]:
            self.reason = "length"
        if self.reason is not None:
            self.pending += self.text.flush()
        self._hand_out()
        if self.reason is not None:
            self.finished = True

    def finish(self, stats: dict) -> None:
        if self.reason is None:  # the stream ended without this row reaching EOS or its limit
            self.pending += self.text.flush()
            self.reason = "stop"
            self._hand_out()
        self.finished = True
        self.job.emit(("done", self.reason, len(self.ids), stats))

    def _hand_out(self) -> None:
        cut = min((i for i in (self.pending.find(s) for s in self.job.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending, self.reason, self.early = self.pending[:cut], "stop", True
            hold = 0
        elif self.reason is not None:
            hold = 0
        else:  # keep back the end of the text that could be the start of a stop string
            hold = max((k for s in self.job.stops for k in range(min(len(s) - 1, len(self.pending)), 0, -1)
                        if self.pending.endswith(s[:k])), default=0)
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        if out:
            self.job.emit(("delta", out))
