"""Chat prompts from a converted checkpoint's own tokenizer and chat template.

`python -m convert target` copies the HF checkpoint's tokenizer and processor files (tokenizer.json,
tokenizer_config.json, chat_template.jinja/json, generation_config.json, ...) into `<converted>/tokenizer/`.
A prompt is the chat template rendered over a conversation whose first user turn carries the video, then
tokenized; the family's rule (`sparrow_jax.processing.video_prompt`) expands the video placeholder.

    tok = load_tokenizer("ckpt/llava-ov-7b")
    ids = tok.prompt_ids(["Describe the video."], system="You are a helpful assistant.")
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

TOKENIZER_DIR = "tokenizer"
# Tokenizer and processor files of an HF checkpoint that prompting (and a later export) may need.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json", "generation_config.json",
    "preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
)
_TOKENIZER_CORE = ("tokenizer.json", "tokenizer.model", "vocab.json")


def copy_tokenizer_files(src, out) -> list[str]:
    """Copy the tokenizer/processor files found in directory `src` to directory `out`; their names."""
    found = [name for name in TOKENIZER_FILES if (Path(src) / name).is_file()]
    if found:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in found:
            shutil.copyfile(Path(src) / name, out / name)
    return found


def chat_messages(turns, system: str | None = None, video: bool = True) -> list[dict]:
    """HF-style chat messages: an optional system turn, then `turns` (a string is a user turn; a (role, text)
    pair any turn). The first user turn carries the video, ahead of its text, as the model cards show."""
    messages = [] if system is None else [{"role": "system", "content": [{"type": "text", "text": system}]}]
    for turn in [turns] if isinstance(turns, str) else turns:
        role, text = ("user", turn) if isinstance(turn, str) else turn
        content = [{"type": "text", "text": text}]
        if video and role == "user":
            content.insert(0, {"type": "video"})
            video = False
        messages.append({"role": role, "content": content})
    if video:  # still to place: no user turn took it
        raise ValueError("the conversation has no user turn to carry the video (--prompt TEXT)")
    return messages


@dataclasses.dataclass
class ChatTokenizer:
    tokenizer: object  # a transformers tokenizer
    chat_template: str
    eos_token_ids: list[int]
    pad_token_id: int

    def render(self, messages, add_generation_prompt: bool = True) -> str:
        """`chat_messages` rendered with the chat template (training renders its conversations here too)."""
        return self.tokenizer.apply_chat_template(list(messages), chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def prompt_text(self, turns, system: str | None = None, video: bool = True) -> str:
        return self.render(chat_messages(turns, system, video))

    def prompt_ids(self, turns, system: str | None = None, video: bool = True) -> list[int]:
        """Token ids of the rendered conversation, ending with the assistant's generation prompt; the video is
        one placeholder token, still to be expanded (`sparrow_jax.processing.video_prompt`)."""
        return self.message_ids(chat_messages(turns, system, video))

    def message_ids(self, messages) -> list[int]:
        """`prompt_ids` of messages already in `chat_messages`' form."""
        return list(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def stop_sequences(self, stop: str) -> list[list[int]]:
        """Token sequences whose text ends with `stop`, for the decode loops to stop on: the string's own
        tokens and, for a string that does not start with whitespace, those of the string after a space
        (BPE tokenizers fold a leading space into the next token, so " done" mid-text is not "done"'s
        tokens). A model may still spell the string with other tokens; the server also cuts the text at
        the first stop string on the host, and the loop then ends at EOS or the token limit."""
        spellings = [stop] + ([] if stop[:1].isspace() else [" " + stop])
        out = []
        for text in spellings:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if ids and ids not in out and self.tokenizer.decode(ids).endswith(stop):
                out.append(ids)
        return out


def tokenizer_dir(checkpoint) -> Path:
    """Where the tokenizer files of a converted checkpoint live (an HF directory is accepted as is)."""
    path = Path(checkpoint)
    return path / TOKENIZER_DIR if (path / TOKENIZER_DIR).is_dir() else path


def load_tokenizer(checkpoint) -> ChatTokenizer:
    """The tokenizer and chat template of a converted checkpoint (or of an HF model directory)."""
    path = tokenizer_dir(checkpoint)
    if not any((path / name).is_file() for name in _TOKENIZER_CORE):
        raise FileNotFoundError(
            f"no tokenizer in {checkpoint} (looked for {', '.join(_TOKENIZER_CORE)} in {path}): convert the "
            "checkpoint again with `python -m convert target --src HF_DIR --dst CKPT --overwrite`, which copies "
            "the tokenizer files, or pass --tokenizer HF_DIR"
        )
    tokenizer = _auto_tokenizer().from_pretrained(str(path))
    template = _chat_template(path) or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(f"the tokenizer in {path} has no chat template; copy the model's chat_template.jinja "
                         "(or chat_template.json) there from the Hugging Face checkpoint")
    return ChatTokenizer(tokenizer, template, _eos_ids(path, tokenizer), tokenizer.pad_token_id or 0)


def _no_torch_note(record) -> bool:
    # transformers announces at import that without PyTorch "Models won't be available and only tokenizers,
    # configuration and file/data utilities can be used" (5.x: "PyTorch was not found. ..."; 4.x: "None of
    # PyTorch, TensorFlow >= 2.0, or Flax have been found. ..."). Tokenizers are all we use, and the runtime
    # install has no torch on purpose, so on every normal run that line would only mislead.
    return "Models won't be available" not in record.getMessage()


def _auto_tokenizer():
    """transformers.AutoTokenizer, imported without its no-PyTorch note; its other messages stay."""
    import logging

    logging.getLogger("transformers").addFilter(_no_torch_note)  # the logger it warns with; added once
    from transformers import AutoTokenizer  # imported here: loading a checkpoint does not need transformers

    return AutoTokenizer


# The config fields of the ids a prompt writes a video with, in order (those the family has), and their names.
VIDEO_TOKENS = {"vision_start_token_id": "vision start", "video_token_id": "video placeholder",
                "vision_end_token_id": "vision end"}


def tokenizer_mismatch(tok: ChatTokenizer, config) -> str | None:
    """What in `tok` does not fit the target `config` (None when all does): more tokens than the target's
    vocabulary, or a chat template that writes the video with other ids than the target's video placeholder
    (and, for Qwen2.5-VL, vision start / end) tokens."""
    vocab = config.text.vocab_size
    if len(tok.tokenizer) > vocab:
        return f"it has {len(tok.tokenizer)} tokens, more than the checkpoint's vocabulary of {vocab}"
    fields = [f for f in VIDEO_TOKENS if hasattr(config, f)]
    want = [getattr(config, f) for f in fields]
    turns = ["describe the video"]
    ids = tok.prompt_ids(turns)
    wrote = _inserted(ids, tok.prompt_ids(turns, video=False))  # the ids the template wrote for the video
    if ids.count(config.video_token_id) == 1 and _contains(wrote, want):
        return None
    names = ", ".join(VIDEO_TOKENS[f] for f in fields)

    def show(part, where=""):
        tokens = " ".join(repr(t) for t in tok.tokenizer.convert_ids_to_tokens(part))
        return f"id{'s' * (len(part) != 1)} {', '.join(map(str, part))} ({tokens}{where})"

    return (f"the checkpoint's {names} {'is' if len(want) == 1 else 'are'} {show(want, ' in this tokenizer')}, "
            f"but the tokenizer's chat template writes the video as {show(wrote)}")


def _inserted(longer: list[int], shorter: list[int]) -> list[int]:
    """The ids `longer` has in place of `shorter`'s: what remains once their common prefix and suffix go."""
    start = 0
    while start < len(shorter) and longer[start] == shorter[start]:
        start += 1
    end = 0
    while end < len(shorter) - start and longer[-1 - end] == shorter[-1 - end]:
        end += 1
    return longer[start:len(longer) - end]


def _contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def _chat_template(path: Path) -> str | None:
    """The processor's template (it renders video turns) before the tokenizer's own."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


def _eos_ids(path: Path, tokenizer) -> list[int]:
    """generation_config.json's eos_token_id (one or a list), else the tokenizer's EOS."""
    ids = []
    if (path / "generation_config.json").is_file():
        eos = json.loads((path / "generation_config.json").read_text()).get("eos_token_id")
        ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if not ids and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    return ids
