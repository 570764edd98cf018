"""`convert target` (HF directory -> converted checkpoint) and `convert export` (back to HF)."""

from __future__ import annotations

import json
from pathlib import Path

from convert import hf_files
from convert.families import keymap_for, vocab_tensors
from convert.hf_config import hf_config
from convert.keymap import export_params, import_params
from sparrow_jax import atomic, checkpoint
from sparrow_jax.config import config_from_hf, read_json
from sparrow_jax.models import abstract_model
from sparrow_jax.prompting import TOKENIZER_DIR, copy_tokenizer_files

DTYPES = ("float32", "bfloat16")


def read_hf_config(src: Path) -> dict:
    path = Path(src) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --src must be a Hugging Face model directory")
    return read_json(path)


def convert_target(src, dst, dtype: str = "float32", overwrite: bool = False) -> list[str]:
    """Convert the HF model in `src` to `dst`; its tokenizer and chat template files go to `dst/tokenizer/`.
    The old `dst` (with `overwrite`) is replaced only once the new checkpoint is complete.
    Returns the names of the tokenizer files copied."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    config = config_from_hf(read_hf_config(src))
    shapes = checkpoint.param_shapes(abstract_model(config))
    with hf_files.open_checkpoint(src) as source:
        params = import_params(source, shapes, keymap_for(config), dtype, progress=hf_files.iterate)
    return checkpoint.save(dst, config, params, dtype, overwrite=overwrite, tokenizer=src)


def export(src, dst, overwrite: bool = False) -> None:
    """Converted checkpoint `src` -> HF directory `dst` (safetensors, config.json, and its tokenizer files),
    written whole: an existing `dst` is an error unless `overwrite`, and is replaced only once complete."""
    config, params, _ = checkpoint.load_params(src)
    tensors = export_params(checkpoint.to_numpy(params), keymap_for(config))
    tensors.update(vocab_tensors(config))
    with atomic.replacing(dst, overwrite, markers=("config.json",)) as tmp:
        hf_files.write_safetensors(tensors, tmp)
        (tmp / "config.json").write_text(json.dumps(hf_config(config), indent=2))
        copy_tokenizer_files(Path(src) / TOKENIZER_DIR, tmp)  # the tokenizer files convert carried, back beside it
