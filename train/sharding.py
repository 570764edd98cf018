"""Training's side of the mesh: global batches from each process's rows. The mesh, the logical-axis
table and global arrays from host values are the library's (`sparrow_jax.sharding`), re-exported here."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from sparrow_jax.sharding import (AXES, BATCH, RULES, batch_sharding, make_mesh, param_shardings,  # noqa: F401
                                  put_global, replicated, spec_for)


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
