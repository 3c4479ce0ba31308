#!/usr/bin/env bash
# The COCO pipeline of BENCHMARKS.md: train on train2017, evaluate on val2017 (1 and 10 views).
# Usage: RARL_DATA=../shared/data bash benchmarks/coco_pipeline.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
root=${RARL_DATA:-../shared/data}/coco
run=${1:-runs/rarl-coco}
time "$py" scripts/train_agent.py --env RARL-COCO2014-v0 --data-root "$root" --env-kwargs '{"split": "train2017"}' \
    --eval-split val2017 --epochs 40 --batch-size 32 --run-dir "$run" --no-progress
time "$py" scripts/evaluate.py "$run" --split val2017 --compare --views 10
