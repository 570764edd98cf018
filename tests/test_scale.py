"""The paper's setting fits: 7B targets of both families (the released HF config values, bfloat16, shapes
only: nothing allocated) on a 25.6k-token video prompt, compiled ahead of time through the project's own
jitted programs (`sparrow_jax.scale_paths`: setup, prefill, the autoregressive and speculative loops).

All 28 layers are compiled (they are scanned: compile time does not grow with depth, so nothing is scaled).
A CPU compile keeps float32 copies of the bfloat16 weights for its matmuls, so these peaks are upper bounds
for an accelerator's. For CI time each speculative loop is compiled for one family (the two share their
decoder and differ in M-RoPE positions only); vision runs inside both prefills at the paper's frame counts;
tensor=8 (8 virtual CPU devices) is checked for LLaVA-OneVision's decode loop, through the
`python -m infer.bench scale` command line.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from sparrow_jax import aot
from sparrow_jax.scale_paths import ScaleRun, ScaleSetting
from helpers import subprocess_env

ONE_DEVICE = 60 * aot.GIB  # an H100 (80 GiB) or a v5p chip (95 GiB), with room to spare
TENSOR_8 = 14  # GiB per device on tensor=8: a v5e chip (16 GiB) with room to spare
ROOT = Path(__file__).resolve().parents[1]
VIDEO_TOKENS = {"llava_onevision": 25_089, "qwen2_5_vl": 20_480}  # 128 frames at 384 px; 160 at 448x448

CASES = [("llava_onevision", "prefill"), ("llava_onevision", "decode"), ("llava_onevision", "chain"),
         ("qwen2_5_vl", "prefill"), ("qwen2_5_vl", "tree")]


@pytest.fixture(scope="module")
def measured():
    """Each family's ScaleRun and each path's figure, compiled once for the module."""
    runs, figures = {}, {}

    def get(family, path):
        if family not in runs:
            runs[family] = ScaleRun(ScaleSetting(family))
        if (family, path) not in figures:
            figures[family, path] = runs[family].measure(path)
        return runs[family], figures[family, path]

    return get


@pytest.mark.parametrize("family,path", CASES)
def test_7b_path_fits_one_device(measured, family, path):
    run, fig = measured(family, path)
    fp = fig.footprint
    print(f"{family} {path}: peak {fp.peak / aot.GIB:.1f} GiB (arguments {fp.argument / aot.GIB:.1f}, "
          f"temporaries {fp.temp / aot.GIB:.1f}), compiled in {fig.compile_s:.0f} s")
    assert (fig.prompt_tokens, fig.video_tokens) == (25_600, VIDEO_TOKENS[family])
    assert fp.peak <= ONE_DEVICE, f"{family} {path} needs {fp.peak / aot.GIB:.1f} GiB on one device"
    r = run.request(None)
    weights = aot.tree_bytes(r.params)
    assert 14.5 * aot.GIB < weights < 16 * aot.GIB  # 8.0 / 8.3B parameters in bfloat16
    assert fp.argument >= weights  # the figures are the whole program's, the weights included
    cache = 2 * 28 * 4 * r.capacity * 128 * 2  # k and v: layers x KV heads x slots x head_dim, bfloat16
    if path == "prefill":
        assert r.chunk == 512 and r.capacity >= 25_600 + 256  # 50 chunks into one cache of the whole prompt
        assert fp.output >= cache  # the cache it fills is its output
    else:
        assert fp.alias >= cache  # the donated cache is updated in place: one cache in memory, not two
        assert fig.step_bytes > weights - aot.tree_bytes(r.params["visual" if family == "qwen2_5_vl" else
                                                                    "vision_tower"]) - aot.GIB


def test_draft_adds_little_to_the_decode_loop(measured):
    """Speculating with the 7B-sized one-layer draft costs the draft's weights (0.5 GiB), the prompt's hidden
    states it reads at the start (0.2 GiB) and its window cache, on top of the autoregressive loop; per cycle
    it reads, per draft level, its layer and the target's lm_head (1.1 GB: the draft's logits go through it)."""
    _, decode = measured("llava_onevision", "decode")
    _, chain = measured("llava_onevision", "chain")
    extra = chain.footprint.peak - decode.footprint.peak
    print(f"chain over decode: +{extra / aot.GIB:.2f} GiB; a cycle reads {chain.step_bytes / 1e9:.1f} GB, "
          f"a step {decode.step_bytes / 1e9:.1f} GB")
    assert 0.5 * aot.GIB < extra < 2 * aot.GIB
    per_level = (chain.step_bytes - decode.step_bytes) / 4  # a chain of 4: four draft levels per cycle
    assert 1.5e9 < per_level < 1.8e9  # 0.52 GB of draft layer + 1.09 GB of lm_head, and the window cache


def test_tensor_8_fits_14_gib_per_device():
    """`python -m infer.bench scale --mesh tensor=8` on 8 virtual CPU devices (a subprocess, so the rest of the
    suite keeps one device): LLaVA-OneVision-7B's decode loop sharded as `generate(mesh=)` places it (weights
    by the logical-axis table; the 4 KV heads do not divide 8, so the cache is replicated). The sharded
    prefill (7.7 GiB) and speculative loops are left to the command itself, for CI time."""
    env = subprocess_env("--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-m", "infer.bench", "scale", "--family", "llava_onevision", "--paths",
                           "decode", "--mesh", "tensor=8"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    rows = [[c.strip() for c in x.strip("|").split("|")] for x in proc.stdout.splitlines()
            if x.startswith("| llava_onevision")]
    assert [r[1:3] for r in rows] == [["decode", "tensor=8"]]
    (decode,) = rows
    assert float(decode[5]) < float(decode[4]) <= TENSOR_8, decode  # resident < peak, GiB per device
    # per device: an eighth of the weights (1.8 GB) and the whole replicated KV cache at 25.6k tokens (1.5 GB)
    assert 3.0 < float(decode[6]) < 3.5
    assert float(decode[9]) > 0  # the v5e column: a step time alone, no "(does not fit)"
