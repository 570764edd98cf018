"""Checkpoint-file I/O for the converter: read HF weight files lazily, write safetensors.

Architecture-agnostic: this module only knows file layouts, never parameter names.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

# Importing ml_dtypes also registers "bfloat16" as a numpy dtype name, which is what lets
# safetensors' numpy backend return BF16 tensors (as ml_dtypes.bfloat16) instead of failing.
import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm

SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")

T = TypeVar("T")


def iterate(items: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterator[T]:
    """Wrap an iteration in a tqdm bar; disable=None hides it when stderr is not a tty."""
    return iter(tqdm(items, desc=desc, total=total, disable=None, unit="tensor"))


def _import_torch():
    try:
        import torch
    except ImportError as e:  # torch is optional: only PyTorch .bin checkpoints need it
        raise ImportError("reading pytorch_model.bin checkpoints needs PyTorch: pip install torch "
                          "(or convert the checkpoint to safetensors)") from e
    return torch


def _torch_to_numpy(t) -> np.ndarray:
    torch = _import_torch()
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bf16: reinterpret the bits, exact (no float32 round trip)
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class TensorSource:
    """Read-only view over the tensors of an HF checkpoint directory; use as a context manager.

    `weight_map` maps each key to the file (relative to `root`) holding it. Files are opened on
    first use and stay open until `close()`, so tensors are read one at a time, never all at once.
    """

    def __init__(self, root: Path, weight_map: dict[str, str], kind: str):
        self.root, self.kind = root, kind
        self._weight_map = weight_map
        self._handles: dict[str, object] = {}  # file -> safe_open handle or (mmap'd) torch state dict
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "TensorSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._handles.clear()
        self._stack.close()

    def keys(self) -> list[str]:
        return sorted(self._weight_map)

    def __contains__(self, key: str) -> bool:
        return key in self._weight_map

    def __len__(self) -> int:
        return len(self._weight_map)

    def _handle(self, key: str):
        if key not in self._weight_map:
            raise KeyError(f"tensor {key!r} not in checkpoint {self.root}")
        fname = self._weight_map[key]
        if fname not in self._handles:
            path = str(self.root / fname)
            if self.kind == "safetensors":
                self._handles[fname] = self._stack.enter_context(_safe_open(path))
            else:  # mmap keeps the .bin on disk; weights_only refuses arbitrary pickled code
                self._handles[fname] = _import_torch().load(path, map_location="cpu", weights_only=True, mmap=True)
        return self._handles[fname]

    def shape(self, key: str) -> tuple[int, ...]:
        h = self._handle(key)
        if self.kind == "safetensors":
            return tuple(h.get_slice(key).get_shape())
        return tuple(h[key].shape)

    def get(self, key: str) -> np.ndarray:
        h = self._handle(key)
        if self.kind == "safetensors":
            return h.get_tensor(key)
        return _torch_to_numpy(h[key])


def _safe_open(path):
    """safe_open, with a truncated or corrupt file reported as a ValueError naming it."""
    try:
        return safe_open(str(path), framework="numpy")
    except Exception as e:  # noqa: BLE001 - SafetensorError derives from Exception only
        raise ValueError(f"{path} is damaged or not a safetensors file ({e}); download or save it again") from None


def _read_index(root: Path, index_name: str) -> dict[str, str]:
    with open(root / index_name) as f:
        weight_map = json.load(f)["weight_map"]
    missing = sorted({v for v in weight_map.values() if not (root / v).is_file()})
    if missing:
        raise FileNotFoundError(f"{root / index_name} references missing shard file(s): {', '.join(missing)}")
    return weight_map


def open_checkpoint(src_dir: str | os.PathLike) -> TensorSource:
    """Find the weights in an HF model directory (same preference order as transformers)."""
    root = Path(src_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint directory {root} does not exist")
    if (root / SAFE_SINGLE).is_file():
        with _safe_open(root / SAFE_SINGLE) as f:
            return TensorSource(root, dict.fromkeys(f.keys(), SAFE_SINGLE), "safetensors")
    if (root / SAFE_INDEX).is_file():
        return TensorSource(root, _read_index(root, SAFE_INDEX), "safetensors")
    if (root / BIN_SINGLE).is_file():
        src = TensorSource(root, {}, "bin")
        sd = _import_torch().load(str(root / BIN_SINGLE), map_location="cpu", weights_only=True, mmap=True)
        src._weight_map = dict.fromkeys(sd, BIN_SINGLE)
        src._handles[BIN_SINGLE] = sd  # already loaded (mmap'd) to learn the keys; reuse it
        return src
    if (root / BIN_INDEX).is_file():
        return TensorSource(root, _read_index(root, BIN_INDEX), "bin")
    raise FileNotFoundError(f"no checkpoint weights in {root}: looked for "
                            f"{SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE}, {BIN_INDEX}")


def _atomic_save(tensors: dict[str, np.ndarray], path: Path) -> None:
    # Write beside the target then rename, so a crash never leaves a truncated file under the real name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})  # "pt" metadata: transformers expects it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _atomic_write_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_safetensors(tensors: dict[str, np.ndarray], dst_dir: str | os.PathLike,
                      max_shard_bytes: int = 5 * 2**30) -> list[str]:
    """Write `tensors` as HF safetensors: one model.safetensors, or shards + index past the limit.

    Arrays may be ml_dtypes.bfloat16 (stored as BF16, loads as torch.bfloat16). Returns the
    written file names. Shards are filled greedily in dict order; a tensor larger than the
    limit gets a shard of its own.
    """
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # safetensors needs dense buffers
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for k, v in tensors.items():
        if shards[-1] and size + v.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += v.nbytes

    if len(shards) == 1:
        names = [SAFE_SINGLE]
    else:
        n = len(shards)
        names = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for name, shard in zip(iterate(names, desc="writing shards"), shards):
        _atomic_save(shard, dst / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(v.nbytes for v in tensors.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        _atomic_write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", dst / SAFE_INDEX)

    # Drop leftovers of an earlier write: a stale model.safetensors would shadow a new index
    # (readers prefer it), and stale shards/index would mislead anyone listing the directory.
    stale = [SAFE_SINGLE, SAFE_INDEX] + [p.name for p in dst.iterdir() if _SHARD_RE.fullmatch(p.name)]
    for name in stale:
        if name not in names and not (name == SAFE_INDEX and len(shards) > 1):
            with contextlib.suppress(FileNotFoundError):
                (dst / name).unlink()
    return names
