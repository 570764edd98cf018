"""Per-family key maps (see `convert.keymap`)."""

from __future__ import annotations

from convert.keymap import KeyMap

TEXT = KeyMap(
    prefixes=((("lm_head",), "lm_head"), (("layers",), "model.layers.{i}"), ((), "model")),
    ignore=("lm_head.weight",),  # tied checkpoints may still store a copy of the embedding
)

LLAVA_ONEVISION = KeyMap(
    prefixes=(
        (("language_model", "lm_head"), "lm_head"),
        (("language_model", "layers"), "model.language_model.layers.{i}"),
        (("language_model",), "model.language_model"),
        (("vision_tower", "layers"), "model.vision_tower.encoder.layers.{i}"),
        (("vision_tower",), "model.vision_tower"),
        ((), "model"),
    ),
    # The llava-hf releases (and transformers' own save_pretrained) use the older layout.
    legacy=(
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
        ("vision_tower.vision_model.", "model.vision_tower."),
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("image_newline", "model.image_newline"),
    ),
    ignore=("lm_head.weight",),
)


QWEN2_5_VL = KeyMap(
    prefixes=(
        (("language_model", "lm_head"), "lm_head"),
        (("language_model", "layers"), "model.language_model.layers.{i}"),
        (("language_model",), "model.language_model"),
        (("visual", "blocks"), "model.visual.blocks.{i}"),
        (("visual", "merger", "mlp_0"), "model.visual.merger.mlp.0"),
        (("visual", "merger", "mlp_2"), "model.visual.merger.mlp.2"),
        (("visual",), "model.visual"),
    ),
    # The Qwen releases (and transformers' save_pretrained) use `visual.*` and `model.*` for the LM.
    legacy=(
        ("model.language_model.", "model.language_model."),
        ("model.visual.", "model.visual."),
        ("visual.", "model.visual."),
        ("model.", "model.language_model."),
    ),
    ignore=("lm_head.weight",),
)


# The released Sparrow / EAGLE-1/2 draft: top-level `input_layernorm` (Sparrow only) and `fc`, then
# `layers.0` (no input_layernorm) and `layers.1..` (our stacked `rest`). It shares the target's
# embedding and lm_head, so copies of them in the checkpoint are dropped (and never exported).
DRAFT = KeyMap(
    prefixes=((("rest",), "layers.{i1}"), (("first",), "layers.0"), ((), "")),
    ignore=("embed_tokens.weight", "lm_head.weight"),
)


def keymap_for(config) -> KeyMap:
    if config.model_type == "sparrow_draft":
        return DRAFT
    if config.model_type in ("llava_onevision", "qwen2_5_vl"):
        km = LLAVA_ONEVISION if config.model_type == "llava_onevision" else QWEN2_5_VL
        tied = config.text.tie_word_embeddings
    else:
        km = TEXT
        tied = config.tie_word_embeddings
    # An untied model needs lm_head.weight, so only tied models may drop it.
    return km if tied else KeyMap(km.prefixes, km.legacy, ())
