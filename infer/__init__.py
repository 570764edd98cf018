"""Inference: `infer.generate(target, prompts, video=...)`, and `infer.stream(...)` for the same tokens as they
are accepted. `python -m infer` is the command line (see `infer/cli.py`)."""

from infer.generation import GenerateOutput, generate
from infer.streaming import TokenStream, stream

__all__ = ["GenerateOutput", "TokenStream", "generate", "stream"]
