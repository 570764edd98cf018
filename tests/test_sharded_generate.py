"""Sharded inference (`generate(..., mesh=)`) on 8 virtual CPU devices equals the single-device run: one
subprocess (`sharded_generate.py`, so that the rest of the suite keeps one device) runs both families on
meshes, greedy and sampled, with and without a draft; this checks its tokens and shardings. Plus the
--mesh flag's errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infer.options import mesh_of, mesh_sizes
from helpers import subprocess_env

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def found():
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))  # the script sets its flags
    proc = subprocess.run([sys.executable, str(HERE / "sharded_generate.py")], cwd=HERE.parent, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["llava/ar_greedy", "llava/tree_greedy", "qwen/chain_sampled"])
def test_mesh_tokens_equal_one_device(found, case):
    one, mesh = found[case]
    assert mesh == one
    assert all(len(row) == 12 and len(set(row)) > 2 for row in one)  # real text, not one repeated token


def test_parameters_and_caches_are_sharded(found):
    for family in ("llava", "qwen"):
        specs = found[f"{family}/specs"]
        # [layers, embed, mlp]: the MLP over `tensor` (the logical-axis table), the draft's too; vocab too
        assert specs["mlp_up"][2] == specs["draft_mlp_up"][1] == "tensor", specs
        assert specs["embed"][0] == "tensor", specs
        assert specs["ids"][0] == ["data", "fsdp"], specs  # prompt rows over the batch axes
    # LLaVA's 4 query / 2 KV heads on tensor=8: attention and the cache replicated over heads (whole heads
    # only; one row axis of size 1: nothing split)
    assert found["llava/specs"]["q_proj"][2] is None and found["llava/specs"]["cache_k"] == [], found["llava/specs"]
    # Qwen2.5-VL on data=4 x tensor=2: heads over tensor; the cache's rows over data, its 2 KV heads over
    # tensor; prompt states by rows
    assert found["qwen/specs"]["q_proj"][2] == "tensor", found["qwen/specs"]
    assert found["qwen/specs"]["cache_k"][:3] == [None, "data", "tensor"], found["qwen/specs"]
    assert found["qwen/specs"]["hidden"][:1] == ["data"], found["qwen/specs"]


def test_load_restores_into_shards(found):
    for family, heads in (("llava", None), ("qwen", "tensor")):
        restored = found[f"{family}/restored"]
        assert restored["mlp_up"][2] == "tensor" and restored["q_proj"][2] == heads, restored
        assert restored["on_mesh"] and restored["same"], restored


def test_mesh_flag_errors():
    assert mesh_sizes("tensor=8") == {"tensor": 8}
    assert mesh_sizes("data=2, tensor=4") == {"data": 2, "tensor": 4}
    for bad, words in (("tensor", "AXIS=N"), ("model=8", "one of data, fsdp, tensor"), ("tensor=x", "whole number"),
                       ("tensor=0", ">= 1"), ("tensor=2,tensor=4", "twice")):
        with pytest.raises(ValueError, match=words):
            mesh_sizes(bad)

    class Args:
        mesh = "tensor=3"

    assert mesh_of(type("NoMesh", (), {"mesh": None})()) is None
    with pytest.raises(ValueError, match=r"--mesh must use all 1 devices found .* --mesh tensor=1"):
        mesh_of(Args())  # this process has one device
    Args.mesh = "data=1,tensor=1"
    assert mesh_of(Args()).shape == {"data": 1, "fsdp": 1, "tensor": 1}
