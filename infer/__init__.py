"""Inference apps: `python -m infer` (the command line, `infer/cli.py`), the demo and the benchmarks.
`infer.generate(target, prompts, video=...)` and `infer.stream(...)` (the same tokens as they are accepted)
are the library's (`sparrow_jax.generation`), re-exported here as the documented entry points."""

from sparrow_jax.generation import GenerateOutput, TokenStream, generate, stream

__all__ = ["GenerateOutput", "TokenStream", "generate", "stream"]
