"""M-RoPE positions (host numpy) and cos/sin (JAX) for Qwen2.5-VL.

Positions follow the ORIGINAL Qwen2.5-VL rule (transformers 4.49-4.57.x `get_rope_index`, vLLM):
text after a vision block starts at max(all positions so far) + 1. transformers 5.23 instead sets
it to block_start + max(h, w) / merge, ignoring the temporal axis, so the two differ for text after
a video whose scaled temporal extent (t-1) * second_per_grid_t * tokens_per_second reaches or exceeds
max(h, w) / merge. Parity with 5.23 is checked only where the rules agree; where they differ the test
pins 5.23's (different) numbers so an upgrade that changes them is noticed.
"""

import numpy as np
import pytest
import torch

from sparrow_jax.mrope import batch_mrope_positions, mrope_cos_sin, mrope_positions

VS, IMG, VID, VE = 1, 2, 3, 4  # vision_start, image pad, video pad, vision_end
KW = dict(image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS, spatial_merge_size=2,
          tokens_per_second=2)


def _ids(*parts):
    return np.array([t for p in parts for t in (p if isinstance(p, list) else [p])], np.int64)


# --- hand-written tables -------------------------------------------------------------------------

def test_text_video_text():
    # video grid (2, 4, 4), merge 2 -> 2 x 2 x 2 = 8 tokens; temporal index t_idx * 1.0 * 2 = 0, 2.
    ids = _ids(10, 11, VS, [VID] * 8, VE, 12, 13)
    pos, delta = mrope_positions(ids, None, np.array([[2, 4, 4]]), [1.0], **KW)
    exp = [[0, 1, 2, 3, 3, 3, 3, 5, 5, 5, 5, 6, 7, 8],
           [0, 1, 2, 3, 3, 4, 4, 3, 3, 4, 4, 6, 7, 8],
           [0, 1, 2, 3, 4, 3, 4, 3, 4, 3, 4, 6, 7, 8]]
    np.testing.assert_array_equal(pos, exp)
    # VE starts at max(block) + 1 = 6, not at the last token's h/w + 1 = 5 (nor 5.23's 3 + 2 = 5).
    assert pos.dtype == np.int64 and delta == 9 - 14


def test_text_image_video_text():
    # image (1, 4, 6) -> 2 x 3 = 6 tokens, no time axis; video (4, 2, 2) -> 4 tokens, seconds 0.75:
    # temporal floor(t_idx * 1.5) = 0, 1, 3, 4.
    ids = _ids(10, VS, [IMG] * 6, VE, VS, [VID] * 4, VE, 11)
    pos, delta = mrope_positions(ids, np.array([[1, 4, 6]]), np.array([[4, 2, 2]]), [0.75], **KW)
    exp = [[0, 1, 2, 2, 2, 2, 2, 2, 5, 6, 7, 8, 10, 11, 12, 13],
           [0, 1, 2, 2, 2, 3, 3, 3, 5, 6, 7, 7, 7, 7, 12, 13],
           [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 7, 7, 7, 12, 13]]
    np.testing.assert_array_equal(pos, exp)
    assert delta == 14 - 16


def test_two_videos():
    # both (2, 2, 4) -> 1 x 2 per frame, 4 tokens; seconds 2.0 -> temporal 0, 4; 0.5 -> 0, 1.
    ids = _ids(VS, [VID] * 4, VE, 10, VS, [VID] * 4, VE)
    pos, delta = mrope_positions(ids, None, np.array([[2, 2, 4], [2, 2, 4]]), [2.0, 0.5], **KW)
    exp = [[0, 1, 1, 5, 5, 6, 7, 8, 9, 9, 10, 10, 11],
           [0, 1, 1, 1, 1, 6, 7, 8, 9, 9, 9, 9, 11],
           [0, 1, 2, 1, 2, 6, 7, 8, 9, 10, 9, 10, 11]]
    np.testing.assert_array_equal(pos, exp)
    assert delta == 12 - 13


def test_text_only_and_image_has_no_time_axis():
    pos, delta = mrope_positions(np.arange(10, 15), None, None, None, **KW)
    np.testing.assert_array_equal(pos, np.tile(np.arange(5), (3, 1)))
    assert delta == 0
    # Original rule: image temporal index is t_idx * 0 (second_per_grid_t = 0), even for t > 1.
    pos, _ = mrope_positions(_ids(VS, [IMG] * 2, 10), np.array([[2, 2, 2]]), None, None, **KW)
    np.testing.assert_array_equal(pos, [[0, 1, 1, 2], [0, 1, 1, 2], [0, 1, 1, 2]])


def test_batch_right_padding():
    rows = [_ids(10, 11, VS, [VID] * 8, VE, 12, 13), _ids(10, VS, [IMG] * 6, VE, 11)]
    pos, deltas = batch_mrope_positions(
        rows, [None, np.array([[1, 4, 6]])], [np.array([[2, 4, 4]]), None], [[1.0], None], pad_to=16, **KW)
    assert pos.shape == (3, 2, 16) and deltas.tolist() == [-5, -3]
    singles = [mrope_positions(rows[0], None, np.array([[2, 4, 4]]), [1.0], **KW),
               mrope_positions(rows[1], np.array([[1, 4, 6]]), None, None, **KW)]
    for i, (row, (single, d)) in enumerate(zip(rows, singles)):
        np.testing.assert_array_equal(pos[:, i, : len(row)], single)
        pad = np.arange(len(row), 16) + d  # padding continues exactly as decode would
        np.testing.assert_array_equal(pos[:, i, len(row):], np.tile(pad, (3, 1)))


# --- parity with transformers 5.23 ---------------------------------------------------------------

@pytest.fixture(scope="module")
def hf():
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, bos_token_id=0, eos_token_id=0,
                rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3]))
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                  spatial_merge_size=2, tokens_per_second=2, fullatt_block_indexes=[0])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMG, video_token_id=VID,
                           vision_start_token_id=VS)
    return Qwen2_5_VLModel(cfg).eval()


def _hf_rope_index(model, rows, img, vid, secs):
    """HF 5.23 get_rope_index on right-padded rows; grids are concatenated over rows as HF expects."""
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.from_numpy(r), 1
    # 5.x needs mm_token_type_ids (text 0, image 1, video 2); without it M-RoPE is silently skipped.
    mm = (ids == IMG).long() + 2 * (ids == VID).long()
    t = lambda x: None if x is None else torch.tensor(x)  # noqa: E731
    pos, deltas = model.get_rope_index(ids, mm_token_type_ids=mm, image_grid_thw=t(img), video_grid_thw=t(vid),
                                       second_per_grid_ts=t(secs), attention_mask=mask)
    return pos.numpy(), deltas.numpy()[:, 0]


def test_matches_hf_where_rules_agree(hf):
    # text + two images (non-square) + text, and text + image + video at the very end: after an
    # image, max + 1 == start + max(h, w) / merge, and nothing follows the video.
    r0 = _ids(10, VS, [IMG] * 6, VE, 11, VS, [IMG] * 4, VE, 12, 13)
    r1 = _ids(10, VS, [IMG] * 2, VE, 11, VS, [VID] * 12)
    rows = [r0, r1]
    img = [[1, 4, 6], [1, 4, 4], [1, 2, 4]]
    vid, secs = [[3, 4, 4]], [0.5]  # the video is the last token: max + 1 differs but is never used
    ours, deltas = batch_mrope_positions(rows, [np.array(img[:2]), np.array(img[2:])], [None, np.array(vid)],
                                         [None, secs], **KW)
    theirs, theirs_d = _hf_rope_index(hf, rows, img, vid, secs)
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(ours[:, i, : len(r)], theirs[:, i, : len(r)])
    # rope_delta = max + 1 - L over the row's positions in both, so it agrees as well.
    np.testing.assert_array_equal(deltas, theirs_d)


def test_differs_from_hf_after_video(hf):
    # Text after a video: original VE = max(block) + 1 = 6; 5.23 gives block start 3 + max(4, 4) / 2 = 5,
    # colliding with the second frame's temporal index 5. Pinned so that a transformers change shows up.
    row = _ids(10, 11, VS, [VID] * 8, VE, 12, 13)
    ours, delta = mrope_positions(row, None, np.array([[2, 4, 4]]), [1.0], **KW)
    theirs, theirs_d = _hf_rope_index(hf, [row], None, [[2, 4, 4]], [1.0])
    np.testing.assert_array_equal(ours[:, :11], theirs[:, 0, :11])  # identical up to the video's end
    np.testing.assert_array_equal(ours[:, 11:], np.tile([6, 7, 8], (3, 1)))
    np.testing.assert_array_equal(theirs[:, 0, 11:], np.tile([5, 6, 7], (3, 1)))
    assert (delta, int(theirs_d[0])) == (-5, -6)


# --- cos / sin -----------------------------------------------------------------------------------

def test_cos_sin_matches_hf():
    import jax.numpy as jnp
    from transformers import Qwen2_5_VLTextConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

    section = [2, 3, 3]
    cfg = Qwen2_5_VLTextConfig(hidden_size=32, num_attention_heads=2, head_dim=16,
                               rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=section))
    rot = Qwen2_5_VLRotaryEmbedding(cfg)
    pos = np.random.default_rng(0).integers(0, 5000, size=(3, 2, 7))
    cos_hf, sin_hf = rot(torch.zeros(1, dtype=torch.float32), torch.from_numpy(pos))
    cos, sin = mrope_cos_sin(rot.inv_freq.numpy(), jnp.asarray(pos), tuple(section), jnp.float32)
    assert cos.shape == (2, 7, 16)
    assert np.abs(np.asarray(cos) - cos_hf.numpy()).max() <= 1e-6
    assert np.abs(np.asarray(sin) - sin_hf.numpy()).max() <= 1e-6
    # 4.57's layout: select with mrope_section * 2 on the already doubled [D] vector; same result.
    freqs = pos[..., None].astype(np.float32) * rot.inv_freq.numpy()
    emb = np.concatenate([freqs, freqs], -1)
    bounds = np.cumsum([0] + section * 2)
    sel = np.concatenate([emb[i % 3, ..., bounds[i]:bounds[i + 1]] for i in range(6)], -1)
    assert np.abs(np.asarray(cos) - np.cos(sel)).max() <= 1e-6
    # Text positions (all axes equal) reduce to plain RoPE.
    t = np.tile(np.arange(7), (3, 1, 1))
    c, _ = mrope_cos_sin(rot.inv_freq.numpy(), jnp.asarray(t), tuple(section), jnp.float32)
    ang = np.arange(7)[:, None] * rot.inv_freq.numpy()
    np.testing.assert_allclose(np.asarray(c)[0], np.cos(np.concatenate([ang, ang], -1)), atol=1e-6)


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("ids, img, vid, secs, match", [
    (_ids(10, VS, [IMG] * 4), None, None, None, "1 image placeholder blocks but 0"),
    (_ids(10, VS, [VID] * 4), None, np.array([[1, 4, 4], [1, 4, 4]]), None, "1 video placeholder blocks but 2"),
    (_ids(10, VS, [IMG] * 3), np.array([[1, 4, 4]]), None, None, "3 placeholder tokens .* needs"),
    (_ids(10, VS, [VID] * 8, 11), None, np.array([[1, 4, 4]]), None, "8 placeholder tokens"),
    (_ids(10, [IMG] * 4), np.array([[1, 4, 4]]), None, None, "not preceded by vision_start"),
    (_ids(VS, [IMG] * 2), np.array([[1, 2, 3]]), None, None, "not divisible"),
    (_ids(VS, [VID] * 4), None, np.array([[1, 4, 4]]), [1.0, 2.0], "second_per_grid_ts has 2 entries"),
    (np.zeros((1, 4), np.int64), None, None, None, "one non-empty row"),
])
def test_position_errors(ids, img, vid, secs, match):
    with pytest.raises(ValueError, match=match):
        mrope_positions(ids, img, vid, secs, **KW)


def test_other_errors():
    import jax.numpy as jnp

    with pytest.raises(ValueError, match="pad_to=3"):
        batch_mrope_positions([np.arange(10, 15)], None, None, None, pad_to=3, **KW)
    with pytest.raises(ValueError, match="must equal head_dim/2"):
        mrope_cos_sin(np.ones(8, np.float32), jnp.zeros((3, 1, 2), jnp.int32), (2, 3, 2), jnp.float32)
