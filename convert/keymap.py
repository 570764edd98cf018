"""Declarative mapping between our parameter tree and HF state-dict keys.

Our leaf path ('language_model', 'layers', 'self_attn', 'q_proj', 'kernel') becomes an HF key by
(1) replacing the longest matching path prefix with the family's HF prefix (`{i}` = index along the
stacked layer axis, `{i1}` = that index + 1 for stacks that start at HF layer 1), (2) dotting the rest, (3) renaming the leaf (kernel/scale/embedding -> weight).
Tensor layouts differ only in two ways: linear kernels are transposed ([in, out] vs torch's
[out, in]) and convolution kernels put the output channel last ([p, p, C, D] vs [D, C, p, p] in 2-D;
[C, tp, p, p, D] vs [D, C, tp, p, p] in 3-D).
"""

from __future__ import annotations

import dataclasses

import numpy as np

LEAF_TO_HF = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


class ConversionError(ValueError):
    """A checkpoint key is missing, unexpected, or has the wrong shape."""


@dataclasses.dataclass(frozen=True)
class KeyMap:
    prefixes: tuple[tuple[tuple[str, ...], str], ...]  # (our path prefix, HF key prefix)
    legacy: tuple[tuple[str, str], ...] = ()  # (old HF key prefix, current HF key prefix)
    ignore: tuple[str, ...] = ()  # HF keys that may be present and are dropped

    def hf_key(self, path: tuple[str, ...], layer: int | None = None) -> str:
        for ours, hf in sorted(self.prefixes, key=lambda p: -len(p[0])):
            if path[: len(ours)] == ours:
                rest = list(path[len(ours) :])
                rest[-1] = LEAF_TO_HF.get(rest[-1], rest[-1])
                prefix = hf.format(i=layer, i1=None if layer is None else layer + 1)
                return ".".join(([prefix] if prefix else []) + rest)
        raise ConversionError(f"no HF key rule for parameter {'/'.join(path)}")

    def is_stacked(self, path: tuple[str, ...]) -> bool:
        best = max((p for p in self.prefixes if path[: len(p[0])] == p[0]), key=lambda p: len(p[0]))
        return "{i" in best[1]

    def current_name(self, key: str) -> str:
        for old, new in self.legacy:
            if key.startswith(old):
                return new + key[len(old) :]
        return key


def to_ours(path: tuple[str, ...], w: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and w.ndim == 2:
        return w.T
    if path[-1] == "kernel" and w.ndim == 4:  # conv [D, C, p, p] -> [p, p, C, D]
        return w.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and w.ndim == 5:  # conv3d [D, C, tp, p, p] -> [C, tp, p, p, D]
        return w.transpose(1, 2, 3, 4, 0)
    return w


def to_hf(path: tuple[str, ...], a: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and a.ndim == 2:
        return a.T
    if path[-1] == "kernel" and a.ndim == 4:
        return a.transpose(3, 2, 0, 1)
    if path[-1] == "kernel" and a.ndim == 5:
        return a.transpose(4, 0, 1, 2, 3)
    return a


def flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + (str(k),)))
        else:
            out[prefix + (str(k),)] = v
    return out


def unflatten(flat: dict[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def import_params(source, shapes: dict, keymap: KeyMap, dtype, progress=lambda it, **_: it) -> dict:
    """Read every parameter of `shapes` (our nested tree of shape tuples) from `source` (key -> array).

    Raises ConversionError naming the first missing or mis-shaped key, or all unexpected keys.
    """
    names = {keymap.current_name(k): k for k in source.keys()}
    used, out = set(), {}
    flat = flatten(shapes)
    for path, shape in progress(flat.items(), desc="import", total=len(flat)):
        stacked = keymap.is_stacked(path)
        per_layer = tuple(shape[1:]) if stacked else tuple(shape)
        arrays = []
        for layer in range(shape[0]) if stacked else [None]:
            key = keymap.hf_key(path, layer)
            if key not in names:
                raise ConversionError(f"missing key {key!r} in checkpoint (needed for {'/'.join(path)})")
            w = to_ours(path, np.asarray(source.get(names[key])))
            if tuple(w.shape) != per_layer:
                got = tuple(to_hf(path, w).shape)
                want = tuple(to_hf(path, np.empty(per_layer, np.int8)).shape)
                raise ConversionError(f"key {key!r} has shape {got}, expected {want}")
            arrays.append(w.astype(dtype))
            used.add(key)
        out[path] = np.stack(arrays) if stacked else arrays[0]
    unexpected = sorted(k for k in names if k not in used and k not in keymap.ignore)
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
        raise ConversionError(f"{len(unexpected)} unexpected key(s) in checkpoint: {shown}")
    return unflatten(out)


def export_params(params: dict, keymap: KeyMap) -> dict[str, np.ndarray]:
    """Our nested parameter tree -> {HF key: array in HF layout}."""
    out = {}
    for path, a in flatten(params).items():
        a = np.asarray(a)
        if keymap.is_stacked(path):
            for layer in range(a.shape[0]):
                out[keymap.hf_key(path, layer)] = np.ascontiguousarray(to_hf(path, a[layer]))
        else:
            out[keymap.hf_key(path)] = np.ascontiguousarray(to_hf(path, a))
    return out
