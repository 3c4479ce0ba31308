#!/usr/bin/env bash
# The GPU check of issue 18 in one command (under 8 minutes on one GPU): the CUDA-only tests,
# fp16 feature extraction of VOC07 (timed), a default training, one epoch of backbone fine-tuning
# with its mAP, env and inference throughput; one markdown table for BENCHMARKS.md.
#
#   bash benchmarks/gpu_check.sh                         # GPU; data: ../shared/data/voc07
#   bash benchmarks/gpu_check.sh --data-root DIR --out FILE.md
#   bash benchmarks/gpu_check.sh --cpu                   # the same steps, tiny data, CPU (~1 min)
#
# The table goes to $OUT/gpu_check.md when $OUT is set (else runs/gpu-check/gpu_check.md), with
# gpu_check.json and gpu_check.log beside it. Every option: benchmarks/gpu_check.py --help.
# The interpreter: $PYTHON, else .venv/bin/python, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py --python "$PYTHON" "$@"
