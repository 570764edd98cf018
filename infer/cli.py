"""python -m infer: ask a converted Vid-LLM (optionally with a Sparrow draft) about a video file.

    python -m infer --target ckpt/llava-ov-7b --draft ckpt/sparrow-llava --video clip.mp4 --prompt "Describe the video."

The answer streams to stdout as tokens are accepted; one stats line (prefill time, decoding tokens/s,
tau, cycles) and progress go to stderr. `--json` prints {"text", "tokens", "stats", ...} instead, from the
single-jit `infer.generate`. A mistake (unreadable video, no tokenizer, a prompt too long for the cache,
a draft built for another target, ...) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys

from infer.options import add_generation_options, add_model_options, generation_settings
from infer.terminal import Ticker, show_stream, stats_line
from sparrow_jax import compile_cache
from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import add_debug_flag, run_cli
from sparrow_jax.sampling import SamplingConfig


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m infer", description=__doc__)
    add_model_options(p, "run the embedded demo pair on a shipped video (see sparrow_jax/demo/README.md)")
    p.add_argument("--video", help="video file: mp4, webm, mkv, avi (anything FFmpeg reads); required without --demo")
    p.add_argument("--prompt", action="append", help="a user turn; repeat for more user turns; required without --demo")
    p.add_argument("--system", help="system prompt (default: the chat template's own, if any)")
    add_generation_options(p)
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
        compile_cache.from_args(args)
        if args.demo:
            from infer import demo

            return demo.run(args)
        return run(args)

    return run_cli(go, args.debug, extra=(ImportError,))  # a user's mistake: one line, exit 2


def run(args) -> int:
    from infer.requests import Frontend
    from sparrow_jax.prompting import chat_messages

    _sampling_options(args)
    front = Frontend.from_args(args)  # every check that can fail comes before the weights are loaded
    video = front.read(args.video, progress=not args.quiet)
    ids, pixels = front.inputs(chat_messages(args.prompt, args.system), video)
    settings = generation_settings(args)
    front.check_fits(ids, len(video.frames), front.settings(settings).max_new_tokens)  # bad values fail here too
    engine = front.engine()
    info = {"prompt_tokens": len(ids), "frames": len(video.frames), "frame_size": list(video.frames.shape[1:3])}
    if args.json:
        with Ticker(f"generating (prompt of {len(ids)} tokens)", args.quiet):
            out = engine.generate([ids], [pixels], **settings)
        print(json.dumps({"text": out.text[0], "tokens": out.token_ids()[0], **info, "stats": out.stats}))
        return 0
    streamed = show_stream(engine.stream([ids], [pixels], **settings), front.tokenizer.decode,
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
