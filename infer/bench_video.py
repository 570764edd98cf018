"""python -m infer.bench video: the target alone against the target with its Sparrow draft, against the number
of visual tokens: tau, decoding speedup (DSR) and end-to-end speedup (ESR), measured side by side in one
run (`sparrow_jax.generation.compare`: one prefill per video, both decodings compiled first, medians of `--repeats`).

Defaults to the embedded demo pair (sparrow_jax.demo) on held-out synthetic scenes rendered at each frame
count (16 visual tokens per frame: 32 frames ~ 0.5k, 256 ~ 4k, 1024 ~ 16k, 1600 ~ 25k visual tokens).
Also reports what a draft-verify cycle costs in autoregressive steps (`cycle` = tau / DSR, per video: the
cost side of DSR, apart from tau), tau without the tokens that follow a repeated 4-gram (`tau*`: a loop
cannot inflate it), the share of tokens accepted from copies (`copy`), whether the two outputs are
identical and the facts of the scene the answers recall. Compare settings side by side with
`--chain K`, `--tree TOPK,DEPTH,TOTAL`, `--tree auto` (the measured best per device), `--copy M --copy-deep D`.
`--target/--draft` measure another converted LLaVA-OneVision pair on the same scenes.
"""

from __future__ import annotations

import json
import statistics
import sys

from tqdm.auto import tqdm

from sparrow_jax.cli_help import ArgumentParser


def main(argv=None) -> int:
    from sparrow_jax import demo

    p = ArgumentParser(prog="python -m infer.bench video", description=__doc__)
    p.add_argument("--target", default=str(demo.TARGET), help="converted target")
    p.add_argument("--draft", default=str(demo.DRAFT), help="converted Sparrow draft")
    p.add_argument("--frames", default="32,256,1024,1600", help="comma-separated frame counts")
    p.add_argument("--videos", type=int, default=3, help="held-out scenes per frame count")
    p.add_argument("--new-tokens", type=int, default=160, help="most tokens generated per video")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per video (their median)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--chain", type=int, metavar="K",
                       help="draft a chain of K tokens (default: --tree auto once measured, else the EAGLE-2 tree)")
    shape.add_argument("--tree", metavar="TOPK,DEPTH,TOTAL|auto",
                       help="draft tree budget; auto: the best measured on this device (chosen per video length)")
    p.add_argument("--copy", type=int, metavar="M", help="merge up to M copied tokens into each tree (default: off; "
                                                         "--tree auto may choose copies itself)")
    p.add_argument("--copy-deep", type=int, metavar="D", default=0,
                   help="with --copy M: D more copied tokens on a long match (adaptive depth)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    import sparrow_jax
    from infer.options import copy_config, default_tree, tree_shape
    from sparrow_jax.generation.autotune import Auto, describe
    from sparrow_jax import checkpoint
    from sparrow_jax.generation import compare
    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.prompting import load_tokenizer
    from sparrow_jax.synthetic.dataset import scene_video
    from sparrow_jax.synthetic.describe import recall_of_facts

    config = checkpoint.target_config(args.target)
    draft_config = checkpoint.draft_config(args.draft, config.text)
    tree, copy = tree_shape(args, True), copy_config(args)
    copies = "" if copy is None else f" + {copy.tokens} copies" + (f" (+{copy.deep} deep)" if copy.deep else "")
    tokenizer = load_tokenizer(args.target)
    target = sparrow_jax.load(args.target)
    draft = checkpoint.load_draft(args.draft, draft_config)
    tree = tree or default_tree(target, args.draft, None)  # None: generate's EAGLE-2 tree
    named = "auto" if isinstance(tree, Auto) else tree or "EAGLE-2 8/3/30"
    samples = demo.samples()[: args.videos]
    size = frame_size(config, 112, 112)[0]
    print(f"target {args.target} ({config.text.num_layers} layers x {config.text.hidden_size}); draft {args.draft} "
          f"({draft_config.layers.num_layers} layer, window {draft_config.window}); tree "
          f"{named}{copies}; {len(samples)} held-out videos per length; up to {args.new_tokens} new "
          f"tokens, greedy; medians of {args.repeats} runs")
    rows = []
    for frames in (int(f) for f in args.frames.split(",")):
        per_video = []
        for i, rec in enumerate(tqdm(samples, desc=f"{frames} frames", leave=False)):
            ids, pixels = video_prompt(config, tokenizer.prompt_ids([demo.QUESTION]),
                                       scene_video(rec["seed"], frames, size), fps=None)
            c = compare(target, draft, [ids], [pixels], repeats=args.repeats, warm_prefill=i == 0, tree=tree,
                        copy=copy, max_new_tokens=args.new_tokens, eos_token_id=tokenizer.eos_token_ids,
                        pad_id=tokenizer.pad_token_id)
            text = tokenizer.decode(c.alone.token_ids()[0])
            st = c.speculative.stats
            per_video.append({"visual": int((ids == config.video_token_id).sum()), "tau": c.tau, "dsr": c.dsr,
                              "tau_novel": st["tau_novel"] if st.get("tau_novel") is not None else float("nan"),
                              "copy_share": st["accepted_from"]["copy"] / max(st["new_tokens"], 1)
                              if "accepted_from" in st else 0.0,
                              "cycle_steps": c.tau / c.dsr,
                              "esr": c.esr, "identical": c.identical, "prefill_s": c.prefill_s,
                              "ar_tok_s": c.alone.stats["decode_tokens_per_s"],
                              "spec_tok_s": c.speculative.stats["decode_tokens_per_s"],
                              "new_tokens": c.alone.stats["new_tokens"],
                              "recall": recall_of_facts(text, rec["facts"]),
                              **({"tree_auto": st["tree_auto"]} if "tree_auto" in st else {})})
        med = {k: statistics.median(v[k] for v in per_video) for k in per_video[0]
               if k not in ("identical", "tree_auto")}
        rows.append({"frames": frames, **med, "identical": all(v["identical"] for v in per_video),
                     "videos": per_video})
        if "tree_auto" in per_video[0]:
            print(f"tree auto at {frames} frames: {describe(per_video[0]['tree_auto'])}")
        if len(rows) == 1:
            print(f"{'frames':>6} {'visual':>6} {'prefill s':>9} {'AR tok/s':>8} {'spec tok/s':>10} {'tau':>5} "
                  f"{'tau*':>5} {'copy':>5} {'DSR':>6} {'ESR':>6} {'cycle':>6} {'identical':>9} {'recall':>6} "
                  f"{'tokens':>6}")
        r = rows[-1]
        print(f"{frames:>6} {r['visual']:>6.0f} {r['prefill_s']:>9.2f} {r['ar_tok_s']:>8.1f} {r['spec_tok_s']:>10.1f} "
              f"{r['tau']:>5.2f} {r['tau_novel']:>5.2f} {r['copy_share']:>5.2f} {r['dsr']:>5.2f}x {r['esr']:>5.2f}x "
              f"{r['cycle_steps']:>6.2f} {str(r['identical']):>9} {r['recall']:>6.2f} {r['new_tokens']:>6.0f}")
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
