"""Loading and running a converted checkpoint needs neither torch nor transformers; the tokenizer, which
does import transformers, says nothing about torch missing."""

import subprocess
import sys
import textwrap

NO_TORCH_NOTE = "Models won't be available"  # transformers' import-time note when torch is missing


def test_load_and_generate_without_torch_or_transformers(llava):
    _, _, converted, _ = llava
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any import of these now raises ImportError
        sys.modules["transformers"] = None
        import numpy as np, infer, sparrow_jax
        from sparrow_jax.processing.llava_onevision import expand_video_placeholder, num_video_tokens, preprocess_video
        target = sparrow_jax.load({str(converted)!r})
        cfg = target.config
        frames = np.random.default_rng(0).integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
        n = num_video_tokens(2, cfg.vision.image_size, cfg.vision.patch_size)
        ids = expand_video_placeholder([1, 2, cfg.video_token_id, 3], cfg.video_token_id, n)
        out = infer.generate(target, [ids], preprocess_video(frames, cfg.vision.image_size)[None], max_new_tokens=3)
        assert out.lengths.tolist() == [3], out.lengths
        print("OK", [m for m in ("torch", "transformers") if sys.modules.get(m) is not None])
        # The CLI's tokenizer imports transformers; without torch, its note that models won't be available
        # (only tokenizers: all we use) is dropped, and only that message.
        del sys.modules["transformers"]
        import logging
        from sparrow_jax import demo
        from sparrow_jax.prompting import load_tokenizer
        load_tokenizer(demo.TARGET)
        logging.getLogger("transformers").warning("another warning")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("OK []")
    assert NO_TORCH_NOTE not in res.stderr and "[transformers] another warning" in res.stderr, res.stderr
    # The filter matches what this transformers says, and sits where inference imports it (the engine
    # benchmark, the other importer, needs torch anyway).
    import importlib.util
    from pathlib import Path

    assert NO_TORCH_NOTE in Path(importlib.util.find_spec("transformers").origin).read_text()
    users = [m for pkg in ("sparrow_jax", "infer", "convert") for m in python_files(pkg)
             if "transformers" in third_party_imports(m)]
    assert users == ["sparrow_jax/prompting.py", "infer/bench_engine.py"]


# Import name of each declared distribution (where they differ); jinja2 is declared for transformers'
# chat templates and never imported by us.
IMPORT_NAME = {"orbax-checkpoint": "orbax", "pillow": "PIL", "tensorboardX": "tensorboardX"}
NOT_IMPORTED = {"jinja2"}
# Imported lazily where an extra provides it: [torch] (convert .bin files, the HF benchmark), [plot] (bench tables --plot).
OPTIONAL = {"torch", "matplotlib"}


def declared():
    """(runtime, train extra, serve extra) import names from pyproject.toml."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {IMPORT_NAME.get(d, d) for d in (re.match(r"[A-Za-z0-9_.\-]+", r).group(0) for r in reqs)}  # noqa: E731
    extras = project["optional-dependencies"]
    return names(project["dependencies"]), names(extras["train"]), names(extras["serve"])


def python_files(package):
    """The package's .py files, as paths from the repository root."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return sorted(str(p.relative_to(root)) for p in (root / package).rglob("*.py"))


SERVE_MODULES = ("infer/serve.py",)  # what the [serve] extra (fastapi, uvicorn) is for
NOT_SERVE = tuple(m for m in python_files("infer") if m not in SERVE_MODULES)


def third_party_imports(*packages):
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = set()
    for pkg in packages:
        for path in [root / pkg] if pkg.endswith(".py") else (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"sparrow_jax", "infer", "train", "convert"}


def test_what_is_imported_is_declared_and_what_is_declared_is_imported():
    runtime, train, serve = declared()
    used_runtime = third_party_imports("sparrow_jax", "infer", "convert") - serve
    used_serve = third_party_imports(*SERVE_MODULES)
    used_train = third_party_imports("train")
    assert used_runtime - runtime - OPTIONAL == set()  # the library and the inference/conversion apps
    assert used_serve - runtime - serve == set()  # the server: the runtime plus the [serve] extra
    assert serve.isdisjoint(third_party_imports("sparrow_jax", "convert", *NOT_SERVE))  # only the server needs it
    assert used_train - runtime - train == set()  # training: the runtime plus the [train] extra
    assert (runtime | train | serve) - NOT_IMPORTED - used_runtime - used_train - used_serve == set()  # none unused
    assert train.isdisjoint(used_runtime | used_serve)  # the inference install does not need the training extra
