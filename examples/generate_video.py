"""Load a converted LLaVA-OneVision checkpoint and generate from raw uint8 video frames.

    python examples/generate_video.py /tmp/tiny-llava
Needs only the runtime dependencies (no torch, no transformers).
"""

import sys

import numpy as np

import infer
import sparrow_jax
from sparrow_jax.processing.llava_onevision import expand_video_placeholder, num_video_tokens, preprocess_video


def main(ckpt: str) -> None:
    target = sparrow_jax.load(ckpt)
    cfg = target.config
    frames = np.random.default_rng(0).integers(0, 256, (4, 90, 120, 3), dtype=np.uint8)  # [T, H, W, 3]
    pixels = preprocess_video(frames, cfg.vision.image_size)  # [T, S, S, 3] float32
    n = num_video_tokens(len(frames), cfg.vision.image_size, cfg.vision.patch_size)
    prompt = expand_video_placeholder([1, 2, cfg.video_token_id, 3, 4], cfg.video_token_id, n)
    out = infer.generate(target, [prompt], pixels[None], max_new_tokens=16)
    print("tokens:", out.token_ids()[0])
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in out.stats.items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-llava")
