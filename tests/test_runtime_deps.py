"""Loading and running a converted checkpoint needs neither torch nor transformers."""

import subprocess
import sys
import textwrap


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
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().endswith("OK []")
