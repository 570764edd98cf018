"""The device mesh (`data`, `fsdp`, `tensor`) and the one table mapping logical axis names to mesh axes,
for training and inference alike.

Parameters carry logical names (`sparrow_jax.layers`); caches name the axes of their layouts
(`kv_cache.LAYOUT`). A dimension is sharded over its mesh axis only when the axis size divides it (tiny
models and odd head counts stay replicated there). Batch rows go over (`data`, `fsdp`).

Inference runs under `jax.set_mesh(mesh)` (`on_mesh`): arrays created inside a jit (the caches) are
constrained by `constrain`, which does nothing without a mesh, so single-device code is unchanged.
"""

from __future__ import annotations

import contextlib
import math

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
    "batch": BATCH,  # rows of inputs and caches (no parameter has this axis)
}


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, *, fix: str = "set mesh.data=-1 to use whatever "
              "is left") -> Mesh:
    """The (data, fsdp, tensor) mesh over every device; data=-1 takes what fsdp x tensor leave. `fix` is
    the advice the error gives when the sizes do not multiply to the device count."""
    n = jax.device_count()
    if min(fsdp, tensor) < 1 or data == 0 or data < -1:
        raise ValueError(f"mesh sizes must be >= 1 (data may be -1: the rest), got data={data} fsdp={fsdp} "
                         f"tensor={tensor}")
    if data == -1:
        if n % (fsdp * tensor):
            raise ValueError(f"{n} devices cannot be split into fsdp={fsdp} x tensor={tensor}; {fix}")
        data = n // (fsdp * tensor)
    if data * fsdp * tensor != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} needs {data * fsdp * tensor} devices, "
                         f"found {n}; {fix}")
    auto = (jax.sharding.AxisType.Auto,) * 3  # Explicit axes reject sharded contractions
    return jax.make_mesh((data, fsdp, tensor), AXES, axis_types=auto)


def spec_for(shape, logical, mesh, rules=RULES) -> P:
    """The PartitionSpec of an array of `shape` whose axes have the logical names `logical` (a mesh or an
    abstract mesh): each named axis over its mesh axes (one name or a tuple) where they divide it."""
    used, out = set(), []
    for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
        axis = rules.get(name) if name is not None else None
        axes = () if axis is None else axis if isinstance(axis, tuple) else (axis,)
        if not axes or used & set(axes) or dim % math.prod(mesh.shape[a] for a in axes):
            out.append(None)
        else:
            out.append(axis)
            used |= set(axes)
    return P(*out)


def param_shardings(model, mesh: Mesh, rules=RULES) -> dict:
    """Pure dict of NamedShardings for the parameters of `model` (an nnx module, possibly abstract)."""
    state = nnx.state(model, nnx.Param)
    logical = nnx.to_pure_dict(nnx.get_partition_spec(state))
    shapes = nnx.to_pure_dict(state)
    return jax.tree.map(lambda spec, a: NamedSharding(mesh, spec_for(a.shape, spec, mesh, rules)), logical, shapes,
                        is_leaf=lambda x: isinstance(x, P))


def shard_model(model, mesh: Mesh, rules=RULES):
    """`model` with its parameters placed on `mesh` by the table (other state replicated): each device
    receives its own shards only. Returns a new module (the given one is left as it was)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    placed = jax.tree.map(jax.device_put, nnx.to_pure_dict(params), param_shardings(model, mesh, rules))
    nnx.replace_by_pure_dict(params, placed)
    return nnx.merge(graphdef, params, jax.device_put(rest, replicated(mesh)))


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


def put_rows(tree, mesh: Mesh | None, rows: int):
    """`tree`'s arrays on `mesh`: those with `rows` leading rows split over the batch axes (where they
    divide them), the rest replicated, arrays already on `mesh` left as they are; unchanged without a mesh."""
    if mesh is None:
        return tree

    def put(x):
        if isinstance(x, jax.Array) and getattr(x.sharding, "mesh", None) == mesh:
            return x  # placed already (a draft's parameters, by the table)
        lead = ("batch",) if np.ndim(x) and np.shape(x)[0] == rows else ()
        return jax.device_put(x, NamedSharding(mesh, spec_for(np.shape(x), lead, mesh)))

    return jax.tree.map(put, tree)


def constrain(x, logical, rules=RULES):
    """`x` (inside a jit) constrained to the sharding its logical axis names give on the mesh set by
    `on_mesh`; `x` itself without a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(x.shape, logical, mesh, rules))


def on_mesh(mesh: Mesh | None):
    """A context that sets `mesh` for what runs (and traces) inside; nothing without one."""
    return contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh)
