"""Offline stand-ins for tiny runs and tests: a random target saved as a converted checkpoint, and a
synthetic manifest (random frames, templated questions, answers left for regeneration to fill)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from sparrow_jax import checkpoint
from sparrow_jax.config import CONFIGS, ConfigError, _from_tree
from sparrow_jax.models import build_model
from train.data import write_manifest

QUESTIONS = ("Describe the video.", "What happens in this clip?", "Describe the video in detail.",
             "What is shown?", "Summarise the scene.", "What moves in the video?")


def random_model(tree: dict, seed: int, scale: float):
    """A randomly initialised target built from our config tree `tree`; weights (not norms) are multiplied
    by `scale` so that its next-token distributions are less flat."""
    if tree.get("model_type") not in CONFIGS:
        raise ConfigError(f"target.random_init: model_type {tree.get('model_type')!r} is not one of {sorted(CONFIGS)}")
    model = build_model(_from_tree(CONFIGS[tree["model_type"]], tree), rngs=nnx.Rngs(seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: a if "norm" in jax.tree_util.keystr(p) else a * scale, params)
    return checkpoint.assign(model, params)


def save_model(path, model, dtype: str = "float32") -> None:
    """Save `model` (a target or a draft) as a converted checkpoint at `path`, replacing what is there."""
    params = checkpoint.to_numpy(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    checkpoint.save(path, model.config, params, dtype, overwrite=True)


def random_target(path, tree: dict, seed: int, scale: float, dtype: str = "float32") -> None:
    """Save `random_model(tree, seed, scale)` at `path`."""
    save_model(path, random_model(tree, seed, scale), dtype)


def synthetic_manifest(path, n: int, seed: int, frames: int = 4, size: int = 32) -> None:
    """n records with random uint8 frames [frames, size, size, 3] and one question each."""
    rng = np.random.default_rng(seed)
    root = Path(path).parent / "synthetic_frames"
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        np.save(root / f"{i:05d}.npy", rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))
        records.append({
            "id": f"synthetic-{i}", "frames": f"synthetic_frames/{i:05d}.npy",
            "conversations": [{"role": "user", "content": QUESTIONS[rng.integers(len(QUESTIONS))]},
                              {"role": "assistant", "content": ""}],
        })
    write_manifest(path, records)
