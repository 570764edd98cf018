"""python -m infer.bench first-call: a process's first streamed answer, with the decode loop compiled in the
background while the prefill runs (`compile_ahead`, the default) against compiled on its first call.

Each run is a fresh Python process (nothing compiled in memory, no persistent compilation cache) streaming
the embedded demo pair's answer on a held-out scene of each frame count; the two settings alternate, run
after run. Printed per setting and length, medians with [min-max] over the runs: the seconds to the first
tokens, the longest wait between two items after them (the stall a compile on the first call makes), and
to the end of the answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from sparrow_jax.cli_help import ArgumentParser


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m infer.bench first-call", description=__doc__)
    p.add_argument("--frames", default="8,256", help="frame counts of the scenes, comma-separated")
    p.add_argument("--runs", type=int, default=3, help="fresh processes per setting and length")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens streamed per answer")
    p.add_argument("--chain", type=int, default=3, help="the draft's chain length")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one run, in the fresh process the parent started
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_one(json.loads(args.child))))
        return 0
    frames = [int(f) for f in args.frames.split(",")]
    if args.runs < 1 or any(f < 1 for f in frames):
        raise ValueError("--runs and every --frames value must be >= 1")
    print(f"embedded demo pair, chain {args.chain}, {args.new_tokens} new tokens, {args.runs} fresh processes per "
          "cell, the settings alternating; seconds, median [min-max]")
    print("| frames | prompt | loop compiled | first tokens | longest wait after | whole answer |\n"
          "|---|---|---|---|---|---|")
    for f in frames:
        got = {True: [], False: []}
        for _ in range(args.runs):
            for ahead in (False, True):
                job = dict(frames=f, ahead=ahead, new_tokens=args.new_tokens, chain=args.chain)
                out = subprocess.run([sys.executable, "-m", "infer.bench_first_call", "--child", json.dumps(job)],
                                     capture_output=True, text=True, check=True)
                got[ahead].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for ahead in (False, True):
            runs = got[ahead]
            cell = lambda key: _spread([r[key] for r in runs])  # noqa: E731
            print(f"| {f} | {runs[0]['prompt']} | {'in the background' if ahead else 'on its first call'} | "
                  f"{cell('first')} | {cell('stall')} | {cell('total')} |")
    return 0


def _spread(xs) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def _one(job: dict) -> dict:
    """One streamed answer in this (fresh) process: seconds to the first item, longest gap after it, total."""
    import sparrow_jax
    from sparrow_jax import checkpoint, demo
    from sparrow_jax.generation import stream
    from sparrow_jax.generation.speculative.tree import TreeShape
    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.prompting import load_tokenizer
    from sparrow_jax.synthetic.dataset import scene_video

    config = checkpoint.target_config(demo.TARGET)
    tokenizer = load_tokenizer(demo.TARGET)
    target = sparrow_jax.load(demo.TARGET)
    draft = checkpoint.load_draft(demo.DRAFT, checkpoint.draft_config(demo.DRAFT, config.text))
    video = scene_video(demo.samples()[0]["seed"], job["frames"], frame_size(config, 112, 112)[0])
    ids, pixels = video_prompt(config, tokenizer.prompt_ids([demo.QUESTION]), video, fps=None)
    s = stream(target, [ids], [pixels], draft=draft, tree=TreeShape.chain(job["chain"]),
               max_new_tokens=job["new_tokens"], compile_ahead=job["ahead"])
    t0 = time.perf_counter()
    marks = [time.perf_counter() - t0 for _ in s]
    stall = max((b - a for a, b in zip(marks, marks[1:])), default=0.0)
    return {"prompt": len(ids), "first": marks[0], "stall": stall, "total": marks[-1]}


if __name__ == "__main__":
    raise SystemExit(main())
