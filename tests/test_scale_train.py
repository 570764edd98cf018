"""One step of draft training at the paper's lengths fits (issue 21): a 7B LLaVA-OneVision target (shape-only,
bf16, `sparrow_jax.scale_configs`), one 25.6k-token row of 128 frames per device, fsdp over 8 virtual CPU
devices, the trainer's own jitted step compiled ahead of time (`python -m train.scale`), nothing allocated.

Compile time: 2 of the 28 target layers are compiled; the other 26 add their parameter shards (the layers run
in a scan and the frozen target keeps no activations, so temp does not grow with depth). CPU compiles make
float32 copies of bf16 weights for their matmuls; the online budget is asserted on the CPU figure itself (an
upper bound), the offline one without the CPU's float32 copies of the lm_head (`train.scale.cpu_weight_copies`).
"""

import json
import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def test_draft_training_step_at_paper_lengths_fits_per_chip():
    proc = subprocess.run([sys.executable, "-m", "train.scale", "--devices", "8"], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["mode"]: r for r in map(json.loads, proc.stdout.splitlines())}
    print(rows)
    online, offline = rows["online"], rows["offline"]
    assert online["devices"] == offline["devices"] == 8 and online["layers"] == 28
    assert online["total"] <= 60, online  # the target (vision tower included) runs inside the step
    assert offline["total_without_copies"] <= 16, offline  # stored features over the whole row, no text_len
    # Whole [B, L, V] logits would be 15.6 GB per row in float32 alone: neither step holds one.
    assert online["temp"] < 20 and offline["temp"] < 20
