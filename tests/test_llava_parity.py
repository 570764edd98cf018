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


def test_video_features_in_frame_chunks_equal_one_batch(llava):
    """Frames go through the tower in chunks (lax.map): 5 frames as 2 + 2 + a remainder of 1 give the
    features of all frames in one batch (to float32 rounding: matmuls of other sizes sum in another order)."""
    ours = llava[3]
    pix = jnp.asarray(random_video(np.random.default_rng(6), 1, 5)[1])
    whole = np.asarray(ours.video_features(pix, frame_chunk=5))
    diff = maxdiff(ours.video_features(pix, frame_chunk=2), whole)
    print(f"video features in chunks of 2 frames vs one batch max abs diff: {diff:.2e}")
    assert diff < 1e-5


def test_128_frames_at_real_size_compile_within_memory():
    """Shapes only: LLaVA-OneVision-7B's SigLIP (so400m, 384 px, 26 layers) and projector over 128 frames
    run 7 frames at a time in 0.85 GiB of temporary memory (all frames at once: 8.9 GiB)."""
    import jax
    from flax import nnx

    from sparrow_jax.config import LlavaOnevisionConfig, TextConfig
    from sparrow_jax.models.llava_onevision import LlavaOnevision
    from sparrow_jax.scale_configs import llava_onevision_7b

    text = TextConfig(vocab_size=128, hidden_size=3584, intermediate_size=128, num_layers=1, num_heads=28,
                      num_kv_heads=4, head_dim=128)  # only the projector's width matters here
    vision = llava_onevision_7b().vision
    cfg = LlavaOnevisionConfig(text=text, vision=vision, video_token_id=1, image_token_id=2)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: LlavaOnevision(cfg, rngs=nnx.Rngs(0))))
    features = jax.jit(lambda s, p: nnx.merge(graphdef, s).video_features(p))
    pixels = jax.ShapeDtypeStruct((1, 128, 384, 384, 3), jnp.float32)
    memory = features.lower(state, pixels).compile().memory_analysis()
    print(f"LLaVA-OneVision-7B video features, 128 frames, float32: temp {memory.temp_size_in_bytes / 2**30:.2f} GiB")
    assert memory.temp_size_in_bytes < 2 * 2**30


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
