"""Float32 parity with HF LlavaOnevisionForConditionalGeneration, per component and end to end."""

import jax.numpy as jnp
import numpy as np
import torch
from helpers import random_video, video_prompt

TOL = 1e-4


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_vision_tower(llava):
    hf, _, _, ours = llava
    pix_t, pix = random_video(np.random.default_rng(1), 1, 3)
    ref = hf.model.vision_tower(pix_t[0], output_hidden_states=True).hidden_states
    for n in range(len(ref)):
        diff = maxdiff(ours.vision_tower(jnp.asarray(pix[0]), n), ref[n])
        print(f"SigLIP tower after {n} layers max abs diff: {diff:.2e}")
        assert diff < TOL, f"after {n} layers"


def test_video_features_projector_pooling_newline(llava):
    hf, _, _, ours = llava
    pix_t, pix = random_video(np.random.default_rng(2), 2, 3)
    ref = hf.model.get_video_features(pix_t, return_dict=True).pooler_output
    got = ours.video_features(jnp.asarray(pix))
    assert got.shape == tuple(ref.shape) == (2, 3 * 3 * 3 + 1, 64)
    print(f"video features (projector, pooling, newline) max abs diff: {maxdiff(got, ref):.2e}")
    assert maxdiff(got, ref) < TOL


def test_one_decoder_layer(llava):
    hf, _, _, ours = llava
    from sparrow_jax import kv_cache, layers

    x = np.random.default_rng(3).standard_normal((2, 7, 64)).astype(np.float32)
    pos = torch.arange(7)[None].expand(2, 7)
    lm = hf.model.language_model
    cos, sin = lm.rotary_emb(torch.from_numpy(x), pos)
    mask = torch.full((7, 7), float("-inf")).triu(1)[None, None].expand(2, 1, 7, 7)
    ref = lm.layers[1](torch.from_numpy(x), attention_mask=mask, position_embeddings=(cos, sin), position_ids=pos)
    ref = ref[0] if isinstance(ref, tuple) else ref
    ocos, osin = ours.lm.cos_sin(jnp.asarray(pos.numpy()))
    out, _ = layers.scan_layers(
        ours.lm.layers, lambda layer, h, _: (layer(h, ocos, osin, kv_cache.causal_mask(2, 7))[0], None),
        jnp.asarray(x), None, 1, 2,
    )
    print(f"one Qwen2 decoder layer max abs diff: {maxdiff(out, ref):.2e}")
    assert maxdiff(out, ref) < TOL


def test_whole_model_with_video(llava):
    hf, _, _, ours = llava
    rng = np.random.default_rng(4)
    ids = np.stack([video_prompt(rng, 3, 5, 6), video_prompt(rng, 3, 5, 6)])
    pix_t, pix = random_video(rng, 2, 3)
    ref = hf(input_ids=torch.from_numpy(ids), pixel_values_videos=pix_t).logits
    got = ours(jnp.asarray(ids), jnp.asarray(pix))
    diff = maxdiff(got, ref)
    print(f"LLaVA-OneVision end-to-end max abs logit diff: {diff:.2e}")
    assert diff < TOL
    # The video matters: other pixels give other logits after the video span.
    other = ours(jnp.asarray(ids), jnp.asarray(pix[::-1]))
    assert maxdiff(other, got) > 1e-2
