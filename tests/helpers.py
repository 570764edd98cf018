"""Helpers the tests share (the fixtures that use them are in `conftest.py`): tiny random HF configs and
inputs, conversion through the CLI, a tiny draft, synthetic clips. Test modules import from here, never
from each other."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch

from sparrow_jax.config import DraftConfig, TextConfig
from sparrow_jax.models import build_model
from sparrow_jax.video import write_video

# XLA's CPU fusion emitters and LLVM's optimisation off for the tests (conftest.py sets them for the run; why:
# there): the suite is compile-bound, and both compile faster at the same run time.
XLA_TEST_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"


def subprocess_env(xla_flags: str = "", **extra) -> dict:
    """The environment for a test's subprocess: this one's, on the CPU, with the tests' XLA flags plus
    `xla_flags` (e.g. a virtual device count) and not whatever XLA_FLAGS the caller's shell had."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"{XLA_TEST_FLAGS} {xla_flags}".strip(), **extra)
    return env

VIDEO_TOKEN, IMAGE_TOKEN = 120, 121

TINY_MODEL = {  # the demo target config's architecture, shrunk (train.target.random_init)
    "model_type": "llava_onevision", "video_token_id": 3, "image_token_id": 4,
    "text": {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2, "num_heads": 4,
             "num_kv_heads": 2, "head_dim": 16, "model_type": "qwen2", "tie_word_embeddings": True},
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "image_size": 28,
               "patch_size": 7},
}


# A table target (tests of verification): the logits after a node are a fixed random function of the node's
# token path (root first), as a real target's are, so two copies of one token under one parent see the same
# distribution.
def table_logits(path, vocab):
    """The table target's logits after the token path `path` (root first)."""
    return _table(tuple(map(int, path)), vocab).copy()


@functools.cache
def _table(path, vocab):
    return 1.5 * np.random.default_rng([vocab, *path]).standard_normal(vocab)


def table_probs(path, vocab, temperature):
    e = np.exp(table_logits(path, vocab) / temperature)
    return e / e.sum()


def ranked(path, vocab):
    """Tokens from the most to the least likely after `path`."""
    return [int(t) for t in np.argsort(-table_logits(path, vocab))]


def argmax_after(path, vocab):
    return int(np.argmax(table_logits(path, vocab)))


def paths_of(parents, tokens):
    """Token path (root first) of every node of a tree given as parent and token lists."""
    paths = []
    for i, (p, t) in enumerate(zip(parents, tokens)):
        paths.append((t,) if i == 0 else paths[p] + (t,))
    return paths


CHI2_DF26_P001 = 54.05  # scipy.stats.chi2.ppf(0.999, 26)
CHI2_DF80_P001 = 124.84  # scipy.stats.chi2.ppf(0.999, 80)


def sampled_chi_square(tree, logits, max_depth, vocab, draws, temperature, seed=0, length=3):
    """`verify.sample_tree` over `draws` independent copies of the one-row `tree` (logits [1, N, V] of the
    table target after each node) at `temperature`: the chi-square statistic of the first `length` generated
    tokens (the cycle's output, continued by sampling the table target where it stopped earlier) against
    their exact distribution (vocab**length cells), and the accepted depths n [draws]."""
    from sparrow_jax.sampling import row_keys

    tokens, root = np.asarray(tree.tokens[0]), int(tree.tokens[0, 0])
    keys = row_keys(seed, draws)  # an argument: computed inside, XLA would fold 12000 keys at compile time
    n, path, bonus = jax.device_get(_sample_copies(tree, logits, keys, max_depth, temperature))
    rng, counts = np.random.default_rng(seed + 1), {}
    for r in range(draws):  # emitted tokens, continued by the target to `length`
        s = [int(tokens[i]) for i in path[r, : n[r] + 1]] + [int(bonus[r])]
        while len(s) < length + 1:
            s.append(int(rng.choice(vocab, p=table_probs(s, vocab, temperature))))
        counts[tuple(s[1 : length + 1])] = counts.get(tuple(s[1 : length + 1]), 0) + 1
    stat = 0.0
    for s in np.ndindex(*[vocab] * length):
        expected = draws * np.prod([table_probs((root, *s[:k]), vocab, temperature)[s[k]] for k in range(length)])
        assert expected > 5  # chi-square needs every cell well filled
        stat += (counts.get(s, 0) - expected) ** 2 / expected
    return stat, n


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sample_copies(tree, logits, keys, max_depth, temperature):
    """`verify.sample_tree` over one copy of a one-row tree per key, in one compiled program."""
    from sparrow_jax.generation.speculative import verify
    from sparrow_jax.sampling import Sampler, SamplingConfig

    many, logits = jax.tree.map(lambda x: jnp.repeat(x, keys.shape[0], axis=0), (tree, logits))
    return verify.sample_tree(many, logits, Sampler.of(SamplingConfig(temperature)), keys, max_depth)


def llava_hf_config(**text_overrides):
    from transformers import LlavaOnevisionConfig

    text = dict(
        model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1, rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    text.update(text_overrides)
    vision = dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, image_size=35, patch_size=7, vision_use_head=False,
    )
    return LlavaOnevisionConfig(
        text_config=text, vision_config=vision, video_token_index=VIDEO_TOKEN, image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-1, vision_feature_select_strategy="full", initializer_range=0.1,
    )


def save_hf(model, path):
    model.save_pretrained(path)
    return path


def convert_dir(src, dst, dtype="float32"):
    from convert.__main__ import main

    assert main(["target", "--src", str(src), "--dst", str(dst), "--dtype", dtype]) == 0
    return dst


def random_video(rng, batch, frames, size=35):
    """Model-ready video pixels: HF layout [B,T,C,S,S] (torch) and ours [B,T,S,S,C] (numpy)."""
    ours = rng.standard_normal((batch, frames, size, size, 3)).astype(np.float32)
    return torch.from_numpy(ours.transpose(0, 1, 4, 2, 3).copy()), ours


def video_prompt(rng, frames, text_before, text_after, pooled=3):
    """LLaVA-OneVision prompt ids (for `llava_hf_config`): random text, the video's placeholders
    (frames x pooled^2 + newline), random text."""
    n_video = frames * pooled * pooled + 1
    ids = np.concatenate([
        rng.integers(0, 100, text_before), np.full(n_video, VIDEO_TOKEN), rng.integers(0, 100, text_after)
    ])
    return ids.astype(np.int64)


def save_draft(directory, draft, **config):
    """Save a draft model as a converted draft checkpoint, with `config` fields replaced."""
    import dataclasses

    from flax import nnx

    from sparrow_jax import checkpoint

    cfg = dataclasses.replace(draft.config, **config)
    checkpoint.save(directory, cfg, nnx.to_pure_dict(nnx.state(draft, nnx.Param)), "float32")
    return directory


def make_draft(target, window=1024, pinned=0, seed=0, vocab=None):
    """A tiny random Sparrow draft for `target` (one layer); `vocab`: the token ids it scores (its own head)."""
    from flax import nnx

    lm = target.lm.config
    layers = TextConfig(vocab_size=lm.vocab_size, hidden_size=lm.hidden_size, intermediate_size=96, num_layers=1,
                        num_heads=4, num_kv_heads=2, head_dim=16)
    return build_model(DraftConfig(layers, window=window, pinned=pinned, vocab=vocab), rngs=nnx.Rngs(seed))


CLIP_FRAMES, CLIP_H, CLIP_W, CLIP_RATE = 12, 48, 64, 6  # 2 seconds


def clip_frame(i):
    """Frame i: red level 20 * i everywhere, the left half green: contents that survive lossy codecs."""
    img = np.zeros((CLIP_H, CLIP_W, 3), np.uint8)
    img[..., 0] = 20 * i
    img[:, : CLIP_W // 2, 1] = 200
    return img


def write_clip(path, codec, n=CLIP_FRAMES):
    write_video(path, np.stack([clip_frame(i) for i in range(n)]), CLIP_RATE, codec)
    return path
