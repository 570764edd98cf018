"""The command lines' persistent compilation cache: on by default in $SPARROW_JAX_CACHE_DIR (else the user's
cache directory), off with --no-compile-cache, and a directory set for JAX itself wins."""

import argparse
import os
import subprocess
import sys

from sparrow_jax import compile_cache

SCRIPT = """
import sys, jax, jax.numpy as jnp
from sparrow_jax import compile_cache
args = compile_cache.add_flag(p := __import__("argparse").ArgumentParser()) or p.parse_args(sys.argv[1:])
print(compile_cache.from_args(args))
jax.jit(lambda x: jnp.tanh(x) @ x).lower(jnp.ones((8, 8))).compile()
"""


def run(tmp_path, *flags):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env[compile_cache.ENV] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", SCRIPT, *flags], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_compiled_programs_are_kept_unless_turned_off(tmp_path):
    assert run(tmp_path, "--no-compile-cache") == "None" and not (tmp_path / "cache").exists()
    assert run(tmp_path) == str(tmp_path / "cache")
    assert any(name.startswith("jit_") for name in os.listdir(tmp_path / "cache"))


def test_a_directory_set_for_jax_wins():
    # conftest sets JAX_COMPILATION_CACHE_DIR for the test run: enable() keeps it
    args = argparse.Namespace(no_compile_cache=False)
    assert str(compile_cache.from_args(args)) == os.environ["JAX_COMPILATION_CACHE_DIR"]
