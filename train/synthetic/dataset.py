"""Write a synthetic dataset: one mp4 per scene (PyAV, H.264) and a JSONL manifest in the training
data format, each line with the scene's question, ground-truth answer and facts."""

from __future__ import annotations

import json
import pathlib

import av
import numpy as np
from tqdm import tqdm

from train.synthetic.describe import PROMPTS, describe, facts
from train.synthetic.world import render, sample_scene


def write_mp4(path, frames: np.ndarray, fps: float = 8.0, crf: int = 12) -> None:
    """Encode [T, H, W, 3] uint8 frames (H, W even) as H.264 at a quality that keeps the colours."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def example(seed: int, steps: int = 32, max_things: int = 3):
    """(scene, question, answer) of one seed: the same seed always gives the same triple."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, steps, max_things)
    return scene, PROMPTS[rng.integers(len(PROMPTS))], describe(scene, rng)


def write_dataset(out, count: int, seed: int = 0, frames: int = 16, size: int = 112, fps: float = 8.0,
                  steps: int = 32, max_things: int = 3) -> pathlib.Path:
    """Videos `seed .. seed + count - 1` under out/videos, and out/manifest.jsonl."""
    if size % 2:
        raise ValueError(f"video size must be even for H.264 4:2:0, got {size}")
    out = pathlib.Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    with open(manifest, "w") as f:
        for s in tqdm(range(seed, seed + count), desc="synthetic videos", unit="video"):
            scene, question, answer = example(s, steps, max_things)
            name = f"videos/{s:06d}.mp4"
            write_mp4(out / name, render(scene, frames, size, size), fps)
            required, _ = facts(scene)
            f.write(json.dumps({
                "video": name, "seed": s,
                "conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                "facts": sorted(map(list, required)),
            }) + "\n")
    return manifest
