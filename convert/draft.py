"""`convert draft`: a released Sparrow / EAGLE-1/2 PyTorch draft -> converted draft checkpoint.

The draft shares the target's token embedding and lm_head, so it is converted against an already
converted target (`--target`): sizes must agree, and an `embed_tokens.weight` the draft ships must
be the target's own. That copy, and the `lm_head.weight` some EAGLE-2 drafts ship, are dropped;
the converted draft never stores them (export writes neither back).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from convert import hf_files
from convert.families import keymap_for, vocab_of
from convert.keymap import ConversionError, import_params
from convert.target import DTYPES, read_hf_config
from sparrow_jax import checkpoint
from sparrow_jax.config import DraftConfig, TextConfig, draft_mismatch, load_config
from sparrow_jax.models import abstract_model

EMBED = "embed_tokens.weight"
EMBED_ATOL, EMBED_RTOL = 1e-3, 1e-2  # rtol: a bf16 copy of an fp16/fp32 embedding still matches


def target_text_config(target_dir) -> tuple[object, TextConfig]:
    """(config, its text config) of the converted target in `target_dir`."""
    path = Path(target_dir) / checkpoint.CONFIG
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --target must be a converted target "
            "(python -m convert target --src HF_DIR --dst OUT_DIR)"
        )
    try:
        cfg = load_config(path)
    except ValueError as e:  # e.g. an HF directory given where the converted target belongs
        raise ConversionError(f"--target {target_dir} must be a converted target: {e}") from None
    if isinstance(cfg, DraftConfig):
        raise ConversionError(f"--target {target_dir} is a converted draft, not a target model")
    return cfg, (cfg.text if hasattr(cfg, "text") else cfg)


def target_embedding(target_dir, cfg) -> np.ndarray:
    """The converted target's token embedding [V, H], read alone (the rest of the target stays on disk)."""
    path = ("language_model", "embed_tokens", "embedding") if hasattr(cfg, "text") else ("embed_tokens", "embedding")
    t = cfg.text if hasattr(cfg, "text") else cfg
    item: dict = {path[-1]: jax.ShapeDtypeStruct((t.vocab_size, t.hidden_size), np.float32)}
    for name in reversed(path[:-1]):
        item = {name: item}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    params_dir = (Path(target_dir) / checkpoint.PARAMS).absolute()
    if not params_dir.is_dir():
        raise FileNotFoundError(f"{params_dir} not found: --target is not a converted checkpoint")
    with ocp.PyTreeCheckpointer() as ckptr:
        tree = ckptr.restore(params_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                                     partial_restore=True))
    for name in path:
        tree = tree[name]
    return np.asarray(tree, np.float32)


def check_compatible(draft: DraftConfig, source, target_dir) -> TextConfig:
    """Raise ConversionError unless the draft was built for the converted target in `target_dir`; returns
    that target's text config."""
    cfg, text = target_text_config(target_dir)
    if problem := draft_mismatch(draft, text):
        raise ConversionError(problem)
    if EMBED in source:
        want = (text.vocab_size, text.hidden_size)
        got = tuple(source.shape(EMBED))
        if got != want:
            raise ConversionError(f"draft {EMBED} has shape {got}, the target's embedding is {want}: "
                                  "this draft was trained for another target")
        mine = np.asarray(source.get(EMBED)).astype(np.float32)
        if not np.allclose(mine, target_embedding(target_dir, cfg), atol=EMBED_ATOL, rtol=EMBED_RTOL):
            raise ConversionError("embed_tokens differs from the target's: this draft was trained for another target")
    return text


def draft_config(hf: dict, source, window: int = 1024, pinned: int = 0) -> DraftConfig:
    """DraftConfig of a released draft: embedding norm and q/k/v bias are read off the weights."""
    return DraftConfig.from_hf(
        hf, window=window, pinned=pinned,
        embed_norm="input_layernorm.weight" in source,  # Sparrow has it; EAGLE-1/2 does not
        qkv_bias="layers.0.self_attn.q_proj.bias" in source,
    )


def convert_draft(src, target_dir, dst, window: int = 1024, pinned: int = 0, dtype: str = "float32",
                  overwrite: bool = False) -> list[str]:
    """Convert the draft in HF directory `src` for the converted target `target_dir`; write it to `dst`.

    Returns the checkpoint keys that were dropped (the draft's copies of the target's embedding / lm_head)."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    hf = read_hf_config(src)
    if "vision_config" in hf or "text_config" in hf:
        raise ConversionError(f"--src {src} holds a {hf.get('model_type')} target model, not a draft: --src takes "
                              "the released Sparrow / EAGLE draft (convert the target itself with `convert target`)")
    with hf_files.open_checkpoint(src) as source:
        config = draft_config(hf, source, window, pinned)
        text = check_compatible(config, source, target_dir)
        config = dataclasses.replace(config, target_layers=text.num_layers, vocab=vocab_of(source))
        keymap = keymap_for(config)
        shapes = checkpoint.param_shapes(abstract_model(config))
        params = import_params(source, shapes, keymap, dtype, progress=hf_files.iterate)
        dropped = [k for k in keymap.ignore if k in source]
    checkpoint.save(dst, config, params, dtype, overwrite=overwrite)
    return dropped
