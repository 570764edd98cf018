"""`python -m infer` end to end on tiny checkpoints: convert carries the tokenizer, prompts equal HF's chat
template, the streamed text equals `infer.generate`'s, `--json` parses, and each mistake is one clear line;
every command's --help shows its defaults."""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import make_draft, save_draft, write_clip

import infer
from infer.cli import main
from infer.terminal import IncrementalText
from sparrow_jax.processing import video_prompt
from sparrow_jax.prompting import chat_messages, load_tokenizer, tokenizer_mismatch
from sparrow_jax.video import PRESETS, read_video

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from tiny_tokenizer import CHAT_TEMPLATE, SPECIAL, write_tiny_tokenizer  # noqa: E402

MAX_NEW = 10


@pytest.fixture(scope="module")
def ckpt(tiny_pair):
    """(hf dir with a tokenizer, converted target, converted draft, video file)."""
    return tiny_pair


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_convert_carries_tokenizer_files(ckpt, tmp_path):
    from convert.__main__ import main as convert

    names = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"}
    assert names <= {p.name for p in (ckpt[1] / "tokenizer").iterdir()}
    assert convert(["export", "--src", str(ckpt[1]), "--dst", str(tmp_path / "hf")]) == 0  # and back beside it
    for name in names:
        assert (tmp_path / "hf" / name).read_bytes() == (ckpt[0] / name).read_bytes()


@pytest.mark.parametrize("turns, system", [
    (["describe the video"], None),
    (["describe the video", "what happens then"], "you are a helpful assistant"),
    (["describe the video", ("assistant", "a video"), "what happens then"], "short answer please"),
])
def test_prompt_equals_hf_apply_chat_template(ckpt, turns, system):
    from transformers import AutoTokenizer

    ours = load_tokenizer(ckpt[1]).prompt_ids(turns, system)
    hf = AutoTokenizer.from_pretrained(str(ckpt[0]))
    ref = hf.apply_chat_template(chat_messages(turns, system), chat_template=CHAT_TEMPLATE, tokenize=True,
                                 add_generation_prompt=True)["input_ids"]
    assert ours == list(ref)
    assert ours.count(120) == 1 and ours[-2:] == [122, 3]  # one video placeholder; ends "<|im_start|> assistant"


def test_prompt_by_hand(ckpt):
    ids = load_tokenizer(ckpt[1]).prompt_ids(["describe the video"], system="short answer")
    # <|im_start|> system short answer <|im_end|> <|im_start|> user <video> describe the video <|im_end|> ...
    assert ids == [122, 1, 16, 17, 123, 122, 2, 120, 4, 5, 6, 123, 122, 3]


def test_incremental_text_keeps_multibyte_characters_whole():
    data = "héllo wörld, 日本語".encode()
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731  (one token per byte)
    text = IncrementalText(decode)
    parts = [text.add([b]) for b in data] + [text.flush()]
    assert "".join(parts) == data.decode() and not any("\ufffd" in p for p in parts)


def expected(ckpt, target, **kw):
    tok = load_tokenizer(ckpt[1])
    video = read_video(ckpt[3], PRESETS["llava_onevision_32"].sampling, (35, 35))
    ids, pixels = video_prompt(target.config, tok.prompt_ids(["describe the video"]), video.frames, fps=video.fps)
    out = infer.generate(target, [ids], [pixels], max_new_tokens=MAX_NEW, eos_token_id=tok.eos_token_ids,
                         pad_id=tok.pad_token_id, **kw)
    return tok.decode(out.token_ids()[0]), out.token_ids()[0]


def test_cli_streams_the_generate_output(ckpt, llava, capsys):
    text, tokens = expected(ckpt, llava[3])
    base = ["--target", ckpt[1], "--video", ckpt[3], "--prompt", "describe the video", "--max-new-tokens", MAX_NEW]
    rc, out, err = run_cli(capsys, *base, "--quiet")
    assert rc == 0, err
    assert out == text + "\n"
    assert err.startswith("[prefill ") and "tokens/s | tau 1.00 |" in err and err.count("\n") == 1
    rc, out, err = run_cli(capsys, *base, "--quiet", "--draft", ckpt[2], "--chain", 3, "--window", 16)  # lossless
    assert rc == 0, err
    assert out == text + "\n"
    rc, out, err = run_cli(capsys, *base, "--json", "--quiet")
    assert rc == 0, err
    got = json.loads(out)
    assert got["text"] == text and got["tokens"] == tokens and got["frames"] == 12
    assert {"prefill_s", "decode_tokens_per_s", "tau", "cycles"} <= set(got["stats"])


def test_bad_inputs_give_one_line_errors(ckpt, llava, capsys, tmp_path):
    hf, target, draft, video = ckpt
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    data = write_clip(tmp_path / "clip.webm", "libvpx-vp9").read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])
    small = make_draft(llava[3])
    wide = dataclasses.replace(small.config, layers=dataclasses.replace(small.config.layers, hidden_size=32))
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide" / "config.json").write_text(json.dumps({"model_type": "sparrow_draft",
                                                               **dataclasses.asdict(wide)}))
    base = ["--target", target, "--prompt", "describe the video", "--quiet"]
    cases = [
        (["--video", tmp_path / "notes.mp4"], "cannot read it as a video"),
        (["--video", tmp_path / "missing.mp4"], "no such file"),
        (["--video", tmp_path / "cut.webm"], "no decodable video frames"),
        (["--video", video, "--capacity", 100], "with 256 new tokens it needs 384 KV slots (padding included), more than --capacity 100: sample fewer"),
        (["--video", video, "--draft", tmp_path / "wide"], "draft hidden_size 32 != target hidden_size 64"),
        (["--video", video, "--draft", save_draft(tmp_path / "deep", small, target_layers=5)], "5-layer target"),
        (["--video", video, "--draft", target], "not a converted draft"),
        (["--video", video, "--chain", 3], "give --draft"),
        (["--video", video, "--draft", draft, "--chain", 0], "--chain K drafts K tokens per cycle: K must be >= 1, got 0"),
        (["--video", video, "--draft", draft, "--chain", -3], "K must be >= 1, got -3"),
        (["--video", video, "--copy", 0], "--copy M proposes up to M copied tokens per cycle: M must be >= 1, got 0"),
        (["--video", video, "--temperature", "nan"], "--temperature must be a finite number >= 0 (0 = greedy), got nan"),
        (["--video", video, "--temperature", "inf"], "--temperature must be a finite number >= 0 (0 = greedy), got inf"),
        (["--video", video, "--top-p", "nan"], "--top-p must be in (0, 1]"),
    ]
    # --target: an unconverted HF directory, invalid JSON in config.json, damaged parameter files.
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "config.json").write_text('{"model_type": "llava_onevision",')
    cut = shutil.copytree(target, tmp_path / "cut")
    biggest = max((f for f in (cut / "params").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:1000])
    targets = [
        (hf, f"{hf}/config.json is a Hugging Face config.json (llava_onevision), not a converted checkpoint's: "
             f"convert the model first (python -m convert target --src {hf} --dst OUT;"),
        (tmp_path / "json", f"{tmp_path}/json/config.json is not valid JSON"),
        (cut, f"checkpoint {cut} is damaged"),
    ]
    cases += [(["--video", video, "--target", path], message) for path, message in targets]
    for argv, message in cases:
        rc, out, err = run_cli(capsys, *base, *argv)
        assert rc == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert message in err, (message, err)
    assert "Event loop is closed" not in err  # no stray traceback after the damaged read
    rc, _, err = run_cli(capsys, *base, "--video", video, "--temperature", "nan", "--debug")
    assert rc == 2 and "Traceback" in err and err.endswith("got nan\n")
    rc, _, err = run_cli(capsys, "--target", llava[2], "--video", video, "--prompt", "hi", "--quiet")
    assert rc == 2 and "no tokenizer in" in err and "convert target" in err and err.count("\n") == 1


def test_tokenizer_of_another_model_is_named(ckpt, capsys, tmp_path):
    """--tokenizer (or the checkpoint's own tokenizer/) from another model: one line naming both, what differs
    and the fix, before anything heavy runs."""
    _, target, _, video = ckpt
    other = write_tiny_tokenizer(tmp_path / "other", special={**SPECIAL, 100: "<video>", 120: "<frame>"})
    big = write_tiny_tokenizer(tmp_path / "big", size=256)
    own = shutil.copytree(target, tmp_path / "target", ignore=shutil.ignore_patterns("tokenizer"))
    shutil.copytree(other, own / "tokenizer")
    placeholder = "the checkpoint's video placeholder is id 120 ('<frame>' in this tokenizer), but the tokenizer's " \
                  "chat template writes the video as id 100 ('<video>')"
    cases = [
        (target, ["--tokenizer", other], f"the tokenizer in {other} does not belong to --target {target}: "
                                         f"{placeholder}; pass --tokenizer with the target's own tokenizer"),
        (target, ["--tokenizer", big], f"the tokenizer in {big} does not belong to --target {target}: it has 256 "
                                       "tokens, more than the checkpoint's vocabulary of 128"),
        (own, [], f"the tokenizer in {own / 'tokenizer'} does not belong to --target {own}: {placeholder}; convert "
                  f"the target again from its Hugging Face directory (python -m convert target --src HF_DIR --dst "
                  f"{own} --overwrite)"),
    ]
    for path, extra, message in cases:
        rc, out, err = run_cli(capsys, "--target", path, "--video", video, "--prompt", "describe the video",
                               "--quiet", *extra)
        assert rc == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert message in err, (message, err)


def test_tokenizer_check_covers_qwen_vision_start_and_end(ckpt, tmp_path):
    from sparrow_jax.config import Qwen25VisionConfig, Qwen25VLConfig, load_config

    text = dataclasses.replace(load_config(ckpt[1] / "config.json").text, mrope_section=(2, 3, 3))
    vision = Qwen25VisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                fullatt_block_indexes=(0,))
    special = {**SPECIAL, 118: "<|vision_start|>", 119: "<|vision_end|>", 120: "<|video_pad|>"}
    directory = write_tiny_tokenizer(tmp_path / "qwen", special=special)
    (directory / "chat_template.jinja").write_text(
        CHAT_TEMPLATE.replace("'<video>'", "'<|vision_start|><|video_pad|><|vision_end|>'"))
    tok = load_tokenizer(directory)
    assert tokenizer_mismatch(tok, Qwen25VLConfig(text, vision, 120, 121, 118, 119)) is None
    assert tokenizer_mismatch(tok, Qwen25VLConfig(text, vision, 120, 121, 118, 117)) == (
        "the checkpoint's vision start, video placeholder, vision end are ids 118, 120, 117 ('<|vision_start|>' "
        "'<|video_pad|>' 'w117' in this tokenizer), but the tokenizer's chat template writes the video as ids "
        "118, 120, 119 ('<|vision_start|>' '<|video_pad|>' '<|vision_end|>')")


# Every command line, as (module with main, argv before --help); subcommands have their own parsers.
COMMANDS = [("infer.cli", []), ("infer.serve", []), ("infer.batch", []), ("infer.bench", []),
            *(("infer.bench", [sub])
              for sub in ("engine", "video", "tables", "verify", "scale", "roofline", "first-call")),
            ("convert.__main__", []),
            *(("convert.__main__", [sub]) for sub in ("target", "draft", "export")), ("train.main", []),
            ("train.regenerate", []), ("train.features", []), ("train.bench", []), ("train.scale", []),
            ("train.synthetic.__main__", []),
            ("train.synthetic.tokenizer", []), ("train.synthetic.vision", []), ("train.synthetic.evaluate", [])]


def test_every_help_shows_the_defaults(monkeypatch, capsys):
    """Each command's --help (run in-process: it exits before anything loads) shows every option's default
    that is set, in one form, "(default: X)"; unset ones say nothing unless their help text says what unset means."""
    import argparse
    import importlib

    from sparrow_jax.cli_help import HelpFormatter

    printed = []  # the parsers whose help was printed
    format_help = argparse.ArgumentParser.format_help
    monkeypatch.setattr(argparse.ArgumentParser, "format_help", lambda self: printed.append(self) or format_help(self))
    texts = {}
    for module, sub in COMMANDS:
        printed.clear()
        with pytest.raises(SystemExit) as exit_:
            importlib.import_module(module).main([*sub, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert exit_.value.code == 0 and len(printed) == 1, (module, sub)
        parser = printed[0]
        assert parser.formatter_class is HelpFormatter, (module, sub)
        assert "(default: None)" not in text and "(default: False)" not in text, (module, sub)
        for action in parser._actions:
            if action.default is None or action.default is False or argparse.SUPPRESS in (action.default, action.help):
                continue
            one = parser.formatter_class(parser.prog)
            one.add_argument(action)
            assert "(default: " in " ".join(one.format_help().split()), (module, sub, action.dest)  # no help text?
        texts[" ".join([module, *sub])] = text
    assert "most KV cache slots a request may use (default: 32768)" in texts["infer.cli"]
    assert "most tokens to generate (default: 256)" in texts["infer.batch"]  # unset: the checkpoint's, else 256
    assert "prompt lengths, comma-separated (default: 4096,16384)" in texts["infer.bench engine"]
    assert "--pinned PINNED leading prompt slots the draft cache always keeps (default: 0)" in \
        texts["convert.__main__ draft"]
    assert "--print-config" in texts["train.main"]

