"""Training's side of the mesh: global batches from each process's rows. The mesh, the logical-axis
table and global arrays from host values are the library's (`sparrow_jax.sharding`), re-exported here."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from sparrow_jax.config import Qwen25VLConfig
from sparrow_jax.sharding import (AXES, BATCH, RULES, batch_sharding, make_mesh, param_shardings,  # noqa: F401
                                  put_global, replicated, spec_for)


def put_batch(batch: dict, mesh: Mesh, target_config=None) -> dict:
    """This process's rows of a batch -> global arrays sharded over the batch axes.

    A Qwen2.5-VL video input (the patches of every row's video and their plan) is not batch-major: it is
    replicated whole. With several processes each holds only its own rows' videos, so they are gathered
    first (`global_videos`; `target_config` is needed then)."""
    if jax.process_count() > 1 and isinstance(target_config, Qwen25VLConfig) and "video" in batch:
        batch = {**batch, "video": global_videos(batch["video"], mesh, batch["input_ids"].shape, target_config)}
    out = {}
    for k, v in batch.items():
        if v is None:
            out[k] = None
        elif isinstance(v, np.ndarray):
            out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
        else:  # a structured video input, the same on every process by now
            if jax.process_count() > 1 and not isinstance(target_config, Qwen25VLConfig):
                raise ValueError("put_batch needs the target's config for a multi-process batch with a "
                                 "Qwen2.5-VL video input: put_batch(batch, mesh, target.config)")
            out[k] = jax.tree.map(lambda a: put_global(a, replicated(mesh)), v)
    return out


def global_videos(video, mesh: Mesh, local_shape, config):
    """Every process's Qwen2.5-VL video input (or None: none of its rows has a video) -> the whole global
    batch's, the same on every process: the patches and grids of all processes in global row order, the
    plan rebuilt for them. A process's rows are one contiguous block of the global batch (the batch
    sharding's), so ordering the processes by their block's first row orders the videos by row."""
    from jax.experimental import multihost_utils

    from sparrow_jax.models.qwen2_5_vl import VideoInput

    rows, width = local_shape
    global_shape = (rows * jax.process_count(), width)
    blocks = batch_sharding(mesh, 2).addressable_devices_indices_map(global_shape).values()
    first = min(idx[0].start or 0 for idx in blocks)
    dim = config.vision.patch_dim
    pixels = np.zeros((0, dim), np.float32) if video is None else np.asarray(video.pixel_values, np.float32)
    grid = np.zeros((0, 3), np.int32) if video is None else np.asarray(video.grid_thw, np.int32)
    sizes = multihost_utils.process_allgather(np.array([first, len(pixels), len(grid)], np.int64))
    most = sizes[:, 1:].max(axis=0)
    all_pixels = multihost_utils.process_allgather(np.pad(pixels, ((0, most[0] - len(pixels)), (0, 0))))
    all_grids = multihost_utils.process_allgather(np.pad(grid, ((0, most[1] - len(grid)), (0, 0))))
    order = np.argsort(sizes[:, 0], kind="stable")
    if not sizes[:, 2].any():
        return None
    return VideoInput.build(np.concatenate([all_pixels[p, : sizes[p, 1]] for p in order]),
                            np.concatenate([all_grids[p, : sizes[p, 2]] for p in order]), config)
