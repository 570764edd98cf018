"""Command-line options shared by `python -m infer`, the demo, the server, batch inference and the benchmarks."""

from __future__ import annotations

from sparrow_jax import compile_cache
from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.video import PRESETS

DEFAULT_MAX_NEW = 256  # new tokens when neither --max-new-tokens nor the checkpoint's generation config says
DEFAULT_CAPACITY = 32768  # KV slots: the paper's longest setting (~25k visual tokens) plus 512 new tokens fits
# Generation flags and the HF setting each sets.
GENERATION_FLAGS = {"max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_k": "top_k",
                    "top_p": "top_p", "repetition_penalty": "repetition_penalty", "seed": "seed"}


def add_model_options(p, demo_help: str) -> None:
    """--demo, --target, --draft, --tokenizer, --capacity, --dtype, the draft's shape and video sampling."""
    p.add_argument("--demo", action="store_true", help=demo_help)
    p.add_argument("--target", help="converted target checkpoint (python -m convert target); required without --demo")
    p.add_argument("--draft", help="converted Sparrow draft (python -m convert draft): speculative decoding")
    p.add_argument("--tokenizer", help="directory with the tokenizer files (default: TARGET/tokenizer)")
    p.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                   help="most KV cache slots a request may use")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: as converted)")
    p.add_argument("--mesh", metavar="AXIS=N[,AXIS=N]",
                   help="shard over the devices: tensor=N splits heads and MLP over N devices, data=N splits the "
                        "rows of a batch (data takes the devices left when not given), e.g. tensor=8 or "
                        "data=2,tensor=4 (default: one device)")
    compile_cache.add_flag(p)
    s = p.add_argument_group("speculative decoding (with --draft)")
    shape = s.add_mutually_exclusive_group()
    shape.add_argument("--chain", type=int, metavar="K", help="draft a chain of K tokens per cycle")
    shape.add_argument("--tree", metavar="TOPK,DEPTH,TOTAL|auto",
                       help="draft an EAGLE-2 tree; auto: the budget (chain or tree, and copies unless --copy is "
                            "given) with the most expected tokens per second on this device, from the target's "
                            "verify cost measured once (cached) and the draft's acceptance.json (default: auto "
                            "once measured, else 8,3,30; --demo: a chain of 3)")
    s.add_argument("--window", type=int, help="text slots of the draft's window cache (default: as converted)")
    s.add_argument("--copy", type=int, metavar="M",
                   help="also propose up to M tokens copied from where the last words occurred before (prompt text "
                        "and answer), merged into the draft's tree and verified in the same forward; without "
                        "--draft, copies alone (default: off)")
    s.add_argument("--copy-deep", type=int, metavar="D", default=0,
                   help="with --copy M: D more copied tokens when the last 4 tokens occurred before (a long "
                        "match), verified only in those cycles")
    v = p.add_argument_group("video sampling")
    v.add_argument("--preset", choices=sorted(PRESETS),
                   help="the paper's settings (default: qwen2_5_vl or llava_onevision_32 by target)")
    count = v.add_mutually_exclusive_group()
    count.add_argument("--frames", type=int, help="sample this many frames, uniform over the duration")
    count.add_argument("--fps", type=float, help="sample this many frames per second")
    v.add_argument("--max-frames", type=int, help="cap on the sampled frames")
    v.add_argument("--max-pixels", type=int, help="Qwen2.5-VL: cap on pixels per frame (preset: 448*448)")


def add_generation_options(p) -> None:
    g = p.add_argument_group("generation (unset: the checkpoint's generation_config.json, else the default shown)")
    # No argparse defaults here: unset means "the checkpoint's value", so each help text names the fallback.
    g.add_argument("--max-new-tokens", type=int, help=f"most tokens to generate (default: {DEFAULT_MAX_NEW})")
    g.add_argument("--temperature", type=float, help="0 = greedy (default: 0)")
    g.add_argument("--top-p", type=float, help="nucleus sampling's probability mass (default: 1 = off)")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens; 0 = no top-k filter (default: 0)")
    g.add_argument("--repetition-penalty", type=float, help="HF's repetition penalty (default: 1 = off)")
    g.add_argument("--seed", type=int, help="sampling seed (default: 0)")


def generation_settings(args) -> dict:
    """The generation flags given, by HF name."""
    return {name: getattr(args, flag) for flag, name in GENERATION_FLAGS.items() if getattr(args, flag) is not None}


def copy_config(args):
    """The copy drafting --copy M (--copy-deep D) asks for (None without it)."""
    deep = getattr(args, "copy_deep", 0) or 0
    if getattr(args, "copy", None) is None:
        if deep:
            raise ValueError("--copy-deep D adds copied tokens on a long match to --copy M: give --copy M too")
        return None
    if args.copy < 1:
        raise ValueError(f"--copy M proposes up to M copied tokens per cycle: M must be >= 1, got {args.copy}")
    if deep < 0:
        raise ValueError(f"--copy-deep D must be >= 0, got {deep}")
    from sparrow_jax.generation import CopyConfig

    return CopyConfig(tokens=args.copy, deep=deep)


def tree_shape(args, speculative: bool):
    """The draft budget given by --chain / --tree (None when neither is given); --tree auto: an
    `autotune.Auto` with the draft's acceptance table (`acceptance.json` in --draft, else the prior)."""
    if (args.chain is not None or args.tree is not None) and not speculative:
        raise ValueError("--chain and --tree shape the draft's proposals: give --draft CKPT too")
    if args.chain is not None:
        if args.chain < 1:
            raise ValueError(f"--chain K drafts K tokens per cycle: K must be >= 1, got {args.chain}")
        return TreeShape.chain(args.chain)
    if args.tree == "auto":
        return auto_tree(args.draft)
    if args.tree is not None:
        try:
            top_k, depth, total = (int(x) for x in args.tree.split(","))
        except ValueError:
            raise ValueError(f"--tree takes TOPK,DEPTH,TOTAL (e.g. 8,3,30) or auto, got {args.tree!r}") from None
        return TreeShape(top_k, depth, total)
    return None


MESH_AXES = ("data", "fsdp", "tensor")


def mesh_sizes(text: str) -> dict:
    """The axis sizes --mesh names ("tensor=8", "data=2,tensor=4"); a ValueError saying what is wrong."""
    sizes = {}
    for part in text.split(","):
        axis, eq, size = part.strip().partition("=")
        if not eq or axis not in MESH_AXES:
            raise ValueError(f"--mesh takes AXIS=N pairs separated by commas with AXIS one of {', '.join(MESH_AXES)} "
                             f"(e.g. tensor=8 or data=2,tensor=4), got {text!r}")
        if axis in sizes:
            raise ValueError(f"--mesh names {axis} twice ({text!r}); give each axis once")
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"--mesh {axis}={size}: the size must be a whole number >= 1")
        sizes[axis] = int(size)
    return sizes


def mesh_of(args):
    """The device mesh --mesh asks for (None without it); a ValueError naming the fix when the sizes do not
    fit the devices found."""
    if getattr(args, "mesh", None) is None:
        return None
    import jax

    from sparrow_jax.sharding import make_mesh

    sizes = mesh_sizes(args.mesh)
    n = jax.device_count()
    fix = (f"--mesh must use all {n} devices found (data x fsdp x tensor = {n}; data takes what is left when "
           f"not given), e.g. --mesh tensor={n}")
    return make_mesh(sizes.get("data", -1), sizes.get("fsdp", 1), sizes.get("tensor", 1), fix=fix)


def auto_tree(draft_dir):
    """tree="auto" for the draft checkpoint `draft_dir`: its acceptance.json (if it ships one)."""
    from sparrow_jax.generation.autotune import Acceptance, Auto

    return Auto(acceptance=None if draft_dir is None else Acceptance.load(draft_dir))


def default_tree(target, draft_dir, fallback):
    """The budget when neither --chain nor --tree is given: auto once this device's verify cost for `target`
    (loaded) is measured and cached (by a run with --tree auto), else
    `fallback` (the previous default)."""
    from sparrow_jax.generation import autotune

    return auto_tree(draft_dir) if autotune.is_measured(target) else fallback
