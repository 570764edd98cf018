"""Write a short synthetic video (a square moving over a gradient, H.264 in mp4) to try `python -m infer` on.

    python examples/make_clip.py /tmp/clip.mp4
"""

import sys

import av
import numpy as np


def main(out: str, seconds: float = 3.0, rate: int = 24, width: int = 320, height: int = 240) -> None:
    with av.open(out, "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        y, x = np.mgrid[:height, :width]
        for i in range(int(seconds * rate)):
            img = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], -1).astype(np.uint8)
            left = i * (width - 40) // max(int(seconds * rate) - 1, 1)
            img[100:140, left : left + 40] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/clip.mp4")
