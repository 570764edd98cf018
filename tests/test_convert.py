"""`python -m convert`: HF -> ours -> HF round trips, the real CLI, .bin sources, bad inputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
from helpers import convert_dir, random_video, video_prompt
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from convert.__main__ import main
from convert.keymap import ConversionError
from convert.target import convert_target
from sparrow_jax import atomic, checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
from tiny_tokenizer import write_tiny_tokenizer  # noqa: E402
VOCAB = 96
ROUND_TRIP_TOL = 1e-5


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def text_hf_config(kind):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1)
    if kind == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False)
    if kind == "qwen2_tied":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if kind == "llama":  # biases, explicit head_dim and llama3 RoPE: exercises every exported config field
        return LlamaConfig(
            **common, head_dim=24, attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
            rms_norm_eps=1e-5, max_position_embeddings=512,
            rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        )
    raise ValueError(kind)


def make_text_hf(kind, seed=0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(text_hf_config(kind)).eval()
    with torch.no_grad():  # zero biases / unit norms would hide a mis-mapped tensor
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """(hf_model, hf_dir, converted_dir) for a tiny untied Qwen2."""
    hf = make_text_hf("qwen2")
    root = tmp_path_factory.mktemp("qwen2")
    hf.save_pretrained(root / "hf")
    return hf, root / "hf", convert_dir(root / "hf", root / "ours")


def text_ids(seed=0, n=10):
    return np.random.default_rng(seed).integers(0, VOCAB, (2, n)).astype(np.int64)


def hf_logits(model, ids):
    return model(input_ids=torch.from_numpy(ids)).logits


def export_dir(src, dst):
    assert main(["export", "--src", str(src), "--dst", str(dst)]) == 0
    return dst


def safetensors_keys(directory):
    with safe_open(str(directory / "model.safetensors"), framework="numpy") as f:
        return set(f.keys())


def assert_clean_load(info):
    for field in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(field), f"{field}: {info.get(field)}"


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["qwen2", "qwen2_tied", "llama"])
def test_round_trip_text(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    hf = make_text_hf(kind)
    hf.save_pretrained(tmp_path / "hf")
    exported = export_dir(convert_dir(tmp_path / "hf", tmp_path / "ours"), tmp_path / "exported")

    # Exported keys are exactly the model's state_dict keys (a tied model stores no lm_head copy).
    expected = set(hf.state_dict()) - ({"lm_head.weight"} if hf.config.tie_word_embeddings else set())
    assert safetensors_keys(exported) == expected

    back, info = AutoModelForCausalLM.from_pretrained(exported, output_loading_info=True, dtype=torch.float32)
    assert_clean_load(info)
    assert type(back) is type(hf)
    for field in ("num_key_value_heads", "tie_word_embeddings", "rms_norm_eps", "max_position_embeddings"):
        assert getattr(back.config, field) == getattr(hf.config, field), field
    head_dim = lambda c: getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads  # noqa: E731
    assert head_dim(back.config) == head_dim(hf.config)
    if kind == "llama":
        assert back.config.rope_parameters == hf.config.rope_parameters
        assert (back.config.attention_bias, back.config.mlp_bias) == (True, True)
    ids = text_ids(0, 80 if kind == "llama" else 10)  # past llama3's original context of 64
    diff = maxdiff(hf_logits(back.eval(), ids), hf_logits(hf, ids))
    print(f"{kind} HF -> ours -> HF max abs logit diff: {diff:.2e}")
    assert diff < ROUND_TRIP_TOL


def test_round_trip_llava(llava, tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    hf, _, converted, _ = llava
    exported = export_dir(converted, tmp_path / "exported")
    assert safetensors_keys(exported) == set(hf.state_dict())  # current naming, not the legacy one on disk

    back, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        exported, output_loading_info=True, dtype=torch.float32
    )
    assert_clean_load(info)
    rng = np.random.default_rng(5)
    ids = np.stack([video_prompt(rng, 3, 4, 5), video_prompt(rng, 3, 4, 5)])
    pix_t, _ = random_video(rng, 2, 3)
    ref = hf(input_ids=torch.from_numpy(ids), pixel_values_videos=pix_t).logits
    got = back.eval()(input_ids=torch.from_numpy(ids), pixel_values_videos=pix_t).logits
    diff = maxdiff(got, ref)
    print(f"LLaVA-OneVision HF -> ours -> HF max abs logit diff: {diff:.2e}")
    assert diff < ROUND_TRIP_TOL


# ---------------------------------------------------------------- the real CLI, dtypes, .bin


def test_cli_subprocess_bfloat16(qwen2, tmp_path):
    _, src, f32_dir = qwen2
    dst = tmp_path / "bf16"
    proc = subprocess.run(
        [sys.executable, "-m", "convert", "target", "--src", str(src), "--dst", str(dst), "--dtype", "bfloat16"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (dst / "config.json").is_file() and (dst / "params").is_dir()
    assert json.loads((dst / "config.json").read_text())["dtype"] == "bfloat16"

    _, params, dtype = checkpoint.load_params(dst)
    assert dtype == "bfloat16"
    leaves = jax.tree.leaves(params)
    assert leaves and all(a.dtype == jnp.bfloat16 for a in leaves)
    # Same values as the float32 conversion, rounded to bf16.
    _, f32, _ = checkpoint.load_params(f32_dir)
    for a, b in zip(leaves, jax.tree.leaves(f32)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b.astype(jnp.bfloat16)))
    # Exporting it writes BF16 safetensors.
    exported = export_dir(dst, tmp_path / "exported")
    with safe_open(str(exported / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def test_cli_usage_errors():
    with pytest.raises(SystemExit) as e:
        main(["target", "--src", "x"])  # no --dst
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["target", "--src", "x", "--dst", "y", "--dtype", "float16"])


def test_bin_source(qwen2, tmp_path):
    hf, src, f32_dir = qwen2
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(src / "config.json", bin_dir / "config.json")
    torch.save(hf.state_dict(), bin_dir / "pytorch_model.bin")
    ours = checkpoint.load(convert_dir(bin_dir, tmp_path / "ours"))
    ids = text_ids(1)
    diff = maxdiff(ours(jnp.asarray(ids)), hf_logits(hf, ids))
    print(f".bin source: max abs logit diff vs HF {diff:.2e}")
    assert diff < 1e-4
    # Bit-identical to the safetensors conversion.
    for a, b in zip(jax.tree.leaves(checkpoint.load_params(tmp_path / "ours")[1]),
                    jax.tree.leaves(checkpoint.load_params(f32_dir)[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bin_source_bfloat16(qwen2, tmp_path):
    """bf16 torch tensors are read bit-exactly (numpy has no bf16; hf_files reinterprets the bits)."""
    hf, src, _ = qwen2
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(src / "config.json", bin_dir / "config.json")
    sd = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items()}
    torch.save(sd, bin_dir / "pytorch_model.bin")
    convert_dir(bin_dir, tmp_path / "ours", dtype="bfloat16")
    _, params, _ = checkpoint.load_params(tmp_path / "ours")
    embed = np.asarray(params["embed_tokens"]["embedding"])
    want = sd["model.embed_tokens.weight"].view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(embed, want)
    q = np.asarray(params["layers"]["self_attn"]["q_proj"]["kernel"][1])
    np.testing.assert_array_equal(q, sd["model.layers.1.self_attn.q_proj.weight"].float().numpy().T.astype(q.dtype))


# ---------------------------------------------------------------- bad inputs


def edited_copy(src, dst, edit):
    """Copy an HF directory, applying `edit` to its {key: array} tensors."""
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def cli_error(capsys, src, dst):
    assert main(["target", "--src", str(src), "--dst", str(dst)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert not (Path(dst) / "params").exists()
    return err


@pytest.mark.parametrize("key", ["model.layers.1.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"])
def test_missing_key(qwen2, tmp_path, capsys, key):
    _, src, _ = qwen2
    bad = edited_copy(src, tmp_path / "bad", lambda t: t.pop(key))
    err = cli_error(capsys, bad, tmp_path / "out")
    assert "missing key" in err and repr(key) in err
    with pytest.raises(ConversionError, match=f"missing key '{key}'"):
        convert_target(bad, tmp_path / "out2")


def test_extra_key(qwen2, tmp_path, capsys):
    _, src, _ = qwen2
    extra = "model.layers.0.self_attn.rotary_emb.inv_freq"

    def add(t):
        t[extra] = np.zeros(8, np.float32)

    bad = edited_copy(src, tmp_path / "bad", add)
    err = cli_error(capsys, bad, tmp_path / "out")
    assert "1 unexpected key(s)" in err and repr(extra) in err
    with pytest.raises(ConversionError, match="unexpected key.*rotary_emb.inv_freq"):
        convert_target(bad, tmp_path / "out2")


def test_wrong_shape(qwen2, tmp_path, capsys):
    _, src, _ = qwen2
    key = "model.layers.0.self_attn.k_proj.weight"  # HF [kv_heads*head_dim, hidden] = [32, 64]

    def reshape(t):
        t[key] = np.zeros((48, 64), np.float32)

    bad = edited_copy(src, tmp_path / "bad", reshape)
    err = cli_error(capsys, bad, tmp_path / "out")
    assert repr(key) in err and "(48, 64)" in err and "expected (32, 64)" in err
    with pytest.raises(ConversionError, match=r"k_proj.weight' has shape \(48, 64\), expected \(32, 64\)"):
        convert_target(bad, tmp_path / "out2")


def test_tied_checkpoint_may_store_lm_head(tmp_path):
    """A tied model ignores a stored lm_head copy (some releases keep one) instead of calling it unexpected."""
    hf = make_text_hf("qwen2_tied")
    hf.save_pretrained(tmp_path / "hf")
    assert "lm_head.weight" not in safetensors_keys(tmp_path / "hf")

    def add(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()

    src = edited_copy(tmp_path / "hf", tmp_path / "with_head", add)
    ours = checkpoint.load(convert_dir(src, tmp_path / "ours"))
    assert ours.lm_head is None
    ids = text_ids(2)
    assert maxdiff(ours(jnp.asarray(ids)), hf_logits(hf, ids)) < 1e-4


def test_unsupported_model_type(qwen2, tmp_path, capsys):
    _, src, _ = qwen2
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "mistral"
    (bad / "config.json").write_text(json.dumps(cfg))
    err = cli_error(capsys, bad, tmp_path / "out")
    assert "'mistral'" in err and "not supported" in err


def test_src_without_config(qwen2, tmp_path, capsys):
    _, src, _ = qwen2
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "config.json").unlink()
    err = cli_error(capsys, bad, tmp_path / "out")
    assert "config.json" in err and "not found" in err
    err = cli_error(capsys, tmp_path / "does_not_exist", tmp_path / "out")
    assert "config.json" in err


def test_src_without_weights(qwen2, tmp_path, capsys):
    _, src, _ = qwen2
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(src / "config.json", bad / "config.json")
    err = cli_error(capsys, bad, tmp_path / "out")
    assert "no checkpoint weights" in err and "model.safetensors" in err


def test_dst_already_a_checkpoint(qwen2, tmp_path, capsys):
    _, src, _ = qwen2
    dst = convert_dir(src, tmp_path / "ours")
    before = (dst / "config.json").read_text()
    assert main(["target", "--src", str(src), "--dst", str(dst), "--dtype", "bfloat16"]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and str(dst) in err and "--overwrite" in err
    assert (dst / "config.json").read_text() == before  # untouched
    assert checkpoint.load_params(dst)[2] == "float32"

    # --overwrite replaces it; a failing conversion with --overwrite leaves the old one intact.
    bad = edited_copy(src, tmp_path / "bad", lambda t: t.pop("model.norm.weight"))
    assert main(["target", "--src", str(bad), "--dst", str(dst), "--overwrite"]) == 1
    assert "model.norm.weight" in capsys.readouterr().err
    assert checkpoint.load_params(dst)[2] == "float32"
    assert main(["target", "--src", str(src), "--dst", str(dst), "--dtype", "bfloat16", "--overwrite"]) == 0
    _, params, dtype = checkpoint.load_params(dst)
    assert dtype == "bfloat16" and all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(params))


def test_replacing_needs_overwrite_and_a_checkpoint_to_replace(qwen2, tmp_path, capsys):
    _, src, ours = qwen2
    back = export_dir(ours, tmp_path / "back")
    assert main(["export", "--src", str(ours), "--dst", str(back)]) == 1  # export, like convert: --overwrite
    assert "already exists" in capsys.readouterr().err
    (back / "model.safetensors").write_bytes(b"stale")
    assert main(["export", "--src", str(ours), "--dst", str(back), "--overwrite"]) == 0
    assert safetensors_keys(back) == safetensors_keys(src)
    # A non-empty directory that is no checkpoint is never replaced, --overwrite or not; nor an input.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main(["target", "--src", str(src), "--dst", str(tmp_path / "notes"), "--overwrite"]) == 1
    assert "not a checkpoint: refusing to replace it" in capsys.readouterr().err
    assert os.listdir(tmp_path / "notes") == ["todo.txt"]
    assert main(["target", "--src", str(src), "--dst", str(src), "--overwrite"]) == 1
    assert "is --src" in capsys.readouterr().err and (src / "model.safetensors").is_file()


def _siblings(dst):
    return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name + "."))


def test_killed_overwrite_leaves_old_or_new_checkpoint(qwen2, tmp_path):
    """`kill -9` of `convert target --overwrite` at three moments of its save (SPARROW_JAX_TEST_PAUSE stops it
    there): new params written, the new directory complete, the new one swapped in. Each time the destination
    loads whole, the old float32 one without tokenizer before the swap, the new bfloat16 one with it after."""
    _, hf, _ = qwen2
    src = write_tiny_tokenizer(shutil.copytree(hf, tmp_path / "hf"))
    moments = {"params": "float32", "written": "float32", "swapped": "bfloat16"}
    procs = {}
    for moment in moments:  # started together: the imports dominate, and they overlap
        dst = convert_dir(hf, tmp_path / moment)
        procs[moment] = subprocess.Popen(
            [sys.executable, "-m", "convert", "target", "--src", src, "--dst", dst, "--dtype", "bfloat16", "--overwrite"],
            cwd=REPO, env=dict(os.environ, **{atomic.PAUSE_ENV: moment}), stderr=subprocess.PIPE, text=True)
    for moment, proc in procs.items():
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if f"paused at {moment}" in line:
                proc.kill()
                break
        assert proc.wait(timeout=60) == -9, "".join(lines)[-3000:]
        dst = tmp_path / moment
        # Left beside it: the new directory (its config.json written after the params), or after the swap the old.
        assert _siblings(dst) == [f"{moment}.tmp-{proc.pid}"]
        assert (tmp_path / f"{moment}.tmp-{proc.pid}" / "config.json").is_file() == (moment != "params")
        _, params, dtype = checkpoint.load_params(dst)
        assert dtype == moments[moment] and {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(dtype)}
        assert (dst / "tokenizer" / "tokenizer.json").is_file() == (dtype == "bfloat16"), moment
    # The next conversion removes the leftovers and replaces the old checkpoint.
    assert main(["target", "--src", str(src), "--dst", str(tmp_path / "params"), "--overwrite"]) == 0
    assert _siblings(tmp_path / "params") == [] and (tmp_path / "params" / "tokenizer" / "tokenizer.json").is_file()


def test_export_of_non_checkpoint(tmp_path, capsys):
    assert main(["export", "--src", str(tmp_path), "--dst", str(tmp_path / "x")]) == 1
    assert "is not a converted checkpoint" in capsys.readouterr().err
