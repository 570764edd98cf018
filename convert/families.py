"""Per-family key maps (see `convert.keymap`)."""

from __future__ import annotations

import numpy as np

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


# A draft over a reduced vocabulary has its own head, stored as EAGLE-3 stores it: `lm_head.weight` [K, H],
# with `d2t` (draft index -> target id, as the offset id - index) and `t2d` (a [V] mask) beside it.
VOCAB_TENSORS = ("d2t", "t2d")


def keymap_for(config) -> KeyMap:
    if config.model_type == "sparrow_draft":
        if config.vocab is None:
            return DRAFT
        return KeyMap(DRAFT.prefixes[:-1] + ((("head",), "lm_head"), DRAFT.prefixes[-1]),
                      ignore=("embed_tokens.weight", *VOCAB_TENSORS))
    if config.model_type in ("llava_onevision", "qwen2_5_vl"):
        km = LLAVA_ONEVISION if config.model_type == "llava_onevision" else QWEN2_5_VL
        tied = config.text.tie_word_embeddings
    else:
        km = TEXT
        tied = config.tie_word_embeddings
    # An untied model needs lm_head.weight, so only tied models may drop it.
    return km if tied else KeyMap(km.prefixes, km.legacy, ())


def vocab_tensors(config) -> dict:
    """EAGLE-3's `d2t` and `t2d` of a draft over a reduced vocabulary (none for any other model)."""
    if config.model_type != "sparrow_draft" or config.vocab is None:
        return {}
    ids = np.asarray(config.vocab, np.int64)
    t2d = np.zeros(config.layers.vocab_size, bool)
    t2d[ids] = True
    return {"d2t": ids - np.arange(len(ids)), "t2d": t2d}


def vocab_of(source) -> tuple[int, ...] | None:
    """The reduced vocabulary a draft checkpoint stores as EAGLE-3 does (`d2t`), or None."""
    if "d2t" not in source:
        return None
    d2t = np.asarray(source.get("d2t")).astype(np.int64)
    return tuple(int(i) for i in d2t + np.arange(len(d2t)))
