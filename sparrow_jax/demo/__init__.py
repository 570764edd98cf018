"""The embedded demo pair, shipped with the package: a small LLaVA-OneVision-architecture target trained by
this project to describe synthetic videos, its Sparrow draft, and held-out sample videos with their
ground truth. How they were made (commands, run times, figures): README.md beside this file."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent
TARGET = ROOT / "target"  # converted target checkpoint (tokenizer/ inside)
DRAFT = ROOT / "draft"  # converted Sparrow draft
# The all-token (EAGLE/MSD-style) baseline draft of `infer.bench tables`: reads every prompt position, visual
# ones included (train/configs/tables/none.json); generate with draft_sees_visual=True.
BASELINE = ROOT / "baseline"
VIDEOS = ROOT / "videos"  # held-out scenes (seeds never trained on) and manifest.jsonl
FRAMES = 8  # frames per shipped video, the target's main training length (16 visual tokens each)
QUESTION = "Describe the video."


def samples() -> list[dict]:
    """The held-out manifest records: video (absolute path), seed, conversations (the ground truth), facts."""
    records = [json.loads(line) for line in (VIDEOS / "manifest.jsonl").read_text().splitlines() if line]
    for r in records:
        r["video"] = str(VIDEOS / r["video"])
    return records
