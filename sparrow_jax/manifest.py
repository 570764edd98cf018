"""Manifests: JSONL, one record per line, paths relative to the manifest's directory (the training format,
also what `python -m infer.batch` reads), and a record's conversation as the chat messages inference renders.

    {"id": "clip-7", "video": "videos/clip-7.mp4", "num_frames": 16,      # id and num_frames optional
     "conversations": [{"role": "user", "content": "What happens?"}, {"role": "assistant", "content": "..."}]}

Training also takes "frames" (an .npy or image files) in place of "video" (`train/data.py`); ShareGPT-style
turns ({"from": "human" | "gpt", "value": ...}) are accepted too."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sparrow_jax.prompting import chat_messages

# A video or image placeholder written in the data's text: LLaVA's "<video>", Qwen's vision block.
PLACEHOLDER = re.compile(r"(<\|vision_start\|>)?<(video|image|\|video_pad\||\|image_pad\|)>(<\|vision_end\|>)?\n?")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_manifest(path) -> list[dict]:
    path = Path(path)
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from None
        if not isinstance(rec.get("conversations"), list) or not rec["conversations"]:
            raise ValueError(f"{path}:{n}: needs a non-empty 'conversations' list")
        rec["_base"] = str(path.parent.absolute())
        if missing := missing_media(rec):
            raise FileNotFoundError(f"{path}:{n}: {missing} does not exist (paths are relative to the "
                                    "manifest's directory)")
        rec["_index"] = len(records)  # names the record's stored features (offline mode)
        records.append(rec)
    if not records:
        raise ValueError(f"{path}: the manifest is empty")
    return records


def missing_media(rec: dict) -> str | None:
    """The first video or frame file a record names that does not exist (None when all do)."""
    base = Path(rec.get("_base", "."))
    frames = rec.get("frames", [])
    names = [rec["video"]] if "video" in rec else [frames] if isinstance(frames, str) else list(frames)
    return next((str(base / f) for f in names if not (base / f).is_file()), None)


def messages(rec: dict, system_prompt: str = "", video: bool = False) -> list[dict]:
    """The record's conversation as HF chat messages in the structured form inference renders
    (`sparrow_jax.prompting.chat_messages`); with `video`, the first user turn carries it, where the chat
    template puts it. A placeholder already written in that turn's text (`PLACEHOLDER`: LLaVA-style "<video>",
    Qwen-style "<|vision_start|><|video_pad|><|vision_end|>") is dropped, so the video is placed once;
    without a video it is an error."""
    turns = []
    for turn in rec["conversations"]:
        role = ROLES.get(turn.get("role", turn.get("from")))
        if role is None:
            raise ValueError(f"record {rec.get('id', '?')}: unknown role in turn {turn}")
        turns.append((role, turn.get("content", turn.get("value", ""))))
    first = next((i for i, (role, _) in enumerate(turns) if role == "user"), None)
    if video and first is None:
        raise ValueError(f"record {rec.get('id', '?')}: a video needs a user turn to sit in")
    if first is not None:
        text, found = PLACEHOLDER.subn("", turns[first][1], count=1)
        if found and not video:
            raise ValueError(f"record {rec.get('id', '?')}: its text holds a video placeholder, but the record "
                             "has no 'video' or 'frames'")
        turns[first] = ("user", text)
    return chat_messages(turns, system_prompt or None, video)
