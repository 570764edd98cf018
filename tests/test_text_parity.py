"""Float32 parity with HF Qwen2ForCausalLM / LlamaForCausalLM for text-only targets converted by the CLI."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import convert_dir

TOL = 1e-4
VOCAB = 96


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def qwen2_gqa():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.1, tie_word_embeddings=False,
    )


def qwen2_tied():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, initializer_range=0.1, tie_word_embeddings=True, rms_norm_eps=1e-5,
    )


def llama_bias_head_dim():
    from transformers import LlamaConfig

    # head_dim 24 != hidden 48 / heads 4 = 12: q/k/v project to 96, o_proj maps 96 -> 48.
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, attention_bias=True, mlp_bias=True, initializer_range=0.1,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    )


def llama3_rope():
    from transformers import LlamaConfig

    # head_dim 16, theta 5e5, original context 64: wavelengths 2*pi*5e5**(i/16) = 6.3 (< 64/4: kept),
    # 32 (between: smoothed), 167, 863, ... (> 64: divided by 8), so all three llama3 branches are used.
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.1, max_position_embeddings=512, tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64,
        },
    )


CASES = {
    "qwen2_gqa": (qwen2_gqa, 12),
    "qwen2_tied": (qwen2_tied, 12),
    "llama_bias_head_dim": (llama_bias_head_dim, 12),
    "llama3_rope": (llama3_rope, 90),  # longer than original_max_position_embeddings
}


def randomize_(model, seed):
    """HF initialises biases to 0 and norm scales to 1, which would hide a wrong mapping of either."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(hf_model, our_model, seq_len) for one tiny text config, saved with save_pretrained and converted."""
    from transformers import AutoModelForCausalLM

    from sparrow_jax import checkpoint

    make, seq_len = CASES[request.param]
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(make()).eval()
    randomize_(hf, 1)
    root = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(root / "hf")
    ours = checkpoint.load(convert_dir(root / "hf", root / "ours"))
    assert ours.config.model_type == hf.config.model_type
    assert ours.config.tie_word_embeddings == hf.config.tie_word_embeddings
    return request.param, hf, ours, seq_len


def random_ids(seed, seq_len, batch=2):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, seq_len)).astype(np.int64)


def test_logits(case):
    name, hf, ours, n = case
    ids = random_ids(0, n)
    ref = hf(input_ids=torch.from_numpy(ids)).logits
    got = ours(jnp.asarray(ids))
    assert got.shape == tuple(ref.shape) == (2, n, VOCAB)
    diff = maxdiff(got, ref)
    print(f"{name}: max abs logit diff {diff:.2e}")
    assert diff < TOL


def test_logits_offset_positions(case):
    name, hf, ours, n = case
    ids = random_ids(1, n)
    # Row 0 starts at 100; row 1 starts at 100 with stride 2, so its relative distances reach 2n (> the
    # llama3 original context of 64) and differ from the default positions (a constant shift would not:
    # RoPE scores depend only on position differences).
    pos = np.stack([100 + np.arange(n), 100 + 2 * np.arange(n)])
    ref = hf(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos)).logits
    got = ours(jnp.asarray(ids), positions=jnp.asarray(pos))
    diff = maxdiff(got, ref)
    print(f"{name}: max abs logit diff at positions 100+ {diff:.2e}")
    assert diff < TOL
    assert maxdiff(got[1], ours(jnp.asarray(ids))[1]) > 1e-3  # positions are used, not ignored


def test_llama3_scaling_matters():
    """The llama3 case's frequencies differ from the unscaled ones, so it would catch ignoring rope_type."""
    import dataclasses

    from sparrow_jax import rope
    from sparrow_jax.config import TextConfig

    cfg = TextConfig.from_hf(llama3_rope().to_dict())
    assert cfg.rope.type == "llama3" and cfg.rope.original_max_position_embeddings == 64
    plain = rope.inv_freq(dataclasses.replace(cfg.rope, type="default"), cfg.head_dim)
    scaled = rope.inv_freq(cfg.rope, cfg.head_dim)
    assert scaled[0] == plain[0]  # high frequency: kept
    assert np.allclose(scaled[-1], plain[-1] / 8)  # low frequency: divided by factor
    assert ((scaled != plain) & ~np.isclose(scaled, plain / 8)).any()  # smoothed band in between


def test_hidden_state_capture(case):
    name, hf, ours, n = case
    ids = random_ids(2, n)
    num_layers = ours.config.num_layers
    last_layer_out = {}
    hook = hf.model.layers[-1].register_forward_hook(
        lambda mod, args, out: last_layer_out.setdefault("x", out[0] if isinstance(out, tuple) else out)
    )
    try:
        ref = hf(input_ids=torch.from_numpy(ids), output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    assert len(ref) == num_layers + 1
    positions = jnp.broadcast_to(jnp.arange(n), ids.shape)
    out = ours.decode(ours.embed(jnp.asarray(ids)), positions, capture=(0, 1, num_layers))
    assert sorted(out.captured) == [0, 1, num_layers]
    # captured[k] for k < L is the output of the first k decoder layers (k=0: the embeddings) = HF hidden_states[k].
    for k in (0, 1):
        assert maxdiff(out.captured[k], ref[k]) < TOL, f"captured[{k}]"
    # HF's last hidden_states entry is taken AFTER the final norm; ours is `.hidden` (the lm_head input).
    assert maxdiff(out.hidden, ref[-1]) < TOL
    # captured[L] is the raw output of the last decoder layer, BEFORE the final norm (unlike HF hidden_states[L]).
    assert maxdiff(out.captured[num_layers], last_layer_out["x"]) < TOL
    assert maxdiff(ours.norm(out.captured[num_layers]), out.hidden) < TOL
    assert maxdiff(out.captured[num_layers], ref[-1]) > 1e-2
