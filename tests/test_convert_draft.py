"""`python -m convert draft`: released Sparrow / EAGLE-1/2 PyTorch drafts -> our SparrowDraft, checked
against the draft network computed with transformers' own decoder layers; export back; bad drafts."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from convert.__main__ import main
from convert.draft import convert_draft
from convert.keymap import ConversionError
from sparrow_jax import checkpoint, kv_cache
from sparrow_jax.config import DraftConfig, load_config

H, V, I, HEADS = 64, 128, 128, 4  # the `llava` fixture's text model
TOL = 1e-4


def released_config(kind, layers, hidden=H, vocab=V):
    """config.json as the releases ship it (transformers 4.x layout: rope_theta at the top level)."""
    common = dict(hidden_size=hidden, intermediate_size=I, num_attention_heads=HEADS, num_hidden_layers=layers,
                  vocab_size=vocab, hidden_act="silu", max_position_embeddings=4096, torch_dtype="bfloat16",
                  tie_word_embeddings=False)
    if kind == "sparrow":  # Qwen2-style
        return dict(common, architectures=["Qwen2ForCausalLM"], model_type="qwen2", num_key_value_heads=2,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False)
    return dict(common, architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=4,
                rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, attention_bias=False)


class TorchDraft:
    """A released draft built from transformers' decoder layers: the reference network and its state dict."""

    def __init__(self, kind, layers, target_embed=None, hidden=H, vocab=V, seed=0):
        from transformers import LlamaConfig, Qwen2Config
        from transformers.models.llama import modeling_llama as llama
        from transformers.models.qwen2 import modeling_qwen2 as qwen2

        torch.manual_seed(seed)
        self.kind, self.hf = kind, released_config(kind, layers, hidden, vocab)
        mod, cls = (qwen2, Qwen2Config) if kind == "sparrow" else (llama, LlamaConfig)
        prefix = "Qwen2" if kind == "sparrow" else "Llama"
        cfg = cls(**self.hf)
        cfg._attn_implementation = "eager"
        layer_cls, norm_cls = getattr(mod, f"{prefix}DecoderLayer"), getattr(mod, f"{prefix}RMSNorm")
        self.rotary = getattr(mod, f"{prefix}RotaryEmbedding")(cfg)
        self.norm = norm_cls(hidden, eps=cfg.rms_norm_eps) if kind == "sparrow" else None
        self.fc = torch.nn.Linear(2 * hidden, hidden, bias=True)
        self.layers = [layer_cls(cfg, layer_idx=i).eval() for i in range(layers)]
        norms = [p for m in self.layers for n, p in m.named_parameters() if "norm" in n]
        for p in norms + ([self.norm.weight] if self.norm is not None else []):
            p.data.add_(0.1 * torch.randn_like(p))  # unit norms would hide a mis-mapped tensor

        sd = {}
        if kind == "sparrow":
            sd["embed_tokens.weight"] = target_embed.clone()
            sd["input_layernorm.weight"] = self.norm.weight
        sd["fc.weight"], sd["fc.bias"] = self.fc.weight, self.fc.bias
        for i, layer in enumerate(self.layers):
            for k, v in layer.state_dict().items():
                if not (i == 0 and k.startswith("input_layernorm.")):
                    sd[f"layers.{i}.{k}"] = v
        self.layers[0].input_layernorm = torch.nn.Identity()  # layer 0 has no input norm
        self.state_dict = {k: v.detach().clone().contiguous() for k, v in sd.items()}

    def __call__(self, e, h, positions):
        x = torch.from_numpy(e)
        if self.norm is not None:
            x = self.norm(x)
        x = self.fc(torch.cat([x, torch.from_numpy(h)], dim=-1))
        pos = torch.from_numpy(positions)
        cos_sin = self.rotary(x, pos)
        b, n = positions.shape
        mask = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None].expand(b, 1, n, n)
        for layer in self.layers:
            x = layer(x, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
            x = x[0] if isinstance(x, tuple) else x
        return x.numpy()

    def save(self, directory, fmt, state_dict=None):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict if state_dict is None else state_dict
        (directory / "config.json").write_text(json.dumps(self.hf, indent=2))
        if fmt == "bin":
            torch.save(sd, directory / "pytorch_model.bin")
        else:
            save_file(sd, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory


def target_embed(llava):
    return llava[0].model.language_model.embed_tokens.weight.detach().float()


@pytest.fixture(scope="module")
def sparrow(llava):
    return TorchDraft("sparrow", 1, target_embed(llava))


@pytest.fixture(scope="module")
def eagle():
    return TorchDraft("eagle", 2, seed=1)


def convert(src, target, dst, *extra):
    return main(["draft", "--src", str(src), "--target", str(target), "--dst", str(dst), *extra])


def forward_diff(draft, ours, embed, seed=0):
    rng = np.random.default_rng(seed)
    b, n = 2, 7
    ids = rng.integers(0, V, (b, n))
    e = embed.numpy()[ids]  # the target's embedding of token t+1
    h = rng.standard_normal((b, n, H)).astype(np.float32)
    positions = (np.arange(n)[None] + np.array([[0], [5]])).astype(np.int64)
    out, _ = ours(e, h, positions, kv_cache.causal_mask(b, n))
    return float(np.max(np.abs(np.asarray(out, np.float64) - draft(e, h, positions))))


def exported_tensors(directory):
    with safe_open(str(Path(directory) / "model.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("kind", ["sparrow", "eagle"])
def test_convert_forward_and_round_trip(kind, llava, sparrow, eagle, tmp_path, capsys):
    draft = sparrow if kind == "sparrow" else eagle
    sd = dict(draft.state_dict)
    if kind == "eagle":  # EAGLE-2 sometimes ships an lm_head; it is the target's, so dropped
        sd["lm_head.weight"] = torch.randn(V, H)
    src = draft.save(tmp_path / "hf", "bin" if kind == "sparrow" else "safetensors", sd)
    dst = tmp_path / "ours"
    assert convert(src, llava[2], dst, "--window", "16", "--pinned", "4") == 0
    dropped = {"sparrow": "embed_tokens.weight", "eagle": "lm_head.weight"}[kind]
    assert f"note: dropped {dropped}" in capsys.readouterr().err

    cfg = load_config(dst / "config.json")
    assert isinstance(cfg, DraftConfig)
    assert (cfg.window, cfg.pinned, cfg.embed_norm) == (16, 4, kind == "sparrow")
    assert cfg.target_layers == 3  # the target it was converted for (the CLI checks it)
    assert (cfg.layers.num_layers, cfg.layers.qkv_bias) == (1 if kind == "sparrow" else 2, kind == "sparrow")
    assert cfg.layers.rope.theta == draft.hf["rope_theta"] and cfg.layers.rms_norm_eps == draft.hf["rms_norm_eps"]

    diff = forward_diff(draft, checkpoint.load(dst), target_embed(llava))
    print(f"{kind} draft: ours vs transformers layers max abs diff {diff:.2e}")
    assert diff < TOL

    # Export writes the released layout minus the target's tensors; converting it again is lossless.
    exported = tmp_path / "exported"
    assert main(["export", "--src", str(dst), "--dst", str(exported)]) == 0
    back = exported_tensors(exported)
    want = {k: v for k, v in sd.items() if k not in ("embed_tokens.weight", "lm_head.weight")}
    assert set(back) == set(want)
    for k, v in want.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    hf = json.loads((exported / "config.json").read_text())
    assert hf["architectures"] == ["LlamaForCausalLM"]
    assert hf["model_type"] == ("qwen2" if kind == "sparrow" else "llama")
    assert convert(exported, llava[2], tmp_path / "again", "--window", "16", "--pinned", "4") == 0
    assert load_config(tmp_path / "again" / "config.json") == cfg


def test_bfloat16_from_bfloat16_release(llava, sparrow, tmp_path):
    """Releases are bf16: a bf16 copy of the target's fp32 embedding still counts as the target's."""
    sd = {k: v.bfloat16() for k, v in sparrow.state_dict.items()}
    src = sparrow.save(tmp_path / "hf", "bin", sd)
    assert convert(src, llava[2], tmp_path / "ours", "--dtype", "bfloat16") == 0
    _, params, dtype = checkpoint.load_params(tmp_path / "ours")
    assert dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(params["fc"]["kernel"]).T, sd["fc.weight"].float().numpy())


# ---------------------------------------------------------------- errors


def cli_error(capsys, src, target, dst, *extra):
    assert convert(src, target, dst, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (Path(dst) / "params").exists()
    return err


def test_hidden_size_mismatch(llava, tmp_path, capsys):
    src = TorchDraft("eagle", 1, hidden=32).save(tmp_path / "hf", "safetensors")
    err = cli_error(capsys, src, llava[2], tmp_path / "out")
    assert "draft built for another target: draft hidden_size 32 != target hidden_size 64" in err


def test_vocab_size_mismatch(llava, tmp_path, capsys):
    src = TorchDraft("eagle", 1, vocab=100).save(tmp_path / "hf", "safetensors")
    err = cli_error(capsys, src, llava[2], tmp_path / "out")
    assert "draft built for another target: draft vocab_size 100 != target vocab_size 128" in err


def test_embed_tokens_of_another_target(llava, sparrow, tmp_path, capsys):
    sd = dict(sparrow.state_dict, **{"embed_tokens.weight": sparrow.state_dict["embed_tokens.weight"] + 0.01})
    src = sparrow.save(tmp_path / "hf", "bin", sd)
    err = cli_error(capsys, src, llava[2], tmp_path / "out")
    assert "embed_tokens differs from the target's: this draft was trained for another target" in err
    with pytest.raises(ConversionError, match="embed_tokens differs"):
        convert_draft(src, llava[2], tmp_path / "out2")


@pytest.mark.parametrize("key", ["layers.0.mlp.up_proj.weight", "fc.bias", "layers.0.self_attn.k_proj.bias"])
def test_missing_key(llava, sparrow, tmp_path, capsys, key):
    sd = {k: v for k, v in sparrow.state_dict.items() if k != key}
    src = sparrow.save(tmp_path / "hf", "bin", sd)
    err = cli_error(capsys, src, llava[2], tmp_path / "out")
    assert f"missing key {key!r}" in err


@pytest.mark.parametrize("key", ["layers.0.input_layernorm.weight", "norm.weight"])
def test_unexpected_key(llava, eagle, tmp_path, capsys, key):
    """Layer 0 has no input norm, and Sparrow / EAGLE-1/2 drafts have no final norm (EAGLE-3 does)."""
    sd = dict(eagle.state_dict, **{key: torch.ones(H)})
    src = eagle.save(tmp_path / "hf", "safetensors", sd)
    err = cli_error(capsys, src, llava[2], tmp_path / "out")
    assert "1 unexpected key(s)" in err and repr(key) in err


def test_bad_target_and_options(llava, eagle, tmp_path, capsys):
    src = eagle.save(tmp_path / "hf", "safetensors")
    assert "--target must be a converted target" in cli_error(capsys, src, tmp_path / "nothing", tmp_path / "out")
    assert "window must be >= 1" in cli_error(capsys, src, llava[2], tmp_path / "out", "--window", "0")
    assert convert(src, llava[2], tmp_path / "draft") == 0
    capsys.readouterr()
    assert "is a converted draft" in cli_error(capsys, src, tmp_path / "draft", tmp_path / "out")
    # Swapped directories: the HF target as --src, the HF draft as --target.
    assert (f"--src {llava[1]} holds a llava_onevision target model, not a draft"
            in cli_error(capsys, llava[1], llava[2], tmp_path / "out"))
    assert (f"--target {src} must be a converted target: {src}/config.json is a Hugging Face config.json"
            in cli_error(capsys, src, src, tmp_path / "out"))
    assert convert(src, llava[2], tmp_path / "draft") == 2  # --dst already holds a checkpoint
    assert "already exists" in capsys.readouterr().err
    assert convert(src, llava[2], tmp_path / "draft", "--overwrite") == 0


def test_reduced_vocabulary_draft_exports_as_eagle3_and_back(llava, tmp_path):
    """A draft over a reduced vocabulary exports its own head as EAGLE-3 does (`lm_head.weight` [K, H], `d2t`
    offsets, `t2d` mask, `draft_vocab_size`) and converts back to the same vocabulary and weights."""
    from flax import nnx
    from helpers import make_draft, save_draft

    vocab = (90, 3, 17, 64, 5, 127)
    draft = make_draft(llava[3], vocab=vocab)
    ours = save_draft(tmp_path / "ours", draft)
    loaded = checkpoint.load_draft(ours, load_config(ours / "config.json"))
    assert loaded.config.vocab == vocab
    np.testing.assert_array_equal(loaded.head.kernel[...], draft.head.kernel[...])
    assert main(["export", "--src", str(ours), "--dst", str(tmp_path / "hf")]) == 0
    back = exported_tensors(tmp_path / "hf")
    np.testing.assert_array_equal(back["lm_head.weight"], np.asarray(draft.head.kernel[...]).T)
    np.testing.assert_array_equal(back["d2t"], np.asarray(vocab) - np.arange(len(vocab)))
    assert back["t2d"].sum() == len(vocab) and back["t2d"][list(vocab)].all()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["draft_vocab_size"] == len(vocab)
    assert convert(tmp_path / "hf", llava[2], tmp_path / "again") == 0
    again = checkpoint.load(tmp_path / "again")
    assert again.config.vocab == vocab
    mine, theirs = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in (draft, again))
    for (path, a), (_, b) in zip(*(jax_leaves(t) for t in (mine, theirs))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), err_msg=path, atol=0)


def jax_leaves(tree):
    import jax

    return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]
