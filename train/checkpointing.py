"""Training checkpoints with Orbax `CheckpointManager`: the train state (draft parameters, optimizer
state, step, RNG) plus each process's data-loader position (grain's handler, one file per process).

Saves are asynchronous and keep the last K. Orbax writes each step into a temporary directory and
renames it when complete, so a save interrupted half-way is never listed and the previous checkpoint
stays the latest usable one.
"""

from __future__ import annotations

from pathlib import Path

import grain.python as grain
import jax
import orbax.checkpoint as ocp

from sparrow_jax.checkpoint import as_structs, tree_mismatch
from sparrow_jax.config import ConfigError
from train.config import CheckpointConfig


def manager(directory, cfg: CheckpointConfig) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep, save_interval_steps=cfg.every, enable_async_checkpointing=cfg.async_save,
        create=True,
    )
    return ocp.CheckpointManager(
        Path(directory).absolute(), options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.PyGrainCheckpointHandler()},
    )


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, force: bool = False) -> bool:
    """Start saving (asynchronously) when `step` is due (or `force`); returns whether a save started."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=grain.PyGrainCheckpointSave(data_iter))
    return mngr.save(step, args=args, force=force)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, data_iter):
    """(state, step) of the latest complete checkpoint, with `data_iter` moved to its saved position;
    (None, 0) when there is none. `abstract_state` (ShapeDtypeStructs with shardings) places the arrays."""
    step = mngr.latest_step()
    if step is None:
        return None, 0
    stored = mngr.item_metadata(step)["state"]
    if stored is not None and (problem := tree_mismatch(as_structs(stored), abstract_state)):
        raise ConfigError(f"{mngr.directory / str(step)} was saved by a run with another draft or optimizer "
                          f"({problem}); resume with the settings it was saved with (the workdir's "
                          "train_config.json), or start in a new workdir")
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                              data=grain.PyGrainCheckpointRestore(data_iter))
    restored = mngr.restore(step, args=args)
    return restored["state"], step


def abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)

