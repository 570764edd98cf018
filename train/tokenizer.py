"""Chat tokenization for training: the target's chat template, and which tokens are the assistant's.

Conversations are HF chat messages in the structured form inference renders (`sparrow_jax.prompting.
chat_messages`: content parts, the video a part of the first user turn), so a training row is tokenized
exactly as the prompt the model meets at inference. `HFChatTokenizer` is the target's Hugging Face
tokenizer, loaded as inference loads it (`sparrow_jax.prompting.load_tokenizer`: same chat template, same
EOS); `ByteChatTokenizer` is a built-in ChatML tokenizer over bytes for tiny offline runs (no files needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


class ByteChatTokenizer:
    """Token ids 0-255 are bytes (UTF-8, surrogate-escaped so any id sequence round-trips), then specials."""

    SPECIALS = ("<|im_start|>", "<|im_end|>", "<video>", "<image>", "<pad>", "<|vision_start|>", "<|vision_end|>")
    vocab_size = 256 + len(SPECIALS)

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
        def content(parts):
            return "".join(self.video_placeholder + "\n" if p["type"] == "video" else p["text"] for p in parts)

        text = "".join(f"<|im_start|>{m['role']}\n{content(m['content'])}<|im_end|>\n" for m in messages)
        return self.encode(text + ("<|im_start|>assistant\n" if add_generation_prompt else ""))


class HFChatTokenizer:
    """The target's Hugging Face tokenizer (a directory with tokenizer files and a chat template)."""

    def __init__(self, path: str):
        from sparrow_jax.prompting import load_tokenizer

        self.chat = load_tokenizer(path)
        self.eos_ids, self.pad_id = self.chat.eos_token_ids, self.chat.pad_token_id
        self.vocab_size = len(self.chat.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.chat.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.chat.tokenizer.decode(list(map(int, ids)), skip_special_tokens=False)

    def render(self, messages, add_generation_prompt: bool = False) -> list[int]:
        return self.encode(self.chat.render(messages, add_generation_prompt))


def load(name: str, video_placeholder: str = ""):
    """The tokenizer named by `data.tokenizer`. `video_placeholder` is how the byte tokenizer writes the
    video (empty: "<video>", LLaVA-OneVision's; Qwen2.5-VL's is "<|vision_start|><video><|vision_end|>");
    an HF tokenizer's chat template writes it itself."""
    if name == "byte":
        return ByteChatTokenizer(video_placeholder or "<video>")
    if not (Path(name) / "tokenizer_config.json").is_file():  # not transformers' hub-name error
        raise FileNotFoundError(f"data.tokenizer {name!r} is neither 'byte' nor a directory holding an HF "
                                "tokenizer (tokenizer.json, tokenizer_config.json)")
    return HFChatTokenizer(name)


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
