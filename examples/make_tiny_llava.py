"""Write a tiny random LLaVA-OneVision checkpoint in the Hugging Face layout (no hub access needed), with a
tiny word-level tokenizer and chat template (examples/tiny_tokenizer.py).

    python examples/make_tiny_llava.py /tmp/tiny-llava-hf
Needs the test extra (torch + transformers): pip install -e ".[test]".
"""

import sys

import torch
from tiny_tokenizer import write_tiny_tokenizer
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

VIDEO_TOKEN = 120


def main(out: str) -> None:
    config = LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=56, patch_size=14, vision_use_head=False,
        ),
        video_token_index=VIDEO_TOKEN, image_token_index=121, initializer_range=0.1,
    )
    torch.manual_seed(0)
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(out)
    write_tiny_tokenizer(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-llava-hf")
