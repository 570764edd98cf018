"""python -m infer.bench engine: our engine against HF transformers on the same weights, the oracle
speculative ceiling, and the draft's proposal cost against visual tokens (see `infer.bench`)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile

import numpy as np

from sparrow_jax.timing import median_time


def random_target(layers: int, hidden: int):
    """(the HF Qwen2 model, ours) of one random-weight target of `layers` x `hidden` (vocabulary 4096, 4
    heads, 2 KV heads), converted by the project's own command line (the apps stand on the library, not on
    each other), so both engines run the same weights."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import sparrow_jax

    hf_cfg = Qwen2Config(vocab_size=4096, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=65536)
    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(hf_cfg).eval()
    root = tempfile.mkdtemp()
    hf.save_pretrained(f"{root}/hf")
    subprocess.run([sys.executable, "-m", "convert", "target", "--src", f"{root}/hf", "--dst", f"{root}/ours"],
                   check=True, stdout=subprocess.DEVNULL)
    return hf, sparrow_jax.load(f"{root}/ours")


def hf_step_s(hf, ids, n: int, repeats: int) -> float:
    """Seconds per token of HF `generate` after the first (which its prefill produces), greedy, batch 1."""
    import torch

    x = torch.from_numpy(np.asarray(ids)[None])
    with torch.no_grad():
        gen = lambda m: hf.generate(x, max_new_tokens=m, min_new_tokens=m, do_sample=False)  # noqa: E731
        return (median_time(lambda: gen(n), repeats) - median_time(lambda: gen(1), repeats)) / (n - 1)


def engine(args) -> None:
    import jax
    import jax.numpy as jnp

    from sparrow_jax.config import DraftConfig, TextConfig
    from sparrow_jax.generation import PromptState, TreeShape, generate
    from sparrow_jax.generation.speculative.oracle import OracleProposer
    from sparrow_jax.generation.speculative.proposer import SparrowProposer
    from sparrow_jax.models import build_model
    from sparrow_jax.sampling import Sampler, SamplingConfig

    hf, target = random_target(args.layers, args.hidden)
    rng = np.random.default_rng(0)
    n, k = args.new_tokens, args.k
    print(f"target: {args.layers} layers, hidden {args.hidden}, batch 1, {n} new tokens, greedy, "
          f"{args.repeats} repeats (median)")
    print(f"{'context':>8} {'HF tok/s':>9} {'ours tok/s':>11} {'ours/HF':>8} {'oracle K=' + str(k) + ' tok/s':>17} "
          f"{'oracle/ours':>12} {'tau':>5}")
    for ctx in args.contexts:
        ids = rng.integers(0, 4000, ctx)
        ref = generate(target, [ids], max_new_tokens=n)
        ours = statistics.median(
            generate(target, [ids], max_new_tokens=n).stats["decode_s"] for _ in range(args.repeats))
        reference = jnp.asarray(np.append(ref.tokens[0, 1:], [0] * (k + 2))[None].astype(np.int32))
        oracle = OracleProposer(reference, jnp.zeros(reference.shape, bool), 4096, TreeShape.chain(k))
        spec = [generate(target, [ids], max_new_tokens=n, draft=oracle) for _ in range(args.repeats + 1)]
        assert spec[-1].token_ids() == ref.token_ids(), "speculative output differs from autoregressive"
        spec_s = statistics.median(s.stats["decode_s"] for s in spec[1:])
        hf_s = hf_step_s(hf, ids, n, args.repeats) * (n - 1)
        tps = lambda s: (n - 1) / s  # noqa: E731  tokens after the first, which prefill produces
        print(f"{ctx:>8} {tps(hf_s):>9.1f} {tps(ours):>11.1f} {hf_s / ours:>7.2f}x {tps(spec_s):>17.1f} "
              f"{ours / spec_s:>11.2f}x {spec[-1].stats['tau']:>5.2f}")
        sys.stdout.flush()

    # Draft proposal cost against visual tokens.
    lm = target.lm.config
    layers = TextConfig(vocab_size=lm.vocab_size, hidden_size=lm.hidden_size, intermediate_size=4 * lm.hidden_size,
                        num_layers=1, num_heads=4, num_kv_heads=4, head_dim=lm.hidden_size // 4)
    tree, text = TreeShape(), 64
    print(f"\ndraft proposal (EAGLE-2 tree {tree.top_k}/{tree.depth}/{tree.total}), {text} text tokens, median ms:")
    print(f"{'visual tokens':>13} {'Sparrow (text window)':>22} {'draft over all tokens':>22} {'ratio':>7}")
    base = None
    for visual in args.visual:
        row = []
        for sees_all in (False, True):
            seen = text + visual if sees_all else text
            draft = build_model(DraftConfig(layers, window=seen if sees_all else 1024))
            prop = SparrowProposer.create(draft, tree, SamplingConfig(), chunk=64)
            hidden = jnp.asarray(rng.standard_normal((1, seen, lm.hidden_size)), jnp.float32)
            ids = jnp.asarray(rng.integers(0, 4000, (1, seen)), jnp.int32)
            index = jnp.arange(-(-seen // 64) * 64)[None].clip(max=seen - 1).astype(jnp.int32)
            prompt = PromptState(ids, jnp.zeros((1,), jnp.int32), jnp.asarray([1]), Sampler.of(), index, jnp.asarray([seen]))
            state = jax.jit(lambda h, p: prop.start(target, p, hidden=h, first=jnp.asarray([5])))(hidden, prompt)
            propose = jax.jit(lambda st: prop.propose(target, st, root=jnp.asarray([5]), n_out=jnp.asarray([1]),
                                                      key=jax.random.key(0))[0].tokens)
            row.append(1000 * median_time(lambda: jax.block_until_ready(propose(state)), args.repeats))
        base = base or row[0]
        print(f"{visual:>13} {row[0]:>22.2f} {row[1]:>22.2f} {row[1] / row[0]:>6.1f}x")
