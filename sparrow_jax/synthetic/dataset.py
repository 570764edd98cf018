"""Write a synthetic dataset: one mp4 per scene (PyAV, H.264) and a JSONL manifest in the training
data format, each line with the scene's question, ground-truth answer and facts."""

from __future__ import annotations

import json
import pathlib

import numpy as np
from tqdm import tqdm

from sparrow_jax.video import write_video
from sparrow_jax.synthetic.describe import PROMPTS, describe, facts
from sparrow_jax.synthetic.world import render, sample_scene


def example(seed: int, steps: int = 32, max_things: int = 3):
    """(scene, question, answer) of one seed: the same seed always gives the same triple."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, steps, max_things)
    return scene, PROMPTS[rng.integers(len(PROMPTS))], describe(scene, rng)


def scene_video(seed: int, frames: int, size: int) -> np.ndarray:
    """uint8 [frames, size, size, 3]: scene `seed` rendered at `frames` frames (any count: held-out scenes
    at the lengths a benchmark asks for). Callers that also need the scene or its answer take `example`
    once and `render` it themselves."""
    return render(example(seed)[0], frames, size, size)


def write_dataset(out, count: int, seed: int = 0, frames: int = 16, size: int = 112, fps: int = 8,
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
            write_video(out / name, render(scene, frames, size, size), fps, options={"crf": "12"})  # keeps colours
            required, _ = facts(scene)
            f.write(json.dumps({
                "video": name, "seed": s,
                "conversations": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                "facts": sorted(map(list, required)),
            }) + "\n")
    return manifest
