"""Run by tests/test_sharded_generate.py in a subprocess with 8 virtual CPU devices (set before jax loads):
tiny LLaVA-OneVision and Qwen2.5-VL targets with tiny drafts generate on one device and on meshes, and the
tokens must be equal; prints one JSON line of what it found (shardings, token lists) for the test to check."""

import os

# 8 CPU devices; LLVM's optimisation off halves every compile here (both runs, one device and the mesh,
# are built with the same flags, so the comparison is like for like).
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"

import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from helpers import TINY_MODEL
import sparrow_jax
from sparrow_jax import checkpoint, sharding
from sparrow_jax.config import CONFIGS, DraftConfig, Qwen25VisionConfig, Qwen25VLConfig, TextConfig, _from_tree
from sparrow_jax.generation import Engine, TreeShape
from sparrow_jax.generation.decoding import run_prefill
from sparrow_jax.models import abstract_model
from sparrow_jax.processing import video_prompt

jax.config.update("jax_default_matmul_precision", "highest")


def random_model(config, seed, std=0.2):
    """A model of `config` with random weights drawn on the host (no per-shape random-init compiles):
    norm scales around 1, everything else around 0 with `std` (peaked enough that tokens vary)."""
    model = abstract_model(config)
    rng = np.random.default_rng(seed)

    def draw(path, a):
        x = rng.standard_normal(a.shape).astype(np.float32) * std
        return x + 1 if path[-1].key == "scale" else x

    params = jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return checkpoint.assign(model, params)


def llava():
    return random_model(_from_tree(CONFIGS[TINY_MODEL["model_type"]], TINY_MODEL), 1)


def qwen():
    text = TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                      num_kv_heads=2, head_dim=16, mrope_section=(2, 3, 3))
    vision = Qwen25VisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                fullatt_block_indexes=(0,))
    return random_model(Qwen25VLConfig(text, vision, 120, 121, 118, 119), 2)


def prompts(config, rows, seed):
    rng = np.random.default_rng(seed)
    ids, videos = [], []
    for b in range(rows):
        frames = rng.integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
        text = [int(t) for t in rng.integers(5, 100, 6 + 3 * b)]
        video = [config.video_token_id]
        if hasattr(config, "vision_start_token_id"):
            video = [config.vision_start_token_id, *video, config.vision_end_token_id]
        i, v = video_prompt(config, text[:3] + video + text[3:], frames)
        ids.append(i)
        videos.append(v)
    return ids, videos


def spec(x):
    return [list(a) if isinstance(a, tuple) else a for a in x.sharding.spec]


# (family, model, mesh, rows, cases): LLaVA-OneVision on tensor=8 (its 2 KV heads do not divide 8: the cache
# is replicated over heads), Qwen2.5-VL on data=4 x tensor=2 (KV heads and rows both split). Greedy and
# sampled, autoregressive and with a draft (a tree, a chain). Few programs (each compiles twice, for one
# device and the mesh); the speculative programs with a sampled tree compile slowest, so the tree is greedy.
CASES = (
    ("llava", llava, dict(tensor=8), 2, {"ar_greedy": dict(), "tree_greedy": dict(tree=TreeShape(2, 2, 4))}),
    ("qwen", qwen, dict(data=4, tensor=2), 4, {"chain_sampled": dict(tree=TreeShape.chain(3), temperature=0.8,
                                                                     seed=[3, 4, 5, 6])}),
)


def restored_specs(model, mesh) -> dict:
    """Save `model` as a converted checkpoint and load it with `mesh=`: each parameter's sharding as restored,
    and whether every restored value equals the saved one."""
    with tempfile.TemporaryDirectory() as tmp:
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        checkpoint.save(Path(tmp) / "ckpt", model.config, params, "float32")
        loaded = sparrow_jax.load(Path(tmp) / "ckpt", mesh=mesh)
    got = nnx.to_pure_dict(nnx.state(loaded, nnx.Param))
    same = all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), got, params)))
    return {"q_proj": spec(loaded.lm.layers.self_attn.q_proj.kernel[...]),
            "on_mesh": all(a.sharding.mesh == mesh for a in jax.tree.leaves(got)), "same": same}


def main():
    assert jax.device_count() == 8, jax.devices()
    out = {}
    for family, make, mesh_shape, rows, cases in CASES:
        target = make()
        lm = target.lm.config
        draft = random_model(DraftConfig(TextConfig(vocab_size=lm.vocab_size, hidden_size=lm.hidden_size,
                                                    intermediate_size=96, num_layers=1, num_heads=4, num_kv_heads=2,
                                                    head_dim=16), window=16), 3)
        ids, videos = prompts(target.config, rows, 0)
        mesh = sharding.make_mesh(**mesh_shape)
        out[f"{family}/restored"] = restored_specs(target, mesh)
        for name, kw in cases.items():
            kw = dict(kw)
            tree = kw.pop("tree", None)
            d = None if tree is None else draft
            t0 = time.perf_counter()
            one = Engine(target, d, tree=tree).generate(ids, videos, max_new_tokens=12, **kw)
            t1 = time.perf_counter()
            eng = Engine(target, d, tree=tree, mesh=mesh)
            many = eng.generate(ids, videos, max_new_tokens=12, **kw)
            print(f"{family} {name}: one device {t1 - t0:.1f} s, mesh {time.perf_counter() - t1:.1f} s",
                  file=sys.stderr)
            out[f"{family}/{name}"] = [one.token_ids(), many.token_ids()]
            if d is not None:  # the prefill just compiled, again: the cache it creates, on the mesh
                p, _ = run_prefill(eng.request(ids, videos, max_new_tokens=12, **kw))
                out[f"{family}/specs"] = {
                    "q_proj": spec(eng.target.lm.layers.self_attn.q_proj.kernel[...]),
                    "mlp_up": spec(eng.target.lm.layers.mlp.up_proj.kernel[...]),
                    "embed": spec(eng.target.lm.embed_tokens.embedding[...]),
                    "draft_mlp_up": spec(eng.draft.first.mlp.up_proj.kernel[...]),
                    "cache_k": spec(p.cache.k),
                    "hidden": spec(p.hidden),
                    "ids": spec(eng.request(ids, videos, max_new_tokens=12).prompt.ids),
                }
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
