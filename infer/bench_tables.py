"""python -m infer.bench tables: the paper's two tables on the embedded demo target (../REFERENCE: Sparrow's
robustness and ablation tables), from drafts trained alike for it (`examples/reproduce_tables.sh`, configs
in train/configs/tables/):

- robustness: tau, decoding speedup (DSR) and end-to-end speedup (ESR) against the number of visual tokens,
  for the EAGLE/MSD-style baseline (a draft that reads every prompt position, visual ones included, at
  training and inference) and Sparrow (MTP + IVSB + VATA), plus the shipped demo draft (the same recipe
  continued on long videos) when it drafts for this target;
- ablation: tau at the shortest and the longest length for each combination of MTP, IVSB and VATA.

Every cell is measured as `python -m infer.bench video` measures (`sparrow_jax.generation.compare_drafts`:
one target prefill and autoregressive run per video, shared by the drafts; medians of `--repeats` runs,
then over `--videos` held-out scenes), greedy, the same tree budget for every draft, and checks that each
draft's output equals the target's. A draft that reads visual tokens gets a window covering the whole
prompt at each length. DSR is the decoding alone; the draft's own prefill (its window cache over the prompt:
a few dozen text pairs for a VATA draft, every position for one that reads visual tokens) is its own column
and is counted in ESR, which runs end to end (the target's prefill on both sides).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

from tqdm.auto import tqdm

from sparrow_jax.cli_help import ArgumentParser
from sparrow_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Draft:
    """One trained draft of the tables: its name (its directory under --root and its config in
    train/configs/tables/) and which of the paper's three parts it has."""

    name: str
    mtp: bool
    ivsb: bool
    vata: bool  # False: the draft reads every prompt position (EAGLE/MSD-style), at training and inference
    title: str = ""  # the row's name in the tables; "": its parts

    @property
    def label(self) -> str:
        parts = [p for p, on in (("MTP", self.mtp), ("IVSB", self.ivsb), ("VATA", self.vata)) if on]
        return self.title or (" + ".join(parts) if parts else "none (EAGLE/MSD-style)")


# The ablation's rows in the paper's order; "none" is also the robustness table's baseline, "sparrow" its Sparrow.
DRAFTS = (Draft("none", False, False, False), Draft("vata", False, False, True), Draft("mtp", True, False, False),
          Draft("mtp_ivsb", True, True, False), Draft("sparrow", True, True, True))
# sparrow_jax/demo/draft: Sparrow's recipe + a long-video stage
SHIPPED = Draft("shipped", True, True, True, "Sparrow, shipped (+ long-video stage)")
KINDS = {d.name: d for d in (*DRAFTS, SHIPPED)}
ROBUSTNESS = ("none", "sparrow", "shipped")


def build_parser() -> ArgumentParser:
    from sparrow_jax import demo

    p = ArgumentParser(prog="python -m infer.bench tables", description=__doc__)
    p.add_argument("--root", default="runs/tables", help="where the drafts are: ROOT/NAME/draft for NAME in "
                                                          + ", ".join(d.name for d in DRAFTS))
    p.add_argument("--drafts", default="",
                   help="comma-separated: which of the trained drafts to measure (the tables keep their rows); "
                        "default: every one under --root, the baseline (none) always, from the shipped "
                        "sparrow_jax/demo/baseline when --root has none")
    p.add_argument("--baseline", default=str(demo.BASELINE),
                   help="the baseline draft (none) used when --root holds no trained one")
    p.add_argument("--target", default=str(demo.TARGET), help="converted target the drafts were trained for")
    p.add_argument("--shipped", default=str(demo.DRAFT), help="the shipped Sparrow draft, a row of the robustness "
                                                               "table ('' leaves it out)")
    p.add_argument("--frames", default="32,256,1024,1600",
                   help="comma-separated frame counts (16 visual tokens + 1 per frame); the ablation reads the "
                        "first and the last")
    p.add_argument("--videos", type=int, default=2, help="held-out scenes per frame count")
    p.add_argument("--new-tokens", type=int, default=160, help="most tokens generated per video")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per video (their median)")
    p.add_argument("--chain", type=int, default=3, metavar="K", help="every draft drafts a chain of K tokens")
    p.add_argument("--json", help="also write the tables and every cell to this JSON file")
    p.add_argument("--plot", help="also draw DSR against visual tokens per draft into this PNG (matplotlib)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    frames = [int(f) for f in args.frames.split(",")]
    drafts = chosen_drafts(args)
    if missing := [n for n, path in drafts.items() if not (path / "config.json").is_file()]:
        raise UserError(f"infer.bench tables: no trained draft for {', '.join(missing)} under {args.root} "
                        f"(expected ROOT/NAME/draft); train them with bash examples/reproduce_tables.sh, or "
                        "give --root")
    if args.shipped:
        drafts[SHIPPED.name] = Path(args.shipped)
    if args.plot:
        _require_matplotlib()
    cells = measure(args, drafts, frames)
    tables = summarise(cells, frames, list(drafts))
    print_tables(tables, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), **tables, "cells": cells}, indent=1))
    if args.plot:
        plot(tables, args.plot, args.chain)
    return 0 if all(c["identical"] for c in cells) else 1


def chosen_drafts(args) -> dict[str, Path]:
    """name -> checkpoint of each draft to measure: those --drafts names (all must be trained), or by default
    every one trained under --root; the baseline (none) falls back to the shipped one (--baseline)."""
    known = [d.name for d in DRAFTS]
    trained = lambda n: (Path(args.root) / n / "draft" / "config.json").is_file()  # noqa: E731
    chosen = [n.strip() for n in args.drafts.split(",") if n.strip()]
    if unknown := [n for n in chosen if n not in known]:
        raise UserError(f"--drafts: {', '.join(unknown)}: name one or more of the tables' drafts ({', '.join(known)})")
    chosen = chosen or [n for n in known if n == "none" or trained(n)]
    drafts = {n: Path(args.root) / n / "draft" for n in known if n in chosen}
    if "none" in drafts and not trained("none") and args.baseline:
        drafts["none"] = Path(args.baseline)
    return drafts


def measure(args, paths: dict[str, Path], frames: list[int]) -> list[dict]:
    """Every (draft, length, video) cell: tau, DSR, ESR, the cycle's cost in steps and identity."""
    import sparrow_jax
    from sparrow_jax import checkpoint, demo
    from sparrow_jax.generation import TreeShape, compare_drafts
    from sparrow_jax.inputs import bucket
    from sparrow_jax.processing import frame_size, video_prompt
    from sparrow_jax.prompting import load_tokenizer
    from sparrow_jax.synthetic.dataset import scene_video

    config = checkpoint.target_config(args.target)
    tokenizer = load_tokenizer(args.target)
    target = sparrow_jax.load(args.target)
    configs = {n: checkpoint.draft_config(path, config.text, f"draft {n}") for n, path in paths.items()}
    samples = demo.samples()[: args.videos]
    size = frame_size(config, 112, 112)[0]
    ablation = {frames[0], frames[-1]}
    print(f"target {args.target}; drafts {', '.join(f'{n} ({p})' for n, p in paths.items())}; chain "
          f"{args.chain}; {len(samples)} held-out videos per length; up to {args.new_tokens} new tokens, greedy; "
          f"medians of {args.repeats} runs")
    loaded = {}  # (name, window) -> the draft with that window cache, loaded once

    def load(n, window):
        if (n, window) not in loaded:
            loaded[n, window] = checkpoint.load_draft(paths[n], configs[n], window=window)
        return loaded[n, window]

    cells = []
    for f in frames:
        names = [n for n in paths if n in ROBUSTNESS or f in ablation]
        for i, rec in enumerate(tqdm(samples, desc=f"{f} frames", leave=False)):
            ids, pixels = video_prompt(config, tokenizer.prompt_ids([demo.QUESTION]),
                                       scene_video(rec["seed"], f, size), fps=None)
            # A draft that reads visual tokens gets a window over the whole prompt and answer at this length.
            full = bucket(len(ids) + args.new_tokens + args.chain + 1, 1024)
            windows = {n: configs[n].window if KINDS[n].vata else full for n in names}
            drafts = {n: {"draft": load(n, windows[n]), "draft_sees_visual": not KINDS[n].vata} for n in names}
            out = compare_drafts(target, drafts, [ids], [pixels], repeats=args.repeats, warm_prefill=i == 0,
                                 tree=TreeShape.chain(args.chain), max_new_tokens=args.new_tokens,
                                 eos_token_id=tokenizer.eos_token_ids, pad_id=tokenizer.pad_token_id)
            for n, c in out.items():
                cells.append({"draft": n, "frames": f, "seed": rec["seed"],
                              "visual": int((ids == config.video_token_id).sum()), "prompt": len(ids),
                              "sees_visual": not KINDS[n].vata, "window": windows[n], "tau": c.tau, "dsr": c.dsr,
                              "esr": c.esr, "cycle_steps": c.tau / c.dsr, "identical": c.identical,
                              "prefill_s": c.prefill_s, "draft_prefill_s": c.draft_prefill_s,
                              "new_tokens": c.alone.stats["new_tokens"]})
        sys.stdout.flush()
    return cells


def summarise(cells: list[dict], frames: list[int], names: list[str]) -> dict:
    """The two tables from the cells: medians over videos per (draft, length)."""
    def median_of(name, f):
        own = [c for c in cells if c["draft"] == name and c["frames"] == f]
        if not own:
            return None
        return {"draft": name, "frames": f, "visual": own[0]["visual"],
                **{k: statistics.median(c[k] for c in own)
                   for k in ("tau", "dsr", "esr", "cycle_steps", "prefill_s", "draft_prefill_s")},
                "identical": all(c["identical"] for c in own)}

    robustness = [m for n in names if n in ROBUSTNESS for f in frames if (m := median_of(n, f))]
    ablation = []
    for d in DRAFTS:
        short, long = median_of(d.name, frames[0]), median_of(d.name, frames[-1])
        if short is None:  # not measured (--drafts)
            continue
        ablation.append({"draft": d.name, "mtp": d.mtp, "ivsb": d.ivsb, "vata": d.vata,
                         "tau_short": short["tau"], "tau_long": long["tau"],
                         "visual_short": short["visual"], "visual_long": long["visual"],
                         "identical": short["identical"] and long["identical"]})
    return {"robustness": robustness, "ablation": ablation,
            "labels": {n: KINDS[n].label for n in names}}


def print_tables(tables: dict, args) -> None:
    labels = tables["labels"]
    print(f"\nRobustness: median over {args.videos} held-out videos, chain {args.chain}, greedy")
    print("(DSR: decoding alone; ESR: end to end, both prefills counted; prefill: the target's / the draft's, s)")
    print(f"{'draft':<38} {'visual':>6} {'tau':>5} {'DSR':>6} {'ESR':>6} {'cycle':>6} {'prefill':>7} {'draft':>7} "
          f"{'identical':>9}")
    for r in tables["robustness"]:
        print(f"{labels[r['draft']]:<38} {r['visual']:>6} {r['tau']:>5.2f} {r['dsr']:>5.2f}x {r['esr']:>5.2f}x "
              f"{r['cycle_steps']:>6.2f} {r['prefill_s']:>7.2f} {r['draft_prefill_s']:>7.2f} {str(r['identical']):>9}")
    a = tables["ablation"]
    if not a:
        return
    print(f"\nAblation: tau at {a[0]['visual_short']} and {a[0]['visual_long']} visual tokens")
    print(f"{'MTP':>4} {'IVSB':>4} {'VATA':>4} {'tau short':>9} {'tau long':>9} {'identical':>9}  draft")
    mark = lambda on: "yes" if on else "-"  # noqa: E731
    for r in a:
        print(f"{mark(r['mtp']):>4} {mark(r['ivsb']):>4} {mark(r['vata']):>4} {r['tau_short']:>9.2f} "
              f"{r['tau_long']:>9.2f} {str(r['identical']):>9}  {r['draft']}")
    sys.stdout.flush()


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise UserError("--plot draws with matplotlib, which is not installed: pip install -e \".[plot]\" "
                        "-c constraints.txt") from e


def plot(tables: dict, path: str, chain: int) -> None:
    """DSR against visual tokens, one line per draft of the robustness table, the 1x line dashed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["draft"] for r in tables["robustness"]):
        rows = [r for r in tables["robustness"] if r["draft"] == name]
        ax.plot([r["visual"] for r in rows], [r["dsr"] for r in rows], marker="o", label=tables["labels"][name])
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("visual tokens")
    ax.set_ylabel("decoding speedup (DSR)")
    ax.set_title(f"Embedded demo target, chain {chain}, greedy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
