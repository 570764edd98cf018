"""sparrow-jax: Sparrow speculative decoding for video LLMs in JAX/Flax.

    from sparrow_jax import load
    target = load("converted/llava-ov")        # a converted checkpoint (python -m convert target ...)
"""

from sparrow_jax.checkpoint import load

__all__ = ["load"]
