"""Ahead-of-time measurement: lower and compile a jitted function over shapes only (no array allocated, no
device needed) and read what the compiled program holds per device.

`memory_analysis()` gives argument, output, aliased (donated) and temporary bytes per device; their
`peak` is what the program needs resident while it runs. `cost_analysis()` gives XLA's flop and byte
counts, which count a loop body (`lax.scan` over layers, the decode `while_loop`) once, not per trip:
they describe one pass of each body, not the whole run. On the CPU backend, temporaries also hold
float32 copies of bfloat16 weights for its matmuls, so CPU figures overstate an accelerator's.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Bytes per device of one compiled program, and XLA's cost counts (loop bodies once)."""

    argument: int
    output: int
    alias: int  # output bytes that reuse donated argument buffers
    temp: int
    flops: float
    bytes_accessed: float

    @property
    def peak(self) -> int:
        """Bytes resident while the program runs: its arguments, outputs not aliased to them, temporaries."""
        return self.argument + self.output - self.alias + self.temp


def shape_of(tree, shardings=None):
    """`tree` with every array (numpy, jax or already a ShapeDtypeStruct) as a ShapeDtypeStruct; other leaves
    (ints, None, static objects) unchanged. `shardings`: a matching tree of shardings to attach, or None."""
    def one(x, sharding=None):
        if isinstance(x, (np.ndarray, jax.Array, jax.ShapeDtypeStruct)):
            kept = x.sharding if isinstance(x, jax.ShapeDtypeStruct) else None
            # The dtype a jitted call would give the array (int64 -> int32 without x64), so that a program
            # compiled from these shapes is the one the call on the arrays finds.
            dtype = jax.dtypes.canonicalize_dtype(x.dtype, allow_extended_dtype=True)
            return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=kept if sharding is None else sharding)
        return x

    return jax.tree.map(one, tree) if shardings is None else jax.tree.map(one, tree, shardings)


def compile_shapes(jitted, *args, **kwargs):
    """`jitted` (a `jax.jit` function) lowered and compiled for the shapes of `args`/`kwargs` (arrays are
    replaced by their shapes; static arguments pass as they are)."""
    return jitted.lower(*shape_of(args), **shape_of(kwargs)).compile()


def footprint(compiled) -> Footprint:
    """The `Footprint` of a compiled program (`compile_shapes`)."""
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    return Footprint(int(m.argument_size_in_bytes), int(m.output_size_in_bytes), int(m.alias_size_in_bytes),
                     int(m.temp_size_in_bytes), float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)))


def tree_bytes(tree) -> int:
    """Bytes per device of the arrays (or shapes) in `tree`: a sharded one counts its shard."""
    def one(x):
        sharding = getattr(x, "sharding", None)
        shape = x.shape if sharding is None else sharding.shard_shape(x.shape)
        return int(np.prod(shape)) * np.dtype(x.dtype).itemsize

    return sum(one(x) for x in jax.tree.leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype"))
