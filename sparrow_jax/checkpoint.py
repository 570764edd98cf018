"""Converted checkpoints: an Orbax parameter tree plus our `config.json`, loadable without torch.

Layout of a converted directory:
    config.json    our model config (sparrow_jax.config), with "dtype"
    params/        Orbax checkpoint of the parameter tree (nested dict of arrays)
    tokenizer/     (targets) the HF tokenizer and chat template files (sparrow_jax.prompting)

A directory is written whole (sparrow_jax.atomic): a kill during a save leaves the old checkpoint or the new one.
`target_config` / `draft_config` read and check a checkpoint's config before any weights load (a target
must be a video model, a draft must fit its target); `load_draft` loads a draft with its window resized.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from sparrow_jax import atomic, sharding
from sparrow_jax.config import (ConfigError, DraftConfig, LlavaOnevisionConfig, Qwen25VLConfig, draft_mismatch, load_config,
                                save_config)
from sparrow_jax.models import abstract_model
from sparrow_jax.prompting import TOKENIZER_DIR, copy_tokenizer_files

CONFIG = "config.json"
PARAMS = "params"


def param_shapes(model) -> dict:
    """Nested dict of parameter shapes of a (possibly abstract) model."""
    return jax.tree.map(lambda a: tuple(a.shape), nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def save(directory, config, params: dict, dtype: str, overwrite: bool = False, tokenizer=None) -> list[str]:
    """Write `params` (nested dict of arrays), `config` and the tokenizer files found in directory `tokenizer`
    (if given) to `directory`, as one whole: it replaces what is there only once complete.

    An existing checkpoint there is an error unless `overwrite`. Returns the names of the tokenizer files."""
    # Host (numpy) arrays stay on the host: a multi-process job saves them without device placement.
    arrays = jax.tree.map(lambda a: a.astype(dtype) if isinstance(a, np.ndarray) else jnp.asarray(a, dtype=dtype), params)
    copied = []
    with atomic.replacing(directory, overwrite, markers=(CONFIG, PARAMS), **_collective()) as tmp:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / PARAMS, arrays)
        atomic.pause("params")
        if jax.process_index() == 0:  # one writer when several processes save together
            save_config(config, tmp / CONFIG)
            meta = json.loads((tmp / CONFIG).read_text())
            meta["dtype"] = dtype
            (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
            if tokenizer is not None:
                copied = copy_tokenizer_files(tokenizer, tmp / TOKENIZER_DIR)
    return copied


def copy(src, dst, overwrite: bool = False) -> None:
    """Copy the converted checkpoint `src` to `dst` whole (an old `dst` is replaced only once the copy is complete)."""
    _require_checkpoint(Path(src).absolute())
    with atomic.replacing(dst, overwrite, markers=(CONFIG, PARAMS)) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def _collective() -> dict:
    """`atomic.replacing`'s arguments for a save that all processes of a multi-process job make together."""
    if jax.process_count() == 1:
        return {}
    from jax.experimental import multihost_utils

    token = int(multihost_utils.broadcast_one_to_all(np.int32(os.getpid())))  # process 0's: one directory
    return dict(token=str(token), primary=jax.process_index() == 0, sync=multihost_utils.sync_global_devices)


def _require_checkpoint(directory: Path) -> None:
    if not (directory / CONFIG).is_file() or not (directory / PARAMS).is_dir():
        raise FileNotFoundError(
            f"{directory} is not a converted checkpoint (expected {CONFIG} and {PARAMS}/); "
            "create one with `python -m convert target --src HF_DIR --dst OUT_DIR`"
        )


def load_params(directory, dtype: str | None = None, on_host: bool = False, mesh=None) -> tuple[object, dict, str]:
    """(config, params as a nested dict of jax arrays, dtype name) of a converted checkpoint.

    `on_host`: numpy arrays instead, read whole by every process (multi-process jobs that shard them
    themselves; a plain restore there would look for the topology the checkpoint was saved with).
    `mesh`: each parameter restored straight into its shards on the mesh (`sharding.param_shardings`):
    each device reads only its own slice, no parameter is ever whole on one device."""
    directory = Path(directory).absolute()
    atomic.recover(directory)  # a kill between the renames of a two-rename swap (no renameat2)
    _require_checkpoint(directory)
    config = load_config(directory / CONFIG)
    stored = json.loads((directory / CONFIG).read_text()).get("dtype", "float32")
    dtype = dtype or stored
    model = abstract_model(config)
    abstract = jax.tree.map(
        lambda shape: jax.ShapeDtypeStruct(shape, jnp.dtype(stored)),
        param_shapes(model),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    if problem := tree_mismatch(stored_tree(directory / PARAMS), abstract):
        raise ConfigError(f"{directory / CONFIG} does not match the weights in {directory / PARAMS}: {problem}; "
                          "the config was edited or belongs to other weights: restore it, or convert the model again")
    with damaged_checkpoint(directory):
        if on_host:
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
            with ocp.PyTreeCheckpointer() as ckptr:
                params = ckptr.restore(directory / PARAMS,
                                       args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args))
            return config, jax.tree.map(lambda a: np.asarray(a).astype(dtype), params), dtype
        if mesh is not None:
            abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                                    sharding.param_shardings(model, mesh))
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(directory / PARAMS, abstract)
    return config, jax.tree.map(lambda a: a.astype(dtype), params), dtype  # a cast keeps each shard in place


def stored_tree(params_dir) -> dict:
    """The stored parameter tree of an Orbax checkpoint directory as nested dicts of ShapeDtypeStructs,
    read from its metadata alone (no array is read); a directory Orbax cannot read is "damaged"."""
    with damaged_checkpoint(Path(params_dir).parent):
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(Path(params_dir).absolute()).item_metadata
        if meta is None or not jax.tree.leaves(getattr(meta, "tree", meta)):
            raise RuntimeError(f"no parameter metadata could be read from {params_dir}")
    return as_structs(meta)


def as_structs(metadata) -> dict:
    """Orbax's array metadata (a tree, or an object holding one as `.tree`) as ShapeDtypeStructs."""
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), jnp.dtype(m.dtype)),
                        getattr(metadata, "tree", metadata))


def tree_mismatch(stored, expected) -> str | None:
    """The first difference between two trees of arrays or ShapeDtypeStructs (a key one has and the other
    lacks, or a leaf's shape or dtype), as a sentence naming the key path; None when they agree."""
    def name(k):  # dict key, sequence index or attribute name: stored trees hold dicts and lists
        return str(next((getattr(k, a) for a in ("key", "idx", "name") if hasattr(k, a)), k))

    def flat(tree):
        return {"/".join(name(k) for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}

    have, want = flat(stored), flat(expected)
    for key in sorted(want.keys() | have.keys()):
        if key not in have:
            return f"parameter {key} is not stored (the config expects shape {tuple(want[key].shape)})"
        if key not in want:
            return f"stored parameter {key} {tuple(have[key].shape)} is not in the model the config describes"
        (a, b) = have[key], want[key]
        if jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key):
            continue  # a typed PRNG key is stored as its raw uint32 data
        if tuple(a.shape) != tuple(b.shape):
            return f"parameter {key} is stored with shape {tuple(a.shape)}, the config gives {tuple(b.shape)}"
        if jnp.dtype(a.dtype) != jnp.dtype(b.dtype):
            return f"parameter {key} is stored as {jnp.dtype(a.dtype).name}, the config says {jnp.dtype(b.dtype).name}"
    return None


@contextlib.contextmanager
def damaged_checkpoint(directory):
    """Orbax / TensorStore read errors inside become "checkpoint DIR is damaged: ...; convert it again"."""
    try:
        yield
    except (ConfigError, FileNotFoundError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - tensorstore and Orbax raise ValueError, OSError, RuntimeError
        _quiet_closed_loops()
        reason = " ".join(str(e).split())[:300]
        raise ConfigError(f"checkpoint {directory} is damaged ({type(e).__name__}: {reason}); "
                          "convert it again (or copy it again from where it came)") from e


def _quiet_closed_loops() -> None:
    """After a failed TensorStore read, its other pending reads report to an event loop Orbax already
    closed; Python prints each as an "unraisable" traceback. Drop those (only those)."""
    previous = sys.unraisablehook
    if getattr(previous, "_sparrow_quiet", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    hook._sparrow_quiet = True
    sys.unraisablehook = hook


def load(directory, dtype: str | None = None, on_host: bool = False, mesh=None):
    """Load a converted checkpoint into its model (an `nnx.Module`), parameters in `dtype` (default: as stored);
    `on_host`: as numpy arrays; `mesh`: each parameter restored into its shards there (see `load_params`)."""
    if on_host and mesh is not None:
        raise ValueError("load: on_host=True gives numpy arrays, mesh= device shards; ask for one of them")
    config, params, dtype = load_params(directory, dtype, on_host, mesh)
    return assign(abstract_model(config, dtype=jnp.dtype(dtype)), params)


def assign(model, params: dict):
    """Put `params` (nested dict of arrays, the model's own structure) into `model`; returns it."""
    nnx.replace_by_pure_dict(state := nnx.state(model), params)
    nnx.update(model, state)
    return model


def to_numpy(params: dict) -> dict:
    return jax.tree.map(np.asarray, params)


def read_config(path, what: str = "checkpoint"):
    """The model config of the converted checkpoint at `path`, checked to exist (`what` names the argument
    in messages, e.g. "--target")."""
    if not (Path(path) / CONFIG).is_file():
        raise FileNotFoundError(f"{what} {path} is not a converted checkpoint (no {CONFIG}); create one with "
                                "`python -m convert target --src HF_DIR --dst OUT_DIR`")
    return load_config(Path(path) / CONFIG)


def target_config(path, what: str = "--target"):
    """The config of a converted video target (LLaVA-OneVision or Qwen2.5-VL), with a clear error for a
    draft or a text-only model."""
    config = read_config(path, what)
    if isinstance(config, DraftConfig):
        raise ValueError(f"{what} {path} is a converted draft; give the converted target model "
                         "(python -m convert target) and pass the draft as --draft")
    if not isinstance(config, (LlavaOnevisionConfig, Qwen25VLConfig)):
        raise ValueError(f"{what} {path} is a text-only {config.model_type} model; a video needs a "
                         "llava_onevision or qwen2_5_vl target")
    return config


def draft_config(path, target_text, what: str = "--draft") -> DraftConfig:
    """The config of a converted draft, checked against the target's text config `target_text`."""
    config = read_config(path, what)
    if not isinstance(config, DraftConfig):
        raise ValueError(f"{what} {path} is a {config.model_type} model, not a converted draft "
                         "(python -m convert draft --src HF_DRAFT --target TARGET --dst OUT)")
    if problem := draft_mismatch(config, target_text):
        raise ValueError(f"{what} {path}: {problem}; use the draft trained for this target, or convert it "
                         "against this target (python -m convert draft --target ...)")
    return config


def load_draft(path, config: DraftConfig, window: int | None = None, dtype: str | None = None, mesh=None):
    """The draft's weights into its model (`config` from `draft_config`), with the window cache resized to
    `window` text slots if given; `mesh`: restored into its shards there (see `load_params`)."""
    _, params, dtype = load_params(path, dtype, mesh=mesh)
    if window is not None:
        config = dataclasses.replace(config, window=window)
    return assign(abstract_model(config, dtype=jnp.dtype(dtype)), params)
