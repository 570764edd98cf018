"""Checkpoint-file I/O: lazy reads of HF safetensors/.bin layouts and safetensors writing."""
import json
import sys

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from convert.hf_files import iterate, open_checkpoint, write_safetensors


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "d.half": torch.randn(2, 2, generator=g).to(torch.float16),
    }


def _as_numpy(t):
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _assert_same(src, expected: dict):
    assert src.keys() == sorted(expected)
    for k, t in expected.items():
        arr = src.get(k)
        assert isinstance(arr, np.ndarray)
        assert src.shape(k) == tuple(t.shape) == arr.shape
        want = _as_numpy(t)
        assert arr.dtype == want.dtype, k
        # Compare bit patterns so bf16 and NaN-free floats are checked exactly.
        assert arr.tobytes() == want.tobytes(), k


def _tiny_qwen2(dtype=torch.float32):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(dtype).eval()


def test_single_safetensors(tmp_path):
    tensors = _tensors()
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with open_checkpoint(tmp_path) as src:
        _assert_same(src, tensors)
        assert src.get("b.bias").dtype == ml_dtypes.bfloat16
        assert "a.weight" in src and len(src) == 4


def test_sharded_safetensors_from_transformers(tmp_path):
    model = _tiny_qwen2(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="4KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "model.safetensors").exists()
    with open_checkpoint(tmp_path) as src:
        _assert_same(src, model.state_dict())
        assert all(src.get(k).dtype == ml_dtypes.bfloat16 for k in src.keys())


def test_single_bin(tmp_path):
    tensors = _tensors()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with open_checkpoint(tmp_path) as src:
        assert src.kind == "bin"
        _assert_same(src, tensors)


def test_sharded_bin(tmp_path):
    tensors = _tensors()
    keys = list(tensors)
    shards = {"pytorch_model-00001-of-00002.bin": keys[:2], "pytorch_model-00002-of-00002.bin": keys[2:]}
    for name, ks in shards.items():
        torch.save({k: tensors[k] for k in ks}, tmp_path / name)
    weight_map = {k: name for name, ks in shards.items() for k in ks}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with open_checkpoint(tmp_path) as src:
        _assert_same(src, tensors)


def test_safetensors_preferred_over_bin(tmp_path):
    save_file({"x": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    torch.save({"y": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    with open_checkpoint(tmp_path) as src:
        assert src.keys() == ["x"]


def test_unknown_key(tmp_path):
    save_file({"x": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    with open_checkpoint(tmp_path) as src:
        with pytest.raises(KeyError, match="nope"):
            src.get("nope")
        with pytest.raises(KeyError, match="nope"):
            src.shape("nope")


def test_missing_dir_and_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        open_checkpoint(tmp_path / "does_not_exist")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin") as e:
        open_checkpoint(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_shard(tmp_path):
    save_file({"x": torch.ones(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    weight_map = {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        open_checkpoint(tmp_path)


def test_bin_without_torch_says_pip_install(tmp_path, monkeypatch):
    torch.save({"x": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match="pip install torch"):
        open_checkpoint(tmp_path)


def test_write_single_round_trip(tmp_path):
    tensors = {k: _as_numpy(t) for k, t in _tensors().items()}
    tensors["strided"] = np.arange(12, dtype=np.float32).reshape(3, 4).T  # non-contiguous input
    assert write_safetensors(tensors, tmp_path) == ["model.safetensors"]
    assert not (tmp_path / "model.safetensors.index.json").exists()
    loaded = load_file(str(tmp_path / "model.safetensors"))
    assert loaded["b.bias"].dtype == torch.bfloat16
    for k, v in tensors.items():
        assert _as_numpy(loaded[k]).tobytes() == np.ascontiguousarray(v).tobytes()
    with open_checkpoint(tmp_path) as src:
        _assert_same(src, loaded)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_write_sharded_loads_in_transformers(tmp_path):
    from transformers import Qwen2ForCausalLM

    model = _tiny_qwen2(torch.bfloat16)
    model.config.save_pretrained(tmp_path)
    sd = model.state_dict()
    tensors = {k: _as_numpy(t) for k, t in sd.items()}
    names = write_safetensors(tensors, tmp_path, max_shard_bytes=8 * 1024)
    assert len(names) > 1 and names[0] == f"model-00001-of-{len(names):05d}.safetensors"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
    assert set(index["weight_map"]) == set(sd) and set(index["weight_map"].values()) == set(names)
    for name in names:
        shard = load_file(str(tmp_path / name))
        for k, t in shard.items():
            assert index["weight_map"][k] == name and t.dtype == torch.bfloat16 and torch.equal(t, sd[k])

    reloaded = Qwen2ForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    for k, t in reloaded.state_dict().items():
        assert t.dtype == torch.bfloat16 and torch.equal(t, sd[k]), k
    with open_checkpoint(tmp_path) as src:
        _assert_same(src, sd)


def test_rewrite_removes_stale_layout(tmp_path):
    big = {f"t{i}": np.full(256, i, dtype=np.float32) for i in range(4)}  # 1 KiB each
    assert len(write_safetensors(big, tmp_path, max_shard_bytes=2048)) == 2
    write_safetensors({"x": np.ones(2, np.float32)}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    write_safetensors(big, tmp_path, max_shard_bytes=1024)  # single -> sharded drops model.safetensors
    assert not (tmp_path / "model.safetensors").exists()
    with open_checkpoint(tmp_path) as src:
        assert src.keys() == sorted(big)


def test_iterate():
    assert list(iterate(["a", "b"], desc="x")) == ["a", "b"]
