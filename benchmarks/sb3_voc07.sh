#!/usr/bin/env bash
# The algorithm comparison of BENCHMARKS.md / README: every agent trained through the env
# (Stable-Baselines3's PPO, A2C, RecurrentPPO, SAC, TD3, and the plain-Gymnasium CEM of
# agents/custom) on RARL-VOC07-v0 in locate mode with the same budget of env steps, evaluated on
# val, and the paper's RARL agent (its own classifier) for 2 epochs = 30,012 env-step
# equivalents (2 x 2501 images x 6 steps), then one table (benchmarks/compare_runs.py).
# Finished runs are reused.
# SAC and TD3 take one gradient step of 64 transitions per vector step (8 env steps) instead of
# SB3's default of one per env step: the default would take hours on 2 CPU cores.
# Usage: RARL_DATA=../shared/data bash benchmarks/sb3_voc07.sh [OUT_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
root=${RARL_DATA:-../shared/data}/voc07
out=${1:-runs/compare-voc07}
steps=${2:-24000}
for algo in ppo a2c recurrentppo sac td3 cem; do
    [ -f "$out/$algo/metrics.json" ] && continue
    extra=()
    case $algo in sac|td3) extra=(--hyperparams '{"gradient_steps": 1, "batch_size": 64}') ;; esac
    echo "== $algo"
    /usr/bin/env time -f "$algo: %e s" "$py" scripts/train_agent.py --algo "$algo" --env RARL-VOC07-v0 --data-root "$root" \
        --total-timesteps "$steps" --run-dir "$out/$algo" --no-progress "${extra[@]}" > "$out-$algo.log" 2>&1 || { tail -5 "$out-$algo.log"; exit 1; }
done
if [ ! -f "$out/rarl/metrics.json" ]; then
    echo "== rarl"
    /usr/bin/env time -f "rarl: %e s" "$py" scripts/train_agent.py --env RARL-VOC07-v0 --data-root "$root" --epochs 2 \
        --run-dir "$out/rarl" --no-progress > "$out-rarl.log" 2>&1 || { tail -5 "$out-rarl.log"; exit 1; }
fi
"$py" benchmarks/compare_runs.py "$out"/*/
