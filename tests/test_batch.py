"""`python -m infer.batch` on a 3-record manifest: each line equals the record's own `Engine.generate`
answer, records of one frame count are batched, and a re-run after a kill (last line gone, a partial line
left) answers only that record again and leaves the file complete."""

import json

from helpers import write_clip

from infer.batch import main
from sparrow_jax.generation import Engine
from sparrow_jax.processing import video_prompt
from sparrow_jax.video import Sampling, read_video

MAX_NEW, FRAMES = 8, 4
RECORDS = [  # (id, frames sampled, question); the assistant turn is the ground truth, not part of the prompt
    ("a", None, "describe the video"), (None, 2, "what happens in the video"), ("c", None, "is the video short")]


def test_batch_answers_each_record_and_resumes(tiny_pair, tmp_path, capsys, monkeypatch):
    _, target, _, _ = tiny_pair
    (tmp_path / "v").mkdir()
    lines = []
    for i, (rid, frames, question) in enumerate(RECORDS):
        write_clip(tmp_path / "v" / f"{i}.mp4", "libx264", n=12 - 2 * i)
        rec = {"video": f"v/{i}.mp4", "conversations": [{"role": "user", "content": question},
                                                        {"role": "assistant", "content": "a video"}]}
        lines.append(json.dumps({**({"id": rid} if rid else {}), **({"num_frames": frames} if frames else {}), **rec}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "answers.jsonl"
    argv = ["--target", str(target), "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--frames",
            str(FRAMES), "--max-new-tokens", str(MAX_NEW), "--batch-size", "2", "--quiet"]

    rows = []  # the batch sizes Engine.generate ran
    generate = Engine.generate
    monkeypatch.setattr(Engine, "generate", lambda self, prompts, *a, **kw: rows.append(len(prompts)) or
                        generate(self, prompts, *a, **kw))
    assert main(argv) == 0, capsys.readouterr().err
    assert "0 of 3 records already in" in capsys.readouterr().err and rows == [2, 1]
    first = out.read_text()
    got = [json.loads(line) for line in first.splitlines()]
    assert [g["index"] for g in got] == [0, 2, 1]  # the 4-frame batch, then the 2-frame record
    assert [g.get("id") for g in got] == ["a", "c", None] and "id" not in got[2]
    assert [g["stats"]["batch_size"] for g in got] == [2, 2, 1]

    engine = Engine.from_checkpoint(target)
    for g in got:
        rid, frames, question = RECORDS[g["index"]]
        video = read_video(tmp_path / "v" / f"{g['index']}.mp4", Sampling(num_frames=frames or FRAMES), (35, 35))
        ids, pixels = video_prompt(engine.target.config, engine.tokenizer.prompt_ids([question]), video.frames,
                                   fps=video.fps)
        want = generate(engine, [ids], [pixels], max_new_tokens=MAX_NEW)
        assert (g["text"], g["tokens"]) == (want.text[0], want.token_ids()[0]), g["index"]
        assert g["stats"]["new_tokens"] >= len(g["tokens"])

    # killed while writing the last batch: its line is gone but for a partial one
    kept = first.splitlines(keepends=True)
    out.write_text("".join(kept[:2]) + kept[2][: len(kept[2]) // 2])
    rows.clear()
    assert main(argv) == 0
    assert "2 of 3 records already in" in capsys.readouterr().err and rows == [1]  # only record 1 again
    again = out.read_text()
    assert again.startswith("".join(kept[:2])) and again.endswith("\n") and len(again.splitlines()) == 3
    strip = lambda text: [{k: v for k, v in json.loads(line).items() if k != "stats"} for line in text.splitlines()]  # noqa: E731
    assert strip(again) == strip(first)  # the same answers (only the timings differ)
    rows.clear()
    assert main(argv) == 0 and rows == [] and out.read_text() == again
    assert "3 of 3 records already in" in capsys.readouterr().err
