"""Training data: a JSONL manifest, per-example encoding, and a grain loader that shards per host,
shuffles with a seed and saves/restores its exact position.

Manifest: one JSON object per line; paths are relative to the manifest's directory.
    {"id": "clip-7",                                   # optional
     "video": "videos/clip-7.mp4",                     # a video file (decoded with PyAV), or
     "frames": "frames/clip-7.npy" | ["f0.jpg", ...],  # uint8 [T, H, W, 3] frames / image files; or neither
     "num_frames": 1600,                               # optional: frames to sample here (else data.num_frames)
     "conversations": [{"role": "user", "content": "What happens?"},
                       {"role": "assistant", "content": "A dog catches a ball."}]}
ShareGPT-style turns ({"from": "human" | "gpt", "value": ...}) are accepted too. The video belongs to
the first user turn; the chat template places it, as at inference (see `messages`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import grain
import jax
import numpy as np

from sparrow_jax.config import LlavaOnevisionConfig
from sparrow_jax.inputs import prepare, visual_token_ids
# Moved to the library (infer.batch reads manifests too); train.data.* names kept.
from sparrow_jax.manifest import PLACEHOLDER, ROLES, messages, missing_media, read_manifest  # noqa: F401
from sparrow_jax.processing import expand_video_placeholder, frame_size, video_prompt
from sparrow_jax.video import Sampling, read_video, sample_indices
from train.tokenizer import tokenize_conversation

def write_manifest(path, records) -> None:
    """Write `records` as a manifest, whole or not at all (a temporary file renamed into place)."""
    lines = [json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) for r in records]
    write_atomic(path, "\n".join(lines) + "\n")


def write_atomic(path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed into place: a reader (or a run killed half-way)
    sees the old file or the new one, never part of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def record_frames(rec: dict, num_frames: int) -> int:
    """Frames sampled from a record's video: the record's own "num_frames" when it sets one (a manifest
    that mixes video lengths), else `num_frames` (the run's setting)."""
    return int(rec.get("num_frames", num_frames))


def frame_batches(records, num_frames: int, batch_size: int) -> list[list[int]]:
    """Indices of `records` in batches of at most `batch_size` whose records all sample the same number of
    frames (in the manifest's order when every record uses `num_frames`)."""
    frames_of = lambda i: record_frames(records[i], num_frames)  # noqa: E731
    groups = [list(g) for _, g in itertools.groupby(sorted(range(len(records)), key=frames_of), key=frames_of)]
    return [g[i: i + batch_size] for g in groups for i in range(0, len(g), batch_size)]


def load_frames(rec: dict, num_frames: int, target_config) -> np.ndarray | None:
    """uint8 [num_frames, H, W, 3] frames of a record (its own "num_frames" if set, see `record_frames`),
    or None for a text-only record.

    Frames are picked as inference picks them (`sparrow_jax.video`: uniform over the duration, from the
    first frame), and a video file is decoded frame by frame, resized to the target's frame size as it
    goes, so a long video never sits in memory whole. A video with fewer frames than `num_frames` has
    them repeated in order, so that every row of a batch holds `num_frames`."""
    base = Path(rec.get("_base", "."))
    num_frames = record_frames(rec, num_frames)
    sampling = Sampling(num_frames=num_frames)
    if "video" in rec:
        frames = read_video(base / rec["video"], sampling, lambda h, w: frame_size(target_config, h, w)).frames
    elif "frames" in rec:
        if isinstance(rec["frames"], str):
            frames = np.load(base / rec["frames"])
        else:
            from PIL import Image

            frames = np.stack([np.asarray(Image.open(base / f).convert("RGB")) for f in rec["frames"]])
        frames = frames[sample_indices(len(frames), None, sampling)]
    else:
        return None
    return frames[np.arange(num_frames) * len(frames) // num_frames]


def encode(rec: dict, tok, target_config, seq_len: int, num_frames: int, fps=None, system_prompt: str = "",
           layout_only: bool = False) -> dict:
    """One record -> {ids [n], assistant [n] bool, video (the family's per-row video input or None)}, n <= seq_len.

    `layout_only` (offline mode, where stored features replace the target): the tokens without the pixels;
    a LLaVA-OneVision video is then not decoded at all (its token count follows from num_frames alone)."""
    skip = layout_only and isinstance(target_config, LlavaOnevisionConfig) and ("video" in rec or "frames" in rec)
    frames = None if skip else load_frames(rec, num_frames, target_config)
    has_video = skip or frames is not None
    ids, assistant = tokenize_conversation(tok, messages(rec, system_prompt, video=has_video))
    video = None
    if has_video:
        vid = target_config.video_token_id
        if skip:  # the layout follows from the frame count alone
            count = target_config.num_video_tokens(record_frames(rec, num_frames))
            expanded = expand_video_placeholder(ids, vid, count)
        else:
            expanded, video = video_prompt(target_config, ids, frames, fps=fps)
        video = None if layout_only else video
        if np.sum(ids == vid) != 1:
            raise ValueError(f"record {rec.get('id', '?')}: expected one video placeholder, found {int(np.sum(ids == vid))}")
        counts = np.where(ids == vid, len(expanded) - len(ids) + 1, 1)
        ids, assistant = np.asarray(expanded, np.int32), np.repeat(assistant, counts)
        last_visual = int(np.flatnonzero(ids == vid)[-1])
        if last_visual >= seq_len:
            raise ValueError(f"record {rec.get('id', '?')}: the video alone needs {last_visual + 1} tokens, more than "
                             f"data.seq_len={seq_len}; raise seq_len or lower num_frames")
    return {"ids": ids[:seq_len], "assistant": assistant[:seq_len], "video": video}


def collate(examples, target_config, seq_len: int, pad_id: int) -> dict:
    """Right-pad a list of encoded examples to [B, seq_len] host arrays (positions: [B, L] or [B, 3, L])."""
    rows = [e["ids"] for e in examples]
    videos = [e["video"] for e in examples]
    videos = None if all(v is None for v in videos) else videos
    layout = target_config
    if "features" in examples[0] and videos is None and isinstance(target_config, LlavaOnevisionConfig):
        layout = target_config.text  # video tokens without pixels (encode's layout_only): 1-D positions as for text
    b = prepare(layout, rows, videos, pad_id=pad_id, multiple=seq_len)
    assistant = np.zeros(b.input_ids.shape, bool)
    for i, e in enumerate(examples):
        assistant[i, : len(e["assistant"])] = e["assistant"]
    positions = b.positions if b.positions.ndim == 2 else np.moveaxis(b.positions, 0, 1)  # batch first
    out = {
        "input_ids": b.input_ids, "positions": positions, "lengths": b.lengths, "assistant": assistant,
        "visual": np.isin(b.input_ids, visual_token_ids(target_config)), "video": b.video,
    }
    if "features" in examples[0]:  # offline mode: the stored target states replace the target and its video
        feats = np.zeros((*b.input_ids.shape, examples[0]["features"].shape[-1]), examples[0]["features"].dtype)
        for i, e in enumerate(examples):
            feats[i, : len(e["features"])] = e["features"]
        out.update(features=feats, video=None)
    return out


def with_features(example: dict, rec: dict, features_dir) -> dict:
    """Attach the record's stored target states (see train/features.py); they must match its tokens."""
    feats = np.load(Path(features_dir) / f"{rec['_index']:08d}.npy")
    if len(feats) != len(example["ids"]):
        raise ValueError(f"record {rec.get('id', rec['_index'])}: stored features cover {len(feats)} tokens, the "
                         f"record encodes to {len(example['ids'])}; re-run python -m train.features")
    return {**example, "features": feats}


def stretch_positions(positions, visual, frames: int, tokens_per_frame: int, stretch: np.ndarray) -> np.ndarray:
    """1-D positions [B, L] with row i's frames spread `stretch[i]` times as far apart, as if its video had
    stretch[i] x frames frames of which these are every stretch[i]-th: the text after the video sits as far
    from it as after a long video, so long-video RoPE distances train on short rows."""
    frame = np.clip((np.cumsum(visual, axis=1) - 1) // tokens_per_frame, 0, frames - 1)  # text: its neighbours'
    return positions + (np.asarray(stretch)[:, None] - 1) * tokens_per_frame * frame


def batch_settings(cfg, step: int, seed: int, rows: int, part: int = 0):
    """(num_frames, seq_len, per-row stretch) of process `part`'s rows of the `step`-th batch. The shape is
    drawn from the step number alone, so every process draws the same one for the global batch; the
    stretches also from `part`, so processes' rows differ. A resumed loader draws what the uninterrupted
    one would have."""
    frames, seq_len = cfg.buckets[np.random.default_rng([seed, step]).integers(len(cfg.buckets))]
    rng = np.random.default_rng([seed, step, part])
    stretch = np.ones(rows, np.int64)
    if cfg.stretch_frames > frames:
        span = np.exp(rng.uniform(0, np.log(cfg.stretch_frames / frames), rows))
        keep = rng.random(rows) < 0.5  # half the rows keep the positions inference gives them
        stretch = np.where(keep, 1, np.maximum(1, np.floor(span))).astype(np.int64)
    return frames, seq_len, stretch


def loader(records, tok, target_config, cfg, local_batch: int, seed: int, features_dir=None, shard=None):
    """An endless grain dataset of local batches over `records`, reshuffled every epoch with `seed`; each
    JAX process (`shard` = (index, count), default this process) reads every count-th record of the
    stream. `iter(loader)` has get_state()/set_state() for exact resumption (saved in checkpoints).
    Batch k draws its frame count from cfg.buckets by k (see batch_settings); the next batches are
    encoded in a background thread while a step trains. With `features_dir`, each example carries its
    stored target states (offline mode)."""
    if cfg.stretch_frames and target_config.model_type != "llava_onevision":
        raise ValueError("data.stretch_frames spreads 1-D RoPE positions; it is for LLaVA-OneVision targets, "
                         f"not {target_config.model_type} (M-RoPE already spaces frames by time)")
    if not features_dir and any("num_frames" in r for r in records):
        raise ValueError("records that set their own num_frames need offline features (data.features_dir): "
                         "online, the rows of a batch share one video length")
    index, count = shard or (jax.process_index(), jax.process_count())

    def batch(step, recs):
        frames, seq_len, stretch = batch_settings(cfg, step, seed, len(recs), index)
        examples = [encode(r, tok, target_config, seq_len, frames, cfg.fps, cfg.system_prompt, bool(features_dir))
                    for r in recs]
        if features_dir:
            examples = [with_features(e, r, features_dir) for e, r in zip(examples, recs)]
        out = collate(examples, target_config, seq_len, tok.pad_id)
        if cfg.stretch_frames:
            out["positions"] = stretch_positions(out["positions"], out["visual"], frames,
                                                 target_config.pooled_grid ** 2, stretch)
        return out

    ds = grain.MapDataset.source(records).shuffle(seed=seed).repeat()[index::count]
    ds = ds.batch(local_batch, drop_remainder=True, batch_fn=list).map_with_index(batch)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))


def absolute_paths(records) -> list[dict]:
    """Records with their media paths made absolute (for a manifest written to another directory)."""
    out = []
    for r in records:
        r = dict(r)
        base = Path(r.get("_base", "."))
        if "video" in r:
            r["video"] = str(base / r["video"])
        if isinstance(r.get("frames"), str):
            r["frames"] = str(base / r["frames"])
        elif isinstance(r.get("frames"), list):
            r["frames"] = [str(base / f) for f in r["frames"]]
        out.append(r)
    return out
