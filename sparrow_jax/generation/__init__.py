"""Generation: host setup (`setup`), the target's prefill, autoregressive and speculative decoding
(`speculative/`), streaming and the side-by-side comparison. `infer.generate` / `infer.stream` re-export
the entry points.

    from sparrow_jax.generation import generate
    out = generate(target, [ids], [pixels], max_new_tokens=256, draft=draft)
"""

from sparrow_jax.generation.comparison import Comparison, compare, compare_drafts
from sparrow_jax.generation.engine import Engine, generate, stream
from sparrow_jax.generation.generation_config import GenerationConfig
from sparrow_jax.generation.setup import kv_slots_needed, proposal_shape
from sparrow_jax.generation.speculative.copy import CopyConfig
from sparrow_jax.generation.speculative.tree import TreeShape
from sparrow_jax.generation.state import DecodeConfig, GenerateOutput, PromptState
from sparrow_jax.generation.streaming import TokenStream

__all__ = ["Comparison", "CopyConfig", "DecodeConfig", "Engine", "GenerateOutput", "GenerationConfig", "PromptState",
           "TokenStream", "TreeShape", "compare", "compare_drafts", "generate", "kv_slots_needed", "proposal_shape", "stream"]
