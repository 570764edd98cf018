"""The decoder with M-RoPE (Qwen2.5-VL text model) against HF Qwen2_5_VLTextModel, 3-D positions."""

import jax.numpy as jnp
import numpy as np
import torch

from convert.keymap import KeyMap, import_params
from sparrow_jax import checkpoint
from sparrow_jax.config import TextConfig
from sparrow_jax.models import build_model


class DictSource(dict):
    def get(self, key):  # noqa: D401 - the TensorSource interface
        return self[key]


def test_mrope_decoder_matches_hf_text_model():
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    hf_cfg = Qwen2_5_VLConfig(text_config=dict(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.1, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )).text_config
    torch.manual_seed(0)
    hf = Qwen2_5_VLTextModel(hf_cfg).eval()
    cfg = TextConfig.from_hf(hf_cfg.to_dict())
    assert cfg.mrope_section == (2, 3, 3) and cfg.qkv_bias

    ours = build_model(cfg)
    source = DictSource({k: v.numpy() for k, v in hf.state_dict().items()})
    params = import_params(source, checkpoint.param_shapes(ours), KeyMap(((("layers",), "layers.{i}"), ((), ""))), "float32")
    checkpoint.assign(ours, params)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 96, (2, 12))
    # t/h/w differ inside a "vision block" (tokens 3..8), equal on text: as the host rule produces.
    pos = np.broadcast_to(np.arange(12), (3, 2, 12)).copy()
    pos[0, :, 3:9] = 3 + np.array([0, 0, 0, 2, 2, 2])
    pos[1, :, 3:9] = 3 + np.array([0, 1, 2, 0, 1, 2])
    pos[2, :, 3:9] = 3 + np.array([0, 0, 1, 1, 0, 1])
    pos[:, 1] += 5
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos)).last_hidden_state.numpy()
    got = np.asarray(ours.decode(ours.embed(jnp.asarray(ids)), jnp.asarray(pos)).hidden)
    diff = np.abs(got - ref).max()
    print(f"M-RoPE decoder max abs diff: {diff:.2e}")
    assert diff < 1e-4
    # 2-D positions mean text: all three axes equal.
    text = np.broadcast_to(np.arange(12), (2, 12))
    np.testing.assert_allclose(
        np.asarray(ours.decode(ours.embed(jnp.asarray(ids)), jnp.asarray(text)).hidden),
        np.asarray(ours.decode(ours.embed(jnp.asarray(ids)), jnp.asarray(np.broadcast_to(text, (3, 2, 12)))).hidden),
    )
