"""A small byte-level BPE tokenizer trained on the synthetic corpus, with a Qwen2-style chat template,
saved in the Hugging Face layout (tokenizer.json + tokenizer_config.json) so the shipped model loads
exactly like a converted real checkpoint."""

from __future__ import annotations

import json
import pathlib

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, EOS, START, END, VIDEO, IMAGE = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|im_end|>", "<video>", "<image>"
SPECIALS = (PAD, START, END, VIDEO, IMAGE)  # ids 0..4
# Content is a string or a list of {"type": "video"} / {"type": "text", "text": ...} parts, as in HF
# multimodal processors; a video part becomes the placeholder the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<video>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus(count: int = 2000):
    """Chat-formatted conversations of scenes 0..count-1 (the held-out scenes come later)."""
    from sparrow_jax.synthetic.dataset import example

    for seed in range(count):
        _, question, answer = example(seed)
        yield f"{START}user\n{VIDEO}\n{question}{END}\n{START}assistant\n{answer}{END}\n"


def train_tokenizer(texts, vocab_size: int = 512) -> Tokenizer:
    """Byte-level BPE (any text encodes; the corpus' words become single tokens)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def save_tokenizer(tok: Tokenizer, out) -> None:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE,
        "bos_token": None, "eos_token": EOS, "pad_token": PAD, "unk_token": None,
        "extra_special_tokens": {"video_token": VIDEO, "image_token": IMAGE}, "model_max_length": 65536,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None) -> int:
    from sparrow_jax.cli_help import ArgumentParser

    from sparrow_jax.errors import add_debug_flag, run_cli

    p = ArgumentParser(prog="python -m train.synthetic.tokenizer", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output directory (tokenizer.json, tokenizer_config.json)")
    p.add_argument("scenes", nargs="?", type=int, default=2000, help="scenes whose descriptions train it")
    add_debug_flag(p)
    args = p.parse_args(argv)

    def run() -> int:
        save_tokenizer(train_tokenizer(corpus(args.scenes)), args.out)
        print(f"wrote {args.out}/tokenizer.json")
        return 0

    return run_cli(run, args.debug)


if __name__ == "__main__":  # python -m train.synthetic.tokenizer OUT_DIR [SCENES]
    raise SystemExit(main())
