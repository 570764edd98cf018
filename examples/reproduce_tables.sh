#!/usr/bin/env bash
# Train, from scratch, the drafts of the paper's two tables for the shipped demo target, then print the
# tables (python -m infer.bench tables), from the repository root:
#   bash examples/reproduce_tables.sh
# STEPS=N trains each draft N steps instead of the shipped draft's 500. Run times and figures: BENCHMARKS.md
# ("The paper's tables"). A run again resumes each draft from its last checkpoint.
set -euo pipefail
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-500}

# 1. The shipped draft's training scenes: the first 4000 of the demo recipe's (seeds 0..3999, 16 frames).
[ -f runs/tables/data/train/manifest.jsonl ] ||
  $PY -m train.synthetic --out runs/tables/data/train --count 4000 --seed 0 --frames 16 --size 112

# 2. The drafts (train/configs/tables/), one recipe each, the same data, step budget and seed: the first run
#    regenerates the answers with the target (runs/tables/regenerated.jsonl), the others reuse them.
#      none      no MTP, no IVSB, no VATA: the EAGLE/MSD-style baseline, reads every prompt position
#      vata      VATA only: trained and run text-only (visual keys masked)
#      mtp       MTP only: reads every position, visual ones as fc(embedding, final hidden state)
#      mtp_ivsb  MTP + IVSB without VATA: trained over the target's mid-layer visual states, run over every position
#      sparrow   MTP + IVSB + VATA: the shipped draft's step-3 recipe (IVSB on half the rows), run text-only
for name in none vata mtp mtp_ivsb sparrow; do
  start=$SECONDS
  $PY -m train.main --config "train/configs/tables/$name.json" "steps=$STEPS"
  echo "draft $name: $((SECONDS - start)) s"
done

# 3. Both tables, on held-out scenes at ~0.5k, 4k, 16k and 25.6k visual tokens.
$PY -m infer.bench tables --root runs/tables --json runs/tables/tables.json --plot runs/tables/dsr.png
