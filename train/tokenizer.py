"""Chat tokenization for training: the target's chat template, and which tokens are the assistant's.

`ByteChatTokenizer` is a built-in ChatML tokenizer over bytes for tiny offline runs (no files needed);
`HFChatTokenizer` wraps the target's Hugging Face tokenizer and its own chat template.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


class ByteChatTokenizer:
    """Token ids 0-255 are bytes (UTF-8, surrogate-escaped so any id sequence round-trips), then specials."""

    SPECIALS = ("<|im_start|>", "<|im_end|>", "<video>", "<image>", "<pad>", "<|vision_start|>", "<|vision_end|>")
    vocab_size = 256 + len(SPECIALS)
    video_placeholder = "<video>"

    def __init__(self, video_placeholder: str = "<video>"):
        self.video_placeholder = video_placeholder  # Qwen2.5-VL: "<|vision_start|><video><|vision_end|>"
        self.special_ids = {s: 256 + i for i, s in enumerate(self.SPECIALS)}
        self._split = re.compile("(" + "|".join(re.escape(s) for s in self.SPECIALS) + ")")
        self.eos_ids = [self.special_ids["<|im_end|>"]]
        self.pad_id = self.special_ids["<pad>"]
        self.video_token_id = self.special_ids["<video>"]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self._split.split(text):
            ids.extend([self.special_ids[part]] if part in self.special_ids else part.encode("utf-8", "surrogateescape"))
        return ids

    def decode(self, ids) -> str:
        names = {v: k for k, v in self.special_ids.items()}
        out, run = [], bytearray()
        for i in map(int, ids):
            if i < 256:
                run.append(i)
                continue
            out.append(run.decode("utf-8", "surrogateescape"))
            run = bytearray()
            out.append(names.get(i, ""))
        out.append(run.decode("utf-8", "surrogateescape"))
        return "".join(out)

    def render(self, messages, add_generation_prompt: bool = False) -> list[int]:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return self.encode(text + ("<|im_start|>assistant\n" if add_generation_prompt else ""))


class HFChatTokenizer:
    """The target's Hugging Face tokenizer (a directory with tokenizer files and a chat template)."""

    def __init__(self, path: str, video_placeholder: str = "<video>"):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        if not self.tok.chat_template:
            raise ValueError(f"the tokenizer in {path} has no chat template")
        self.video_placeholder = video_placeholder
        eos = {self.tok.eos_token_id, self.tok.convert_tokens_to_ids("<|im_end|>")}
        self.eos_ids = sorted(i for i in eos if isinstance(i, int) and i >= 0 and i != self.tok.unk_token_id)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.vocab_size = len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=False)

    def render(self, messages, add_generation_prompt: bool = False) -> list[int]:
        text = self.tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
        return self.encode(text)


def load(name: str, video_placeholder: str = ""):
    """The tokenizer named by `data.tokenizer`; `video_placeholder` is the text standing for the video in
    the first user turn (empty: "<video>", LLaVA-OneVision's; Qwen2.5-VL's is
    "<|vision_start|><|video_pad|><|vision_end|>")."""
    video_placeholder = video_placeholder or "<video>"
    if name == "byte":
        return ByteChatTokenizer(video_placeholder)
    if not (Path(name) / "tokenizer_config.json").is_file():  # not transformers' hub-name error
        raise FileNotFoundError(f"data.tokenizer {name!r} is neither 'byte' nor a directory holding an HF "
                                "tokenizer (tokenizer.json, tokenizer_config.json)")
    return HFChatTokenizer(name, video_placeholder)


def tokenize_conversation(tok, messages) -> tuple[np.ndarray, np.ndarray]:
    """(ids, assistant mask) of a whole conversation rendered with the chat template. An assistant turn's
    tokens are those the template adds after the generation prompt of the turns before it (its content and
    end-of-turn token; not the role header)."""
    ids = tok.render(messages)
    assistant = np.zeros(len(ids), bool)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = tok.render(messages[:i], add_generation_prompt=True)
        start = len(prefix)
        stop = len(tok.render(messages[: i + 1])) if i + 1 < len(messages) else len(ids)
        if ids[:start] != prefix:
            raise ValueError("the chat template does not render conversations by prefix; cannot find assistant tokens")
        assistant[start:stop] = True
    return np.asarray(ids, np.int32), assistant
