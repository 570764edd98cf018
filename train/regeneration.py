"""The regeneration stage: rewrite each record's last answer with the target itself
(`sparrow_jax.generation.generate`), so that the draft learns the distribution it will meet at inference
(drafts trained on the target's own outputs accept more). `python -m train.regenerate` runs it alone."""

from __future__ import annotations

import copy

import numpy as np
from tqdm import tqdm

from sparrow_jax.generation import generate
from sparrow_jax.inputs import visual_token_ids
from sparrow_jax.processing import video_prompt
from train.data import frame_batches, load_frames, messages


def prompt_of(rec: dict, tok, target_config, cfg_data):
    """(prompt ids up to the generation prompt of the last assistant turn, video or None)."""
    frames = load_frames(rec, cfg_data.buckets[0][0], target_config)  # mixed lengths: the first num_frames
    msgs = messages(rec, cfg_data.system_prompt, video=frames is not None)
    if msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    ids = np.asarray(tok.render(msgs, add_generation_prompt=True), np.int32)
    if frames is None:
        return ids, None
    return video_prompt(target_config, ids, frames, fps=cfg_data.fps)


def regenerate(records, target, tok, cfg_data, cfg_regen, progress: bool = True) -> list[dict]:
    """Copies of `records` whose last assistant turn holds the target's own answer (appended if absent)."""
    out = [None] * len(records)
    for batch in tqdm(frame_batches(records, cfg_data.buckets[0][0], cfg_regen.batch_size), desc="regenerate",
                      disable=not progress):
        chunk, start = [records[i] for i in batch], batch[0]
        prompts = [prompt_of(r, tok, target.config, cfg_data) for r in chunk]
        videos = [v for _, v in prompts]
        videos = None if all(v is None for v in videos) else videos
        gen = generate(target, [p for p, _ in prompts], videos, max_new_tokens=cfg_regen.max_new_tokens,
                       temperature=cfg_regen.temperature, eos_token_id=tok.eos_ids, pad_id=tok.pad_id,
                       seed=start)
        stop = set(tok.eos_ids) | set(visual_token_ids(target.config))
        for at, rec, tokens in zip(batch, chunk, gen.token_ids()):
            # An answer ends at EOS; a (random) target that emits a visual placeholder ends there too,
            # since a placeholder in an answer would not match the video's features.
            cut = [i for i, t in enumerate(tokens) if t in stop]
            tokens = tokens[: cut[0]] if cut else tokens
            rec = copy.deepcopy(rec)
            turns = rec["conversations"]
            last = turns[-1]
            if last.get("role", last.get("from")) in ("assistant", "gpt"):
                last["content" if "content" in last else "value"] = tok.decode(tokens)
            else:
                turns.append({"role": "assistant", "content": tok.decode(tokens)})
            out[at] = rec
    return out
