"""A tiny word-level tokenizer with a LLaVA-OneVision-style chat template, for the tiny random checkpoints
(no model hub is reachable here). Writes the files `python -m convert target` carries over.

    python examples/tiny_tokenizer.py /tmp/tiny-llava-hf
"""

import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

SPECIAL = {120: "<video>", 121: "<image>", 122: "<|im_start|>", 123: "<|im_end|>", 124: "<|endoftext|>"}
WORDS = ["<unk>", "system", "user", "assistant", "describe", "the", "video", "what", "happens", "in", "a", "is",
         "and", "you", "are", "helpful", "short", "answer", "please", "then"]
# The processor's template (as llava-onevision-qwen2-*-ov-hf ships in chat_template.json): video first, then text.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
# The tokenizer's own template renders text only; the processor's one above takes precedence.
TEXT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
EOS = 123


def vocab(size: int = 128, special: dict[int, str] = SPECIAL) -> dict[str, int]:
    ids = {i: w for i, w in enumerate(WORDS)} | special
    return {ids.get(i, f"w{i}"): i for i in range(size)}


def write_tiny_tokenizer(directory, size: int = 128, special: dict[int, str] = SPECIAL) -> Path:
    """`special`: the special tokens by id (another model's tokenizer puts them elsewhere)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(vocab=vocab(size, special), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special.values()])
    tok.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>", "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "chat_template": TEXT_TEMPLATE}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    generation = directory / "generation_config.json"
    gen = json.loads(generation.read_text()) if generation.is_file() else {}
    generation.write_text(json.dumps(gen | {"eos_token_id": EOS}, indent=2))
    return directory


if __name__ == "__main__":
    print(f"wrote {write_tiny_tokenizer(sys.argv[1] if len(sys.argv) > 1 else '/tmp/tiny-llava-hf')}")
