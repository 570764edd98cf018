"""The device mesh (`data`, `fsdp`, `tensor`) and the one table mapping logical axis names to mesh axes.

Parameters carry logical names (`sparrow_jax.layers`); a dimension is sharded over its mesh axis only
when the axis size divides it (tiny models and odd head counts stay replicated there). Batches are
sharded over (`data`, `fsdp`) on their leading axis; each process supplies its own rows.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sparrow_jax.config import Qwen25VLConfig

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")
RULES = {
    "embed": "fsdp",
    "mlp": "tensor",
    "q_heads": "tensor",
    "kv_heads": "tensor",
    "vocab": "tensor",
    "layers": None,
    "norm": None,
}


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> Mesh:
    n = jax.device_count()
    if data == -1:
        if n % (fsdp * tensor):
            raise ValueError(f"{n} devices cannot be split into fsdp={fsdp} x tensor={tensor}")
        data = n // (fsdp * tensor)
    if data * fsdp * tensor != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} needs {data * fsdp * tensor} devices, "
                         f"found {n}; set mesh.data=-1 to use whatever is left")
    auto = (jax.sharding.AxisType.Auto,) * 3  # Explicit axes reject sharded contractions
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=auto)


def spec_for(shape, logical, mesh: Mesh, rules=RULES) -> P:
    used, out = set(), []
    for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
        axis = rules.get(name) if name is not None else None
        if axis is None or axis in used or dim % mesh.shape[axis]:
            out.append(None)
        else:
            out.append(axis)
            used.add(axis)
    return P(*out)


def param_shardings(model, mesh: Mesh, rules=RULES) -> dict:
    """Pure dict of NamedShardings for the parameters of `model` (an nnx module, possibly abstract)."""
    state = nnx.state(model, nnx.Param)
    logical = nnx.to_pure_dict(nnx.get_partition_spec(state))
    shapes = nnx.to_pure_dict(state)
    return jax.tree.map(lambda spec, a: NamedSharding(mesh, spec_for(a.shape, spec, mesh, rules)), logical, shapes,
                        is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


def put_global(tree, shardings):
    """Host values identical on every process -> global arrays (each process fills only its own shards)."""
    def put(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(put, tree, shardings)


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
