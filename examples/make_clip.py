"""Write a short synthetic video (a square moving over a gradient, H.264 in mp4) to try `python -m infer` on.

    python examples/make_clip.py /tmp/clip.mp4
"""

import sys

import numpy as np

from sparrow_jax.video import write_video


def main(out: str, seconds: float = 3.0, rate: int = 24, width: int = 320, height: int = 240) -> None:
    n = int(seconds * rate)
    y, x = np.mgrid[:height, :width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], -1)
        left = i * (width - 40) // max(n - 1, 1)
        frames[i, 100:140, left : left + 40] = 255
    write_video(out, frames, rate)
    print(f"wrote {out}")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/clip.mp4")
