"""Memory of one draft training step at the paper's lengths, from ahead-of-time compiles of shape-only models:

    python -m train.scale [--devices 8] [--layers 2] [--modes online offline]

A 7B LLaVA-OneVision target (`sparrow_jax.scale_configs`, bf16) and its one-layer float32 Sparrow draft, one
25.6k-token row (128 frames at 384 px) per device, a mesh of fsdp = every device: the trainer's own jitted
step (`train.step.make_train_step`, the same shardings, donation and optimizer) is lowered with
ShapeDtypeStructs and compiled, nothing allocated. `online` runs the frozen target (vision tower and all
layers) inside the step; `offline` reads stored features over the whole row (`objective.text_len` = 0).

The target's layers run in a `lax.scan` and keep nothing for a backward pass, so depth adds only their
parameters: the figures for the real 28 layers are a compile with `--layers` (2) plus the other layers'
parameter shards (`StepMemory.with_layers`). Online compiles at 2 and 4 layers differ by exactly that (arguments
+116,570,112 bytes = 2 x 58,285,056 on fsdp 8; temp +384 bytes). Offline the step never reads the target's
layers and jit drops them from its arguments, but the trainer holds them on the devices, so they count too.
On CPU, XLA converts bf16 weights to float32 before each matmul: those copies inflate temp bytes (an
accelerator multiplies bf16 directly), so the CPU figure is an upper bound; `cpu_weight_copies` is the
share of the lm_head's copies (4.1 GiB), left out of `total_without_copies`.

`main` asks jax for --devices CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count) unless XLA_FLAGS
already sets a count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """Bytes per device of one compiled train step (XLA's memory analysis)."""

    mode: str
    devices: int
    layers: int  # target layers the figures are for
    argument: int  # parameters, optimizer state and the batch shard
    output: int
    alias: int  # outputs written over donated arguments (counted once)
    temp: int  # everything the step allocates besides

    @property
    def total(self) -> int:
        return self.argument + self.output - self.alias + self.temp

    def with_layers(self, layers: int, per_layer: int) -> "StepMemory":
        """The same step with `layers` target layers, each adding `per_layer` argument bytes (its
        parameters' shard). Temp does not grow with depth: the layers run in a `lax.scan` whose body is
        allocated once, and the frozen target keeps no activations for a backward pass."""
        return dataclasses.replace(self, layers=layers, argument=self.argument + (layers - self.layers) * per_layer)

    def row(self) -> dict:
        return {"mode": self.mode, "devices": self.devices, "layers": self.layers,
                **{k: round(getattr(self, k) / GIB, 2) for k in ("argument", "output", "alias", "temp", "total")}}


def batch_shapes(target_cfg, mode: str, rows: int, seq_len: int, frames: int, mesh) -> dict:
    """ShapeDtypeStructs of a collated batch (`train.data.collate`, as `train.sharding.put_batch` places it)."""
    import jax
    import jax.numpy as jnp

    from train.sharding import batch_sharding

    def arr(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))

    b, n = rows, seq_len
    batch = {"input_ids": arr((b, n), jnp.int32), "positions": arr((b, n), jnp.int32), "lengths": arr((b,), jnp.int32),
             "assistant": arr((b, n), bool), "visual": arr((b, n), bool)}
    if mode == "offline":
        batch["features"] = arr((b, n, target_cfg.text.hidden_size), jnp.bfloat16)  # what train.features stores
    else:
        side = target_cfg.vision.image_size
        batch["video"] = arr((b, frames, side, side, 3), jnp.float32)
    return batch


def compile_step(target_cfg, mode: str, mesh, *, seq_len: int, frames: int, rows_per_device: int = 1,
                 objective=None):
    """The compiled train step (`jax.stages.Compiled`) for shape-only models on `mesh` (fsdp = its devices)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparrow_jax.models import abstract_model
    from sparrow_jax.scale_configs import sparrow_draft_7b
    from train import sharding
    from train.config import ObjectiveConfig, OptimConfig
    from train.step import make_optimizer, make_train_step
    from train.trainer import state_shardings

    obj = objective or ObjectiveConfig()
    target = abstract_model(target_cfg, dtype=jnp.bfloat16)
    draft = abstract_model(sparrow_draft_7b(target_cfg), dtype=jnp.float32)  # the trainer's draft is float32
    opt, schedule = make_optimizer(OptimConfig(), 1000)
    shapes = lambda tree, sh: jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sh)  # noqa: E731
    tgraph, tstate = nnx.split(target)
    tparams = shapes(nnx.to_pure_dict(tstate), sharding.param_shardings(target, mesh))
    dgraph, dstate = nnx.split(draft)
    state_sh = state_shardings(draft, opt, mesh)
    dparams = shapes(nnx.to_pure_dict(dstate), state_sh["params"])
    state = {"params": dparams, "opt_state": shapes(jax.eval_shape(opt.init, dparams), state_sh["opt_state"]),
             "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=state_sh["step"]),
             "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=state_sh["rng"])}
    rows = rows_per_device * mesh.devices.size
    batch = batch_shapes(target_cfg, mode, rows, seq_len, frames, mesh)
    capture = obj.capture_layer or target_cfg.text.num_layers // 2
    step = make_train_step(tgraph, dgraph, opt, schedule, obj, capture, mesh)
    return jax.jit(step, out_shardings=(state_sh, None), donate_argnums=0).lower(state, tparams, batch).compile()


def measure(mode: str, mesh, layers: int, **kw) -> StepMemory:
    from sparrow_jax.scale_configs import llava_onevision_7b

    m = compile_step(llava_onevision_7b(layers), mode, mesh, **kw).memory_analysis()
    return StepMemory(mode, mesh.devices.size, layers, m.argument_size_in_bytes, m.output_size_in_bytes,
                      m.alias_size_in_bytes, m.temp_size_in_bytes)


def layer_bytes(mesh) -> int:
    """Bytes per device of one target decoder layer's bf16 parameters, sharded as the trainer shards them."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparrow_jax.models import abstract_model
    from sparrow_jax.scale_configs import llava_onevision_7b
    from train.sharding import param_shardings

    target = abstract_model(llava_onevision_7b(2), dtype=jnp.bfloat16)  # 2 stacked layers
    shapes = jax.tree.leaves(nnx.to_pure_dict(nnx.state(target, nnx.Param))["language_model"]["layers"])
    shardings = jax.tree.leaves(param_shardings(target, mesh)["language_model"]["layers"])
    return sum(int(np.prod(sh.shard_shape(a.shape))) * a.dtype.itemsize for a, sh in zip(shapes, shardings)) // 2


def step_memory(mode: str, mesh, layers: int = 2, **kw) -> StepMemory:
    """Per-device bytes of one step with the real 28 target layers, from a compile with `layers` of them
    (linear in depth: the extra layers add their parameters' shards, `StepMemory.with_layers`)."""
    from sparrow_jax.scale_configs import llava_onevision_7b

    return measure(mode, mesh, layers, **kw).with_layers(llava_onevision_7b().text.num_layers, layer_bytes(mesh))


def cpu_weight_copies() -> int:
    """Bytes per device of the float32 copies of the bf16 lm_head a CPU compile holds at the step's peak (two,
    in the chunked loss: the buffer assignment of the fsdp-8 compile shows them): the CPU-only share of temp
    that `total_without_copies` leaves out. The lm_head is sharded over the vocabulary by `tensor` only, so
    with fsdp it is whole on each device."""
    from sparrow_jax.scale_configs import llava_onevision_7b

    t = llava_onevision_7b().text
    return 2 * 4 * t.vocab_size * t.hidden_size


def main(argv=None) -> int:
    from sparrow_jax.cli_help import ArgumentParser

    p = ArgumentParser(prog="python -m train.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8, help="CPU devices (fsdp over all of them)")
    p.add_argument("--layers", type=int, default=2, help="target layers compiled (the rest added linearly)")
    p.add_argument("--modes", nargs="+", default=["online", "offline"], choices=["online", "offline"],
                   help="online: the target runs in the step; offline: stored features")
    p.add_argument("--seq-len", type=int, default=None, help="row length (default: the paper's 25,600)")
    args = p.parse_args(argv)
    # Read when jax starts its backend (the first device query), not at import.
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from sparrow_jax.scale_configs import LLAVA_FRAMES, PROMPT_TOKENS
    from train.sharding import make_mesh

    if jax.device_count() != args.devices:
        raise SystemExit(f"jax has {jax.device_count()} devices, asked for --devices {args.devices}: set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices} or drop it")
    mesh = make_mesh(data=1, fsdp=args.devices)
    copies = cpu_weight_copies()
    for mode in args.modes:
        m = step_memory(mode, mesh, args.layers, seq_len=args.seq_len or PROMPT_TOKENS, frames=LLAVA_FRAMES)
        print(json.dumps({**m.row(), "cpu_weight_copies": round(copies / GIB, 2),
                          "total_without_copies": round((m.total - copies) / GIB, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
