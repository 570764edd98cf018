"""Description accuracy of a target on held-out synthetic scenes: the share of each scene's facts its greedy
answer states (`describe.recall`), at several frame counts (the trained one and longer ones), and how much
its answers rest on the video (`video_reliance`).

    python -m train.synthetic.evaluate --target sparrow_jax/demo/target --frames 8,16,32,64 --count 64
"""

from __future__ import annotations


import numpy as np
from tqdm import tqdm

from sparrow_jax.cli_help import ArgumentParser

HELD_OUT = 1_000_000  # first held-out seed: training scenes are 0 .. count - 1 (see examples/reproduce_demo.sh)


def evaluate(target, tokenizer, frames: int, seeds, batch: int = 16, max_new_tokens: int = 192,
             question: str = "Describe the video.") -> dict:
    """Mean recall and the share of exactly complete answers over scenes `seeds` rendered at `frames` frames."""
    from sparrow_jax.generation import generate
    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.synthetic.dataset import example
    from sparrow_jax.synthetic.describe import recall
    from sparrow_jax.synthetic.world import render

    size = frame_size(target.config, 112, 112)[0]
    scores = []
    for start in tqdm(range(0, len(seeds), batch), desc=f"{frames} frames", leave=False):
        chunk = seeds[start: start + batch]
        scenes = [example(s)[0] for s in chunk]
        prompts = [video_prompt(target.config, tokenizer.prompt_ids([question]), render(sc, frames, size, size))
                   for sc in scenes]
        out = generate(target, [p for p, _ in prompts], [v for _, v in prompts], max_new_tokens=max_new_tokens,
                       eos_token_id=tokenizer.eos_token_ids, pad_id=tokenizer.pad_token_id)
        scores += [recall(tokenizer.decode(t), sc) for t, sc in zip(out.token_ids(), scenes)]
    visual = int(target.config.num_video_tokens(frames))
    return {"frames": frames, "visual_tokens": visual, "scenes": len(scores), "recall": float(np.mean(scores)),
            "complete": float(np.mean([s == 1.0 for s in scores]))}


def video_reliance(target, tokenizer, seeds, frames: int = 8, question: str = "Describe the video.") -> dict:
    """Mean answer NLL (nats per token, teacher-forced ground truth) with each scene's own video and with the
    next scene's: equal when the target ignores the video, far apart when its answers come from it."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.synthetic.dataset import example
    from sparrow_jax.synthetic.world import render

    size = frame_size(target.config, 112, 112)[0]
    examples = [example(s) for s in seeds]  # (scene, question, answer), each drawn once
    answers = [answer for _, _, answer in examples]
    videos = [render(scene, frames, size, size) for scene, _, _ in examples]
    graphdef, state = nnx.split(target)  # weights as arguments, not constants baked into the program
    logits_of = jax.jit(lambda state, ids, video: nnx.merge(graphdef, state)(ids, video))

    def nll(answer, video):
        ids, v = video_prompt(target.config, tokenizer.prompt_ids([question]), video)
        a = tokenizer.tokenizer(answer, add_special_tokens=False)["input_ids"] + tokenizer.eos_token_ids[:1]
        full = np.concatenate([ids, a])
        # Padded at the end to a multiple of 64 tokens so that one compile serves most answers; causal
        # attention keeps the padding out of the logits read below.
        full = np.pad(full, (0, -len(full) % 64), constant_values=tokenizer.pad_token_id)
        logits = logits_of(state, jnp.asarray(full[None], jnp.int32), jax.tree.map(lambda x: x[None], v))
        logp = jax.nn.log_softmax(logits[0, len(ids) - 1: len(ids) - 1 + len(a)].astype(jnp.float32))
        return -float(jnp.mean(logp[jnp.arange(len(a)), jnp.asarray(a)]))

    n = len(seeds)
    own = [nll(answers[i], videos[i]) for i in range(n)]
    other = [nll(answers[i], videos[(i + 1) % n]) for i in range(n)]
    return {"own_video": float(np.mean(own)), "other_video": float(np.mean(other))}


def main(argv=None) -> int:
    from sparrow_jax.errors import add_debug_flag, run_cli

    p = ArgumentParser(prog="python -m train.synthetic.evaluate", description=__doc__)
    p.add_argument("--target", required=True, help="converted target checkpoint with its tokenizer")
    p.add_argument("--frames", default="8,16,32,64", help="comma-separated frame counts")
    p.add_argument("--count", type=int, default=64, help="held-out scenes per frame count")
    p.add_argument("--batch", type=int, default=16, help="scenes answered per batch")
    add_debug_flag(p)
    args = p.parse_args(argv)
    return run_cli(lambda: _run(args), args.debug)


def _run(args) -> int:
    import sparrow_jax
    from sparrow_jax.prompting import load_tokenizer

    target, tok = sparrow_jax.load(args.target), load_tokenizer(args.target)
    seeds = list(range(HELD_OUT, HELD_OUT + args.count))
    frames = [int(x) for x in args.frames.split(",")]
    few = seeds[:16]
    r = video_reliance(target, tok, few, frames[0])
    print(f"answer NLL at {frames[0]} frames ({len(few)} scenes, ground truth teacher-forced): {r['own_video']:.3f} "
          f"with its own video, {r['other_video']:.3f} with another scene's", flush=True)
    print(f"{'frames':>6} {'visual tokens':>13} {'scenes':>6} {'fact recall':>11} {'all facts':>9}")
    for f in frames:
        r = evaluate(target, tok, f, seeds, args.batch)
        print(f"{r['frames']:>6} {r['visual_tokens']:>13} {r['scenes']:>6} {r['recall']:>11.3f} {r['complete']:>9.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
