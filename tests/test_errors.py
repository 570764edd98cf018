"""Reliability (issue 25): inputs that used to run silently into garbage are errors or warnings before any
device work; a checkpoint whose config.json does not match its weights, or whose files are damaged, is an
error naming the file; the command lines print user mistakes as one line (exit 2), tracebacks only with
--debug or for internal errors."""

import json
import shutil
import warnings

import numpy as np
import pytest
from helpers import random_video, video_prompt

import infer
from sparrow_jax import checkpoint
from sparrow_jax.config import ConfigError
from sparrow_jax.errors import run_cli
from sparrow_jax.generation.setup import setup


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(3)
    prompt = video_prompt(rng, 2, 3, 4)
    return prompt, random_video(rng, 1, 2)[1][0]


@pytest.mark.parametrize("change, message", [
    (dict(prompt=lambda p: np.append(p, 128)), "token id 128 at position 26 is outside the target's vocabulary [0, 128)"),
    (dict(prompt=lambda p: np.append(p, 10**9)), "token id 1000000000"),
    (dict(prompt=lambda p: np.append(p, -1)), "token id -1"),
    (dict(eos_token_id=128), "eos_token_id 128 is outside"),
    (dict(eos_token_id=[3, -2]), "eos_token_id -2 is outside"),
    (dict(temperature=float("nan")), "temperature must be a finite number"),
    (dict(temperature=float("inf")), "temperature must be a finite number"),
    (dict(top_p=float("nan")), "top_p must be in (0, 1]"),
    (dict(video=lambda v: (v * 0 + 128).astype(np.uint8)), "uint8 values, but generate takes preprocessed float "
                                                           "pixels; turn decoded frames into them with "
                                                           "sparrow_jax.processing.video_prompt"),
    (dict(video=lambda v: np.where(v > 2, np.nan, v)), "video 0: the pixels hold NaN or inf"),
    (dict(video=lambda v: np.where(v > 2, np.inf, v)), "video 0: the pixels hold NaN or inf"),
])
def test_generate_rejects_meaningless_inputs(llava, inputs, change, message):
    prompt, video = inputs
    kw = dict(change)
    prompt = kw.pop("prompt", lambda p: p)(prompt)
    video = kw.pop("video", lambda v: v)(video)
    with pytest.raises(ValueError) as e:
        setup(llava[3], [prompt], [video], **kw)
    assert message in str(e.value)


def test_rows_with_different_frame_counts(llava):
    rng = np.random.default_rng(0)
    prompts = [video_prompt(rng, 2, 3, 4), video_prompt(rng, 1, 3, 4)]
    videos = [random_video(rng, 1, 2)[1][0], random_video(rng, 1, 1)[1][0]]
    with pytest.raises(ValueError, match=r"the rows' videos have different shapes \[\(2, 35, 35, 3\), \(1, 35, 35, 3\)\]"):
        infer.generate(llava[3], prompts, videos, max_new_tokens=2)


def test_raw_looking_float_pixels_warn_and_valid_ones_do_not(llava, inputs):
    prompt, video = inputs
    with pytest.warns(UserWarning, match="look like raw 0-255 values"):
        setup(llava[3], [prompt], [np.abs(video) * 100])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        request = setup(llava[3], [prompt], [video], eos_token_id=[127], temperature=0.5, top_p=0.9)
    assert request.prompt.stop_ids.tolist() == [[127, -1]]


def edited(src, dst, **changes):
    """A copy of converted checkpoint `src` whose config.json has `changes` applied (text.* or top-level)."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        (cfg[section] if section else cfg)[name] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("change, message", [
    (dict(text__hidden_size=96), "parameter image_newline is stored with shape (64,), the config gives (96,)"),
    (dict(text__hidden_size=48), "parameter image_newline is stored with shape (64,), the config gives (48,)"),
    (dict(text__num_layers=1), "parameter language_model/layers/input_layernorm/scale is stored with shape (3, 64), "
                               "the config gives (1, 64)"),
    (dict(text__vocab_size=125), "parameter language_model/embed_tokens/embedding is stored with shape (128, 64), "
                                 "the config gives (125, 64)"),
    (dict(dtype="bfloat16"), "is stored as float32, the config says bfloat16"),
])
def test_config_edited_against_its_weights(llava, tmp_path, change, message):
    ckpt = edited(llava[2], tmp_path / "ckpt", **change)
    with pytest.raises(ConfigError) as e:
        checkpoint.load(ckpt)
    assert f"{ckpt}/config.json does not match the weights in {ckpt}/params" in str(e.value)
    assert message in str(e.value) and "convert the model again" in str(e.value)
    with pytest.raises(ConfigError, match="does not match the weights"):
        checkpoint.load_params(ckpt, on_host=True)


def test_damaged_params_are_named(llava, tmp_path, capfd):
    ckpt = shutil.copytree(llava[2], tmp_path / "ckpt")
    biggest = max((p for p in (ckpt / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=f"checkpoint {ckpt} is damaged .*; convert it again"):
        checkpoint.load(ckpt)
    (ckpt / "params" / "_METADATA").write_text("{")
    with pytest.raises(ConfigError, match=f"checkpoint {ckpt} is damaged"):
        checkpoint.load(ckpt)


def test_config_files_that_are_not_ours(llava, tmp_path):
    with pytest.raises(ConfigError, match=f"{llava[1]}/config.json is a Hugging Face config.json "
                                          r"\(llava_onevision\), not a converted checkpoint's: convert the model first"):
        checkpoint.target_config(llava[1])
    bad = shutil.copytree(llava[2], tmp_path / "ckpt")
    (bad / "config.json").write_text('{"model_type": "llava_onevision",')
    with pytest.raises(ConfigError, match=f"{bad}/config.json is not valid JSON"):
        checkpoint.target_config(bad)


def test_run_cli_one_line_for_user_errors_traceback_for_bugs(capsys):
    def fail(e):
        def fn():
            raise e
        return fn

    assert run_cli(fail(ValueError("bad --thing\n  try again"))) == 2
    assert capsys.readouterr().err == "error: bad --thing try again\n"
    assert run_cli(fail(PermissionError(13, "Permission denied", "/ro/x"))) == 2
    assert capsys.readouterr().err == "error: [Errno 13] Permission denied: '/ro/x'\n"
    assert run_cli(fail(ValueError("shown")), debug=True) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: shown\n")
    with pytest.raises(TypeError):  # an internal error keeps its traceback
        run_cli(fail(TypeError("a bug")))
    assert run_cli(lambda: 0) == 0


def test_every_command_line_reports_a_mistake_in_one_line(tmp_path, capsys):
    """The commands beside infer, convert and train.main go through the same handler: exit 2, one line."""
    from infer.bench import main as bench
    from train.bench import main as train_bench
    from train.synthetic.__main__ import main as synthetic
    from train.synthetic.evaluate import main as evaluate
    from train.synthetic.vision import main as vision

    not_json = tmp_path / "config.json"
    not_json.write_text("{")
    missing = str(tmp_path / "missing")
    cases = [
        (lambda: synthetic(["--out", "/sys/sparrow-readonly", "--count", "1"]), "/sys/sparrow-readonly"),
        (lambda: evaluate(["--target", missing]), missing),
        (lambda: vision(["--config", str(not_json), "--out", missing]), f"{not_json} is not valid JSON"),
        (lambda: train_bench(["--config", str(not_json)]), f"{not_json} is not valid JSON"),
        (lambda: bench(["verify", "--target", missing, "--debug"]), None),  # --debug: the traceback too
        (lambda: bench(["video", "--target", missing]), missing),
    ]
    for call, message in cases:
        assert call() == 2
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("error: "), err
        if message is None:
            assert "Traceback" in err
        else:
            assert message in err.splitlines()[-1] and "Traceback" not in err, err
