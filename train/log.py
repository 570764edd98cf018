"""Training logs on process 0: a tqdm progress bar, TensorBoard event files and a JSONL file.

Metrics arrive as device arrays; they are fetched only every `log.every` steps (the loop's only host
sync), then step time and tokens/s are computed over that interval.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from train.config import LogConfig


class Logger:
    def __init__(self, workdir, cfg: LogConfig, total_steps: int, start_step: int = 0):
        self.main = jax.process_index() == 0
        self.cfg = cfg
        self.pending: list = []  # (step, device metrics, real tokens) since the last fetch
        self.t0 = time.perf_counter()
        self.history: list[dict] = []
        self.bar = self.tb = self.jsonl = None
        if self.main:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            self.jsonl = open(Path(workdir) / "metrics.jsonl", "a")
            if cfg.tensorboard:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
            if cfg.progress:
                self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def step(self, step: int, metrics, tokens: int, force: bool = False) -> dict | None:
        """Record step `step` (1-based, after the update); every `every` steps fetch and write."""
        self.pending.append((step, metrics, tokens))
        if self.bar is not None:
            self.bar.update(1)
        if step % self.cfg.every and not force:
            return None
        fetched = jax.device_get([m for _, m, _ in self.pending])  # the sync point
        now = time.perf_counter()
        dt = (now - self.t0) / len(self.pending)
        tokens = sum(t for _, _, t in self.pending)
        row = {k: float(np.mean([f[k] for f in fetched])) for k in fetched[-1]}
        row.update(step=step, step_time_s=dt, tokens_per_s=tokens / max(now - self.t0, 1e-9))
        self.pending, self.t0 = [], now
        self.history.append(row)
        if self.main:
            self.jsonl.write(json.dumps(row) + "\n")
            self.jsonl.flush()
            if self.tb is not None:
                for k, v in row.items():
                    if k != "step":
                        self.tb.add_scalar(k, v, step)
                self.tb.flush()
            if self.bar is not None:
                acc = row.get("pass0/top1", row.get("token_accuracy", float("nan")))  # draft / target mode
                self.bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{acc:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
        return row

    def close(self) -> None:
        for h in (self.bar, self.tb, self.jsonl):
            if h is not None:
                h.close()
