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


def put_batch(batch: dict, mesh: Mesh) -> dict:
    """This process's rows of a batch -> global arrays sharded over the batch axes."""
    out = {}
    for k, v in batch.items():
        if v is None:
            out[k] = None
        elif isinstance(v, np.ndarray):
            out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
        else:  # a structured video input (Qwen2.5-VL patches + plan): not batch-major, replicate it
            if jax.process_count() > 1:
                raise NotImplementedError("multi-process training with Qwen2.5-VL video inputs is not supported yet")
            out[k] = jax.tree.map(lambda a: put_global(a, replicated(mesh)), v)
    return out
