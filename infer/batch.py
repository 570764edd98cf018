"""python -m infer.batch: answer every record of a manifest (the training format, `sparrow_jax.manifest`) with
the Engine, in batches, into a JSONL file that a re-run resumes.

    python -m infer.batch --demo --manifest sparrow_jax/demo/videos/manifest.jsonl --out answers.jsonl
    python -m infer.batch --target ckpt/llava-ov-7b --draft ckpt/sparrow-llava --manifest m.jsonl --out a.jsonl

Each record's conversation up to its last non-assistant turn is the prompt (a trailing assistant answer, the
ground truth, is dropped); its "video" is sampled by its own "num_frames" if set, else as the options say.
Out: one line per record, {"index", "id" (if the record has one), "text", "tokens", "stats" (its batch's)}.
Records are batched (--batch-size) with others of the same frame count and frame size. Each batch's lines
are appended and flushed to disk at once; a re-run skips the records already in --out (a partial last line
left by a kill is dropped and its record answered again).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

from infer.options import add_generation_options, add_model_options, generation_settings
from sparrow_jax.cli_help import ArgumentParser



def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m infer.batch", description=__doc__)
    add_model_options(p, "use the embedded demo pair (sparrow_jax/demo) with its settings")
    p.add_argument("--manifest", required=True, help="JSONL manifest (video + conversation per line)")
    p.add_argument("--out", required=True, help="JSONL answers; resumed when it exists")
    p.add_argument("--batch-size", type=int, default=4, help="records per batch")
    p.add_argument("--system", help="system prompt for every record (default: the chat template's own)")
    add_generation_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def done_indices(out: Path) -> set[int]:
    """Indices of the records already answered in `out`; a partial or unreadable last line (a killed run)
    is cut off the file."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # whole lines; each batch writes whole lines, then fsyncs
    if len(complete) < len(data):
        with out.open("r+b") as f:
            f.truncate(len(complete))
    done = set()
    for n, line in enumerate(complete.splitlines(), 1):
        try:
            done.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{out}:{n}: not an answer line of python -m infer.batch; remove it or pick another "
                             "--out") from None
    return done


def prompt_record(rec: dict) -> dict:
    """The record with its conversation cut after the last non-assistant turn."""
    turns = rec["conversations"]
    role = lambda t: t.get("role", t.get("from"))  # noqa: E731
    keep = max((i + 1 for i, t in enumerate(turns) if role(t) not in ("assistant", "gpt")), default=0)
    if not keep:
        raise ValueError(f"record {rec.get('id', rec['_index'])}: no user turn to answer")
    return dict(rec, conversations=turns[:keep])


def run(args) -> int:
    from tqdm import tqdm

    from infer.requests import Frontend
    from sparrow_jax.manifest import messages, read_manifest

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    front = Frontend.from_args(args)
    settings = generation_settings(args)
    max_new = front.settings(settings).max_new_tokens
    records = read_manifest(args.manifest)
    out = Path(args.out)
    done = done_indices(out)
    pending = [r for r in records if r["_index"] not in done]
    print(f"{len(done)} of {len(records)} records already in {out}; {len(pending)} to answer", file=sys.stderr)
    if not pending:
        return 0
    for rec in pending:
        if "video" not in rec:
            raise ValueError(f"record {rec.get('id', rec['_index'])}: python -m infer.batch needs a 'video' file")
    engine = front.engine()
    frames_of = lambda r: int(r.get("num_frames", 0))  # noqa: E731  (0: the options' sampling)
    groups = [list(g) for _, g in itertools.groupby(sorted(pending, key=frames_of), key=frames_of)]
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(pending), unit="record", disable=args.quiet, file=sys.stderr)
    tokens, t0 = 0, time.perf_counter()
    with out.open("a") as f:
        for group in groups:
            for start in range(0, len(group), args.batch_size):
                for batch in _by_shape(front, group[start:start + args.batch_size], messages, args.system, max_new):
                    lines, n = _answer(engine, batch, settings)
                    f.write("".join(lines))
                    f.flush()
                    os.fsync(f.fileno())
                    tokens += n
                    bar.set_postfix(tokens_per_s=f"{tokens / (time.perf_counter() - t0):.1f}", refresh=False)
                    bar.update(len(batch))
    bar.close()
    return 0


def _by_shape(front, recs, messages, system, max_new) -> list[list]:
    """The records' (record, ids, pixels) in batches of one frame count and size."""
    shapes: dict = {}
    for rec in recs:
        video = front.read(Path(rec["_base"]) / rec["video"], rec.get("num_frames"))
        ids, pixels = front.inputs(messages(prompt_record(rec), system or "", video=True), video)
        try:
            front.check_fits(ids, len(video.frames), max_new)
        except ValueError as e:
            raise ValueError(f"record {rec.get('id', rec['_index'])}: {e}") from None
        shapes.setdefault(video.frames.shape, []).append((rec, ids, pixels))
    return list(shapes.values())


def _answer(engine, batch, settings) -> tuple[list[str], int]:
    out = engine.generate([ids for _, ids, _ in batch], [pixels for _, _, pixels in batch], **settings)
    stats = {**out.stats, "batch_size": len(batch)}
    lines = []
    for (rec, _, _), text, ids in zip(batch, out.text, out.token_ids()):
        line = {"index": rec["_index"], **({"id": rec["id"]} if "id" in rec else {}), "text": text, "tokens": ids,
                "stats": stats}
        lines.append(json.dumps(line) + "\n")
    return lines, int(out.stats["new_tokens"])


def main(argv=None) -> int:
    from infer.requests import run_command

    return run_command(build_parser(), argv, run)


if __name__ == "__main__":
    sys.exit(main())
