"""Shared fixtures: tiny random HF models, saved with save_pretrained and converted through the CLI
(the helpers they use, and the test modules share, are in `helpers.py`)."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent compilation cache for the run (set before jax is imported; subprocesses inherit it): the two
# pytest-xdist workers and the command-line subprocesses compile many of the same programs (a fresh clone
# starts it empty; later local runs reuse it). Every program is kept, however quick its compile.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# XLA's CPU fusion emitters off for the tests: the suite is compile-bound (XLA's backend compile was 152 s of a
# 200 s speculative test), and the older emitters take about a quarter less compile time (tests/test_generate.py
# with an empty cache: 84 -> 62 s of CPU) at the same run time (test_synthetic_vision.py, 1500 training steps:
# 137 vs 139 s of CPU). LLVM's optimisation off as well (tests/sharded_generate.py had it first): with an empty
# cache test_generate.py took 40 s of CPU against 64, and test_synthetic_vision.py (800 steps) 93 against 96.
# Library code and users keep XLA's defaults; subprocesses get them (helpers.subprocess_env).
from helpers import XLA_TEST_FLAGS  # noqa: E402 (after the cache settings: jax reads them when imported)

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()  # before any compile
# The user's cache directory is not the tests': a verify cost measured there (tree="auto") would change what the
# command lines default to. Tests that measure give their own directory.
os.environ["SPARROW_JAX_CACHE_DIR"] = str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "sparrow-jax" / "jax")

import shutil
import sys

import jax
import pytest
import torch

from helpers import convert_dir, llava_hf_config, make_draft, save_draft, save_hf, write_clip

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))

jax.config.update("jax_default_matmul_precision", "highest")
torch.set_grad_enabled(False)


@pytest.fixture(scope="session")
def llava(tmp_path_factory):
    """(hf_model, hf_dir, converted_dir, our_model) for a tiny LLaVA-OneVision with an odd patch grid."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from sparrow_jax import checkpoint

    torch.manual_seed(0)
    hf = LlavaOnevisionForConditionalGeneration(llava_hf_config()).eval()
    with torch.no_grad():  # random init leaves the newline small; make it matter
        hf.model.image_newline.normal_()
    root = tmp_path_factory.mktemp("llava")
    src = save_hf(hf, root / "hf")
    dst = convert_dir(src, root / "ours")
    return hf, src, dst, checkpoint.load(dst)


@pytest.fixture(scope="session")
def tiny_pair(llava, tmp_path_factory):
    """(hf dir with the tiny tokenizer, converted target, converted draft, a 12-frame mp4) over `llava`."""
    from tiny_tokenizer import write_tiny_tokenizer

    root = tmp_path_factory.mktemp("pair")
    hf = write_tiny_tokenizer(shutil.copytree(llava[1], root / "hf"))
    target = convert_dir(hf, root / "target")
    draft = save_draft(root / "draft", make_draft(llava[3], window=8), target_layers=3)
    return hf, target, draft, write_clip(root / "clip.mp4", "libx264")


# Test files, slowest first (measured on the 2-core box, seconds: test_train 449, test_speculative 431,
# test_speculative_sampling 183, ...). pytest-xdist hands whole files to its two workers in collection
# order, so the long files start first and the short ones fill in at the end; in alphabetical order
# test_train.py started late and ran on alone.
SLOWEST_FIRST = ["test_train.py", "test_speculative.py", "test_speculative_sampling.py", "test_scale.py",
                 "test_scale_train.py", "test_sharded_generate.py", "test_speculative_hybrid.py", "test_demo.py",
                 "test_synthetic_vision.py", "test_generate.py", "test_qwen2_5_vl_vision.py", "test_qwen2_5_vl.py",
                 "test_serve.py", "test_streaming.py", "test_engine.py", "test_kv_cache.py", "test_train_target.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
