"""Inference: `infer.generate(target, prompts, video=...)`."""

from infer.generation import GenerateOutput, generate

__all__ = ["GenerateOutput", "generate"]
