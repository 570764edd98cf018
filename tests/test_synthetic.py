"""The synthetic video world: deterministic per seed, descriptions that state exactly the scene's
facts (re-derived from the text by the parser), and real mp4 files that decode to the rendered frames."""

import json

import av
import numpy as np

from sparrow_jax.synthetic.dataset import example, write_dataset
from sparrow_jax.synthetic.describe import describe, facts, parse, recall
from sparrow_jax.synthetic.world import render, sample_scene


def test_same_seed_same_video_and_text():
    (s1, q1, a1), (s2, q2, a2), (s3, _, a3) = example(7), example(7), example(8)
    assert (q1, a1) == (q2, a2) and a1 != a3
    np.testing.assert_array_equal(render(s1, 6, 32, 48), render(s2, 6, 32, 48))
    assert not np.array_equal(render(s1, 6, 32, 48), render(s3, 6, 32, 48))


def test_descriptions_state_exactly_the_scene_facts():
    kinds = set()
    for seed in range(400):
        scene, _, text = example(seed)
        required, optional = facts(scene)
        stated = parse(text)
        assert required <= stated <= required | optional, (seed, text)
        kinds |= {f[0] for f in required}
    assert kinds == {"object", "moves", "still", "appear", "vanish", "recolour", "collide"}


def test_descriptions_vary_and_need_the_video():
    scene = example(3)[0]
    texts = {describe(scene, np.random.default_rng(s)) for s in range(20)}
    assert len(texts) >= 15  # synonyms, clause order, optional details
    assert all(parse(t) >= facts(scene)[0] for t in texts)
    # Another scene's description misses most of this scene's facts.
    others = [recall(example(s)[2], scene) for s in range(100, 140)]
    assert np.mean(others) < 0.2 and recall(example(3)[2], scene) == 1.0


def test_frames_show_each_object_in_its_current_colour():
    """At every step an object is visible (and not overlapped), the pixel at its centre has its colour
    at that step: recolouring is in the pixels, not only in the text."""
    from sparrow_jax.synthetic.world import COLOURS, SIZES
    checked = 0
    for seed in range(6):
        scene = sample_scene(np.random.default_rng(seed), steps=32)
        frames = render(scene, 32, 64, 64)  # one frame per step
        for step in range(32):
            for i, t in enumerate(scene.things):
                x, y = scene.centres[step, i]
                pixel = tuple(frames[step, min(int(y * 64), 63), min(int(x * 64), 63)])
                clear = all(np.hypot(*(scene.centres[step, i] - scene.centres[step, j])) > SIZES[t.size] + SIZES[o.size]
                            for j, o in enumerate(scene.things) if j != i and scene.visible(j, step))
                if scene.visible(i, step) and clear:
                    assert pixel == COLOURS[scene.colour_at(i, step)]
                    checked += 1
    assert checked > 200


def test_dataset_writes_decodable_mp4_and_manifest(tmp_path):
    manifest = write_dataset(tmp_path, count=3, seed=5, frames=6, size=48)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert [x["seed"] for x in lines] == [5, 6, 7]
    for line in lines:
        scene, question, answer = example(line["seed"])
        assert line["conversations"] == [{"role": "user", "content": question},
                                         {"role": "assistant", "content": answer}]
        assert {tuple(f) for f in line["facts"]} == facts(scene)[0]
        with av.open(str(tmp_path / line["video"])) as c:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        rendered = render(scene, 6, 48, 48)
        assert decoded.shape == rendered.shape
        assert np.abs(decoded.astype(int) - rendered).mean() < 6  # lossy H.264, 4:2:0 chroma at edges


def test_tokenizer_loads_in_transformers_with_its_chat_template(tmp_path):
    from transformers import AutoTokenizer

    from train.synthetic.tokenizer import corpus, save_tokenizer, train_tokenizer
    tok = train_tokenizer(corpus(300), vocab_size=400)
    save_tokenizer(tok, tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf) == 400 and hf.eos_token == "<|im_end|>" and hf.pad_token_id == 0
    _, question, answer = example(1000)  # a held-out scene
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]},
                {"role": "assistant", "content": answer}]
    text = hf.apply_chat_template(messages, tokenize=False)
    assert text == f"<|im_start|>user\n<video>\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
    ids = hf(text)["input_ids"]
    assert ids.count(hf.convert_tokens_to_ids("<video>")) == 1 and hf.decode(ids) == text
    from sparrow_jax.synthetic.world import COLOURS, SHAPES
    for word in (*COLOURS, *SHAPES):  # the corpus' key words are single tokens (with their space)
        assert len(hf(" " + word)["input_ids"]) == 1, word
