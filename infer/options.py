"""Command-line options shared by `python -m infer`, the demo and the benchmarks."""

from __future__ import annotations

from sparrow_jax.generation.speculative.tree import TreeShape


def tree_shape(args, speculative: bool):
    """The draft budget given by --chain / --tree (None when neither is given)."""
    if (args.chain is not None or args.tree is not None) and not speculative:
        raise ValueError("--chain and --tree shape the draft's proposals: give --draft CKPT too")
    if args.chain is not None:
        if args.chain < 1:
            raise ValueError(f"--chain K drafts K tokens per cycle: K must be >= 1, got {args.chain}")
        return TreeShape.chain(args.chain)
    if args.tree is not None:
        try:
            top_k, depth, total = (int(x) for x in args.tree.split(","))
        except ValueError:
            raise ValueError(f"--tree takes TOPK,DEPTH,TOTAL (e.g. 8,3,30), got {args.tree!r}") from None
        return TreeShape(top_k, depth, total)
    return None
