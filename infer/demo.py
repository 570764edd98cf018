"""python -m infer --demo: the embedded pair (sparrow_jax.demo) on a shipped held-out video.

Streams the target's description decoded with the Sparrow draft, then times the target alone and the
target with the draft side by side (`sparrow_jax.generation.compare`: one prefill, both decodings compiled first, medians) and prints tau, the
decoding speedup (DSR), the end-to-end speedup (ESR) and whether the two outputs are identical (at
temperature 0 they must be). `--target/--draft/--video/--frames` replace the shipped pieces.
"""

from __future__ import annotations

from infer.options import DEFAULT_MAX_NEW, copy_config, default_tree, mesh_of, tree_shape
from infer.terminal import Ticker, show_stream
from sparrow_jax.errors import UserError

REPEATS = 3
# On a CPU the target's verify forward costs about in proportion to the tokens it checks, so a short chain
# beats the paper's GPU tree (EAGLE-2 8/3/30) here; measured in BENCHMARKS.md ("Embedded pair").
DEMO_CHAIN = 3


def run(args) -> int:
    import sparrow_jax
    from sparrow_jax import checkpoint, demo
    from sparrow_jax.generation import compare, stream
    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.prompting import load_tokenizer
    from sparrow_jax.generation.speculative.tree import TreeShape
    from sparrow_jax.video import Sampling, read_video

    target_path, draft_path = args.target or demo.TARGET, args.draft or demo.DRAFT
    args.draft = str(draft_path)  # --tree auto reads the draft's acceptance.json
    sample = demo.samples()[0]
    video_path = args.video or sample["video"]
    reference = None if args.video else sample
    frames = args.frames or demo.FRAMES
    if reference is not None and frames > demo.FRAMES:  # sampling would quietly give every frame, fewer than asked
        raise UserError(f"--frames {frames}: the shipped demo clips have {demo.FRAMES} frames; ask for at most "
                        f"{demo.FRAMES}, pass --video FILE with a longer video, or run python -m infer.bench video "
                        f"--frames {frames} (the demo scenes rendered at any length)")
    question = args.prompt[0] if args.prompt else demo.QUESTION

    shape = tree_shape(args, True)
    config = checkpoint.target_config(target_path)
    draft_config = checkpoint.draft_config(draft_path, config.text)
    tokenizer = load_tokenizer(args.tokenizer or target_path)
    video = read_video(video_path, Sampling(num_frames=frames), lambda h, w: frame_size(config, h, w),
                       progress=not args.quiet)
    ids, pixels = video_prompt(config, tokenizer.prompt_ids([question]), video.frames, fps=video.fps)
    visual = int((ids == config.video_token_id).sum())
    mesh = mesh_of(args)
    target = sparrow_jax.load(target_path, args.dtype, mesh=mesh)
    draft = checkpoint.load_draft(draft_path, draft_config, args.window, args.dtype, mesh=mesh)
    # Unset: the measured best budget (tree="auto") once this device's verify cost is cached, else a chain.
    shape = shape or default_tree(target, draft_path, TreeShape.chain(DEMO_CHAIN))
    t, d = config.text, draft_config
    say(f"target: {config.model_type}, {t.num_layers} layers x {t.hidden_size} ({target_path})")
    say(f"draft:  Sparrow, {d.layers.num_layers} layer(s), window {d.window} text slots ({draft_path})")
    say(f"video:  {video_path}: {len(video.frames)} frames -> {visual} visual tokens, prompt {len(ids)} tokens")
    say(f"question: {question}")
    copy = copy_config(args)
    if not isinstance(shape, TreeShape):
        kind = "the budget measured best on this device (tree auto; shown after the run)"
    else:
        kind = f"a chain of {shape.max_depth}" if shape.is_chain else f"a tree {shape.top_k}/{shape.depth}/{shape.total}"
    kind += "" if copy is None else f" + up to {copy.tokens} copied tokens"
    say(f"drafting: {kind} per cycle (--chain K / --tree TOPK,DEPTH,TOTAL or auto, --copy M)")

    kw = dict(max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW, eos_token_id=tokenizer.eos_token_ids,
              pad_id=tokenizer.pad_token_id)
    spec_kw = dict(kw, tree=shape, copy=copy, mesh=mesh)
    if args.temperature:
        say("note: --demo decodes greedily (temperature 0), where the two outputs must be identical")
    say("\ntarget + draft, streamed:")
    streamed = show_stream(stream(target, [ids], [pixels], draft=draft, **spec_kw), tokenizer.decode,
                         f"prefill ({len(ids)} tokens)", args.quiet)
    say("")

    with Ticker("compiling and timing both", args.quiet):
        c = compare(target, draft, [ids], [pixels], repeats=REPEATS, **spec_kw)
    same = c.identical and c.speculative.token_ids() == streamed.output.token_ids()
    for name, out in (("target alone:  ", c.alone), ("target + draft:", c.speculative)):
        st = out.stats
        say(f"{name} {st['new_tokens']} tokens, decoding {st['decode_s']:.3f} s ({st['decode_tokens_per_s']:.0f} "
            f"tokens/s), {st['cycles']} cycles")
    say(f"prefill (shared, target): {c.prefill_s:.3f} s")
    if "tree_auto" in c.speculative.stats:
        from sparrow_jax.generation.autotune import describe

        say(f"tree auto chose: {describe(c.speculative.stats['tree_auto'])}")
    st = c.speculative.stats
    if st.get("tau_novel") is not None:
        say(f"tau without tokens after a repeated 4-gram: {st['tau_novel']:.2f} ({st['repeated_tokens']} such tokens)")
    say(f"tau {c.tau:.2f} | DSR {c.dsr:.2f}x | ESR {c.esr:.2f}x | identical outputs: {'yes' if same else 'NO'}"
        f"   (medians of {REPEATS} runs after compiling)")
    if reference is not None:
        from sparrow_jax.synthetic.describe import recall_of_facts

        answer = tokenizer.decode(c.speculative.token_ids()[0])
        say(f"ground truth:   {reference['conversations'][-1]['content']}")
        say(f"facts recalled: {recall_of_facts(answer, reference['facts']):.0%} of the scene's "
            f"{len(reference['facts'])} facts")
    return 0 if same else 1


def say(line: str) -> None:
    print(line, flush=True)

