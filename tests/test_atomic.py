"""sparrow_jax.atomic: the two-rename swap (systems without renameat2) recovers from a kill between its
renames, a failing write leaves the old directory, leftovers of dead writers go and a live writer's stay;
checkpoint.copy replaces a checkpoint whole. (Killing real conversions on Linux: tests/test_convert.py.)"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from sparrow_jax import atomic, checkpoint, demo


class Killed(BaseException):
    """Stands for kill -9 at a pause point: nothing after it runs (no clean-up either)."""


def kill_at(monkeypatch, point):
    def pause(name):
        if name == point:
            raise Killed(name)

    monkeypatch.setattr(atomic, "pause", pause)


def siblings(d):
    return sorted(p.name for p in d.parent.iterdir() if p.name.startswith(d.name + "."))


def dtypes(d):
    _, params, dtype = checkpoint.load_params(d)
    return dtype, {a.dtype for a in jax.tree.leaves(params)}


def test_two_rename_swap_survives_a_kill_between_and_after_its_renames(monkeypatch, tmp_path):
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    d = tmp_path / "draft"
    checkpoint.copy(demo.DRAFT, d)
    config, params, _ = checkpoint.load_params(d)
    pid = os.getpid()

    kill_at(monkeypatch, "aside")  # the old one moved aside, the new one not yet in place: no `d` at all
    with pytest.raises(Killed):
        checkpoint.save(d, config, params, "bfloat16", overwrite=True)
    assert not d.exists() and siblings(d) == [f"draft.old-{pid}", f"draft.tmp-{pid}"]
    assert dtypes(d) == ("bfloat16", {jnp.dtype(jnp.bfloat16)})  # load put the complete new one in place
    assert siblings(d) == [f"draft.old-{pid}"]

    kill_at(monkeypatch, "swapped")  # new in place, the old one not yet removed
    with pytest.raises(Killed):
        checkpoint.save(d, config, params, "float32", overwrite=True)
    assert dtypes(d) == ("float32", {jnp.dtype(jnp.float32)})
    monkeypatch.setattr(atomic, "pause", lambda name: None)
    checkpoint.copy(demo.DRAFT, d, overwrite=True)  # the next write removes what the kills left
    assert siblings(d) == [] and dtypes(d)[0] == "float32"


def test_failed_write_keeps_the_old_directory_and_leftovers_of_live_writers(tmp_path):
    d = tmp_path / "ckpt"
    checkpoint.copy(demo.DRAFT, d)
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    with pytest.raises(FileExistsError, match="already exists and is not empty.*--overwrite"):
        checkpoint.copy(demo.TARGET, d)
    with pytest.raises(ValueError, match="half written"):
        with atomic.replacing(d, overwrite=True) as tmp:
            (tmp / "config.json").write_text("{}")
            raise ValueError("half written")
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == before and siblings(d) == []
    assert checkpoint.load_params(d)[0].model_type == "sparrow_draft"

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = os.getppid()  # this test's parent process: alive
    for pid in (int(dead.stdout), live):
        (tmp_path / f"ckpt.tmp-{pid}").mkdir()
    checkpoint.copy(demo.TARGET, d, overwrite=True)
    assert siblings(d) == [f"ckpt.tmp-{live}"]
    assert checkpoint.load_params(d)[0].model_type == "llava_onevision"
    assert (d / "tokenizer" / "tokenizer.json").read_bytes() == (demo.TARGET / "tokenizer" / "tokenizer.json").read_bytes()
