"""python -m infer: ask a converted Vid-LLM (optionally with a Sparrow draft) about a video file.

    python -m infer --target ckpt/llava-ov-7b --draft ckpt/sparrow-llava --video clip.mp4 --prompt "Describe the video."

The answer streams to stdout as tokens are accepted; one stats line (prefill time, decoding tokens/s,
tau, cycles) and progress go to stderr. `--json` prints {"text", "tokens", "stats", ...} instead, from the
single-jit `infer.generate`. A mistake (unreadable video, no tokenizer, a prompt too long for the cache,
a draft built for another target, ...) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from infer.options import DEFAULT_MAX_NEW, tree_shape
from infer.terminal import Ticker, show_stream, stats_line
from sparrow_jax.errors import add_debug_flag, run_cli
from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.sampling import SamplingConfig
from sparrow_jax.video import DEFAULT_PRESET, PRESETS, Sampling

DEFAULT_CAPACITY = 32768  # KV slots: the paper's longest setting (~25k visual tokens) plus 512 new tokens fits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true",
                   help="run the embedded demo pair on a shipped video (see sparrow_jax/demo/README.md)")
    p.add_argument("--target", help="converted target checkpoint (python -m convert target); required without --demo")
    p.add_argument("--draft", help="converted Sparrow draft (python -m convert draft): speculative decoding")
    p.add_argument("--video", help="video file: mp4, webm, mkv, avi (anything FFmpeg reads); required without --demo")
    p.add_argument("--prompt", action="append", help="a user turn; repeat for more user turns; required without --demo")
    p.add_argument("--system", help="system prompt (default: the chat template's own, if any)")
    p.add_argument("--tokenizer", help="directory with the tokenizer files (default: TARGET/tokenizer)")
    g = p.add_argument_group("generation (unset: the checkpoint's generation_config.json, else the default shown)")
    g.add_argument("--max-new-tokens", type=int, help=f"default {DEFAULT_MAX_NEW}")
    g.add_argument("--temperature", type=float, help="0 = greedy (default 0)")
    g.add_argument("--top-p", type=float, help="default 1 (off)")
    g.add_argument("--top-k", type=int, help="0 = no top-k filter (default 0)")
    g.add_argument("--repetition-penalty", type=float, help="HF's repetition penalty (default 1 = off)")
    g.add_argument("--seed", type=int, help="default 0")
    g.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                   help=f"most KV cache slots a request may use (default {DEFAULT_CAPACITY})")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: as converted)")
    s = p.add_argument_group("speculative decoding (with --draft)")
    shape = s.add_mutually_exclusive_group()
    shape.add_argument("--chain", type=int, metavar="K", help="draft a chain of K tokens per cycle")
    shape.add_argument("--tree", metavar="TOPK,DEPTH,TOTAL",
                       help="draft an EAGLE-2 tree (default with --draft: 8,3,30)")
    s.add_argument("--window", type=int, help="text slots of the draft's window cache (default: as converted)")
    v = p.add_argument_group("video sampling")
    v.add_argument("--preset", choices=sorted(PRESETS),
                   help="the paper's settings (default: qwen2_5_vl or llava_onevision_32 by target)")
    count = v.add_mutually_exclusive_group()
    count.add_argument("--frames", type=int, help="sample this many frames, uniform over the duration")
    count.add_argument("--fps", type=float, help="sample this many frames per second")
    v.add_argument("--max-frames", type=int, help="cap on the sampled frames")
    v.add_argument("--max-pixels", type=int, help="Qwen2.5-VL: cap on pixels per frame (preset: 448*448)")
    p.add_argument("--json", action="store_true", help="print text and stats as one JSON object, no streaming")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_debug_flag(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = [f"--{k}" for k in ("target", "video", "prompt") if getattr(args, k) is None]
    if missing and not args.demo:
        parser.error(f"the following arguments are required (or --demo): {', '.join(missing)}")

    def go() -> int:
        if args.demo:
            from infer import demo

            return demo.run(args)
        return run(args)

    return run_cli(go, args.debug, extra=(ImportError,))  # a user's mistake: one line, exit 2


def run(args) -> int:
    import sparrow_jax
    from sparrow_jax import checkpoint
    from sparrow_jax.generation import Engine, GenerationConfig, kv_slots_needed
    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.prompting import load_tokenizer, tokenizer_dir, tokenizer_mismatch
    from sparrow_jax.video import read_video

    # Every check that can fail comes before the weights are loaded.
    tree = tree_shape(args, args.draft is not None)
    _sampling_options(args)
    config = checkpoint.target_config(args.target)
    draft_config = None if args.draft is None else checkpoint.draft_config(args.draft, config.text)
    if draft_config is not None and tree is None:
        tree = TreeShape()  # generate's default: the EAGLE-2 budget
    tokenizer = load_tokenizer(args.tokenizer or args.target)
    if problem := tokenizer_mismatch(tokenizer, config):
        raise ValueError(_foreign_tokenizer(args, tokenizer_dir(args.tokenizer or args.target), problem))
    preset = PRESETS[args.preset or DEFAULT_PRESET[config.model_type]]
    max_pixels = args.max_pixels or preset.max_pixels
    size = lambda h, w: frame_size(config, h, w, max_pixels=max_pixels)  # noqa: E731
    video = read_video(args.video, _sampling(args, preset), size, progress=not args.quiet)
    ids = tokenizer.prompt_ids(args.prompt, args.system)
    ids, pixels = video_prompt(config, ids, video.frames, fps=video.fps, max_pixels=max_pixels)
    settings = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("temperature", args.temperature),
                                  ("top_k", args.top_k), ("top_p", args.top_p),
                                  ("repetition_penalty", args.repetition_penalty), ("seed", args.seed))
                if v is not None}
    defaults = GenerationConfig(max_new_tokens=DEFAULT_MAX_NEW).merged(GenerationConfig.from_checkpoint(args.target))
    args.max_new_tokens = defaults.merged(settings).max_new_tokens  # for the capacity check and its message
    defaults.merged(settings).sampling_config()  # bad values fail here, before the weights load
    need = kv_slots_needed(len(ids), args.max_new_tokens, tree)
    if need > args.capacity:
        raise ValueError(_too_long(len(ids), int((ids == config.video_token_id).sum()), len(video.frames),
                                   args, need, draft_config is not None))
    target = sparrow_jax.load(args.target, args.dtype)
    draft = None if draft_config is None else checkpoint.load_draft(args.draft, draft_config, args.window, args.dtype)
    engine = Engine(target, draft, tree=tree, tokenizer=tokenizer, generation_config=defaults)
    info = {"prompt_tokens": len(ids), "frames": len(video.frames), "frame_size": list(video.frames.shape[1:3])}
    if args.json:
        with Ticker(f"generating (prompt of {len(ids)} tokens)", args.quiet):
            out = engine.generate([ids], [pixels], **settings)
        print(json.dumps({"text": out.text[0], "tokens": out.token_ids()[0], **info, "stats": out.stats}))
        return 0
    streamed = show_stream(engine.stream([ids], [pixels], **settings), tokenizer.decode,
                         f"prefill ({len(ids)} tokens)", args.quiet)
    print(stats_line(streamed.output.stats), file=sys.stderr)
    return 0


def _sampling_options(args) -> None:
    """--temperature / --top-p / --top-k / --repetition-penalty checked before anything loads (nan or inf
    would run and mislead); unset ones are checked with the checkpoint's values later."""
    given = lambda value, default: default if value is None else value  # noqa: E731
    try:
        SamplingConfig(given(args.temperature, 0.0), given(args.top_k, 0), given(args.top_p, 1.0),
                       given(args.repetition_penalty, 1.0))
    except ValueError as e:
        raise ValueError(f"--{str(e).replace('_', '-')}") from None


def _sampling(args, preset) -> Sampling:
    base = preset.sampling
    if args.frames is not None:
        base = Sampling(num_frames=args.frames, multiple=base.multiple)
    elif args.fps is not None:
        base = dataclasses.replace(base, num_frames=None, fps=args.fps)
    if args.max_frames is not None:
        base = dataclasses.replace(base, max_frames=args.max_frames, min_frames=min(base.min_frames, args.max_frames))
    return base


def _foreign_tokenizer(args, where, problem) -> str:
    fix = ("pass --tokenizer with the target's own tokenizer (the Hugging Face directory it was converted from)"
           if args.tokenizer else
           f"convert the target again from its Hugging Face directory (python -m convert target --src HF_DIR "
           f"--dst {args.target} --overwrite), which copies its tokenizer, or pass --tokenizer HF_DIR")
    return f"the tokenizer in {where} does not belong to --target {args.target}: {problem}; {fix}"


def _too_long(prompt, video_tokens, frames, args, need, speculative) -> str:
    extra = " + one draft tree" if speculative else ""
    return (f"the prompt is {prompt} tokens ({video_tokens} of them for {frames} video frames); with "
            f"{args.max_new_tokens} new tokens{extra} it needs {need} KV slots (padding included), more than "
            f"--capacity {args.capacity}: "
            "sample fewer frames (--frames, --fps, --max-frames), lower --max-pixels (Qwen2.5-VL), lower "
            "--max-new-tokens, or raise --capacity if memory allows")
