"""Offline features: run the frozen target once over the manifest and store only what the draft needs,
one float array [tokens, H] per record: the target's mid-layer states at visual positions and its final
normed states elsewhere (the soft labels follow from the lm_head, so logits are not stored).

    python -m train.features --config FILE [key=value ...]     # writes data.features_dir
    python -m train.main --config FILE data.features_dir=DIR   # trains without running the target

Stored features are tied to the encoding settings (seq_len, frames, capture layer, manifest); the
trainer checks `meta.json` against its config. Writing runs in one process; training from stored
features runs on any number (each host reads its shard's files).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from sparrow_jax.inputs import bucket
from train import data
from train.config import TrainConfig
from train.prepare import capture_layer, load_target, prepare_data
from train.step import draft_states

META = "meta.json"


def meta(cfg: TrainConfig, target, count: int) -> dict:
    d = cfg.data
    return {"records": count, "seq_len": d.seq_len, "num_frames": d.num_frames, "fps": d.fps,
            "system_prompt": d.system_prompt, "tokenizer": d.tokenizer, "video_placeholder": d.video_placeholder,
            "capture_layer": capture_layer(cfg, target), "target": str(Path(cfg.target.path).absolute())}


def check_meta(cfg: TrainConfig, target, count: int) -> None:
    path = Path(cfg.data.features_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: store features first with python -m train.features")
    stored, want = json.loads(path.read_text()), meta(cfg, target, count)
    if not stored.pop("complete", True):
        raise ValueError(f"the features in {cfg.data.features_dir} are incomplete (an interrupted python -m "
                         "train.features): run it again to finish them")
    diff = {k: (stored.get(k), v) for k, v in want.items() if stored.get(k) != v}
    if diff:
        raise ValueError(f"stored features in {cfg.data.features_dir} were made with other settings "
                         f"(stored, now): {diff}; re-run python -m train.features")


def write_features(cfg: TrainConfig, target, tok, records, batch_size: int = 8, progress: bool = True) -> None:
    out = Path(cfg.data.features_dir)
    out.mkdir(parents=True, exist_ok=True)
    # meta.json says "complete" only at the end; a run again with the same settings keeps what an
    # interrupted one wrote (each file is renamed into place whole) and writes the rest.
    settings = meta(cfg, target, len(records))
    stored = json.loads((out / META).read_text()) if (out / META).is_file() else {}
    resume = {k: v for k, v in stored.items() if k != "complete"} == settings
    (out / META).write_text(json.dumps({**settings, "complete": False}, indent=2))
    name = lambda rec: out / f"{rec['_index']:08d}.npy"  # noqa: E731
    if resume:
        records = [r for r in records if not name(r).is_file()]
    graphdef, params = nnx.split(target)
    k = capture_layer(cfg, target)
    forward = jax.jit(lambda p, b: draft_states(nnx.merge(graphdef, p), b, k))
    [(frames, seq_len)] = cfg.data.buckets  # one setting (checked by TrainConfig)
    for indices in tqdm(data.frame_batches(records, frames, batch_size), desc="features", disable=not progress):
        chunk = [records[i] for i in indices]
        examples = [data.encode(r, tok, target.config, seq_len, frames, cfg.data.fps, cfg.data.system_prompt)
                    for r in chunk]
        examples += examples[-1:] * (batch_size - len(examples))  # one shape per video length, one compile each
        # Rows as long as this batch needs (records may set shorter videos than data.num_frames): the
        # states of a row do not depend on the padding after it.
        width = min(seq_len, bucket(max(len(e["ids"]) for e in examples), 256))
        batch = data.collate(examples, target.config, width, tok.pad_id)
        states = np.asarray(forward(params, jax.tree.map(jax.numpy.asarray, batch)))
        for i, rec in enumerate(chunk):
            tmp = out / f".{rec['_index']:08d}.npy.tmp"
            with open(tmp, "wb") as f:  # np.save on a path would append ".npy"
                np.save(f, states[i, : len(examples[i]["ids"])])
            tmp.replace(name(rec))
    (out / META).write_text(json.dumps({**settings, "complete": True}, indent=2))


def main(argv=None) -> int:
    from sparrow_jax.cli_help import ArgumentParser

    from sparrow_jax.errors import add_debug_flag, run_cli
    from train import config as cfgmod
    from train.tokenizer import load as load_tokenizer

    p = ArgumentParser(prog="python -m train.features", description=__doc__.split("\n\n")[0])
    cfgmod.add_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="records the target runs at once")
    add_debug_flag(p)
    args = p.parse_intermixed_args(argv)

    def go() -> int:
        cfg = cfgmod.load(args.config, args.overrides)
        if not cfg.data.features_dir:
            raise ValueError("set data.features_dir=DIR (where to store the features)")
        target = load_target(cfg.target)
        tok = load_tokenizer(cfg.data.tokenizer, cfg.data.video_placeholder)
        records = data.read_manifest(prepare_data(cfg, target, tok))
        write_features(cfg, target, tok, records, args.batch_size, cfg.log.progress)
        print(f"wrote {len(records)} feature files to {cfg.data.features_dir}")
        return 0

    return run_cli(go, args.debug)


if __name__ == "__main__":
    sys.exit(main())
