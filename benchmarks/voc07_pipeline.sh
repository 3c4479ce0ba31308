#!/usr/bin/env bash
# The whole VOC07 pipeline of BENCHMARKS.md: feature extraction (train, val), RARL training on
# train with the single-view comparison on val, then the ten-view comparison.
# Usage: RARL_DATA=../shared/data bash benchmarks/voc07_pipeline.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
root=${RARL_DATA:-../shared/data}/voc07
run=${1:-runs/rarl-voc07}
time "$py" scripts/extract_features.py --dataset voc07 --data-root "$root" --splits train val
time "$py" scripts/train_agent.py --env RARL-VOC07-v0 --data-root "$root" --run-dir "$run" --no-progress
time "$py" scripts/evaluate.py "$run" --compare --views 10
