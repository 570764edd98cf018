"""python -m infer.bench video: autoregressive prefill/decoding cost against the number of visual tokens.

Runs a randomly initialised LLaVA-OneVision-shaped model (no checkpoint needed) or a converted one
(`--target DIR`), reports medians over `--repeats` runs after a warm-up, and prints every figure as a
ratio to the shortest video measured in the same run. The speculative path adds its columns (tau, DSR,
ESR) with the draft milestone.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from tqdm.auto import tqdm

import infer
from sparrow_jax import checkpoint
from sparrow_jax.config import LlavaOnevisionConfig, SiglipConfig, TextConfig
from sparrow_jax.models import build_model


def default_target():
    text = TextConfig(vocab_size=2048, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4,
                      num_kv_heads=2, head_dim=64)
    vision = SiglipConfig(hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, image_size=112, patch_size=14)
    return build_model(LlavaOnevisionConfig(text=text, vision=vision, video_token_id=2000, image_token_id=2001))


def run(target, frames: int, new_tokens: int, repeats: int, rng) -> dict:
    cfg = target.config
    n_video = cfg.num_video_tokens(frames)
    prompt = np.concatenate([rng.integers(0, 1000, 16), np.full(n_video, cfg.video_token_id), rng.integers(0, 1000, 16)])
    video = rng.standard_normal((1, frames, cfg.vision.image_size, cfg.vision.image_size, 3)).astype(np.float32)
    stats = [infer.generate(target, [prompt], video, max_new_tokens=new_tokens).stats for _ in range(repeats + 1)][1:]
    med = lambda k: statistics.median(s[k] for s in stats)  # noqa: E731
    return {"visual_tokens": n_video, "prefill_s": med("prefill_s"), "decode_s": med("decode_s"),
            "tok_per_s": med("decode_tokens_per_s")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m infer.bench video", description=__doc__)
    p.add_argument("--target", help="converted LLaVA-OneVision checkpoint (default: random 4-layer model)")
    p.add_argument("--frames", default="8,32,128", help="comma-separated frame counts")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    target = checkpoint.load(args.target) if args.target else default_target()
    rng = np.random.default_rng(0)
    rows = [run(target, int(f), args.new_tokens, args.repeats, rng) for f in tqdm(args.frames.split(","), desc="videos")]
    base = rows[0]
    print(f"{'visual tokens':>13} {'prefill s':>10} {'decode tok/s':>13} {'decode speed vs first':>22} {'prefill vs first':>17}")
    for r in rows:
        print(f"{r['visual_tokens']:>13} {r['prefill_s']:>10.3f} {r['tok_per_s']:>13.1f} "
              f"{r['tok_per_s'] / base['tok_per_s']:>21.2f}x {r['prefill_s'] / base['prefill_s']:>16.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
