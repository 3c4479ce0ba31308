"""benchmarks/gpu_check.sh: ``--cpu`` runs every step of the GPU check on tiny data (so the script
cannot rot); a failed or timed-out step is a row of the table, not a silent abort."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["cuda-tests", "extract", "env-scorer", "train", "finetune", "env-speed", "inference"]


def _run(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, str, dict]:
    out = tmp_path / "out" / "table.md"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--out", str(out), "--work", str(tmp_path / "work"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    record = json.loads(out.with_name("gpu_check.json").read_text()) if out.with_name("gpu_check.json").exists() else {}
    return proc, out.read_text() if out.exists() else "", record


def _rows(text: str) -> dict[str, list[str]]:
    """The table's rows by step name: ``[what, status, wall s, result]``."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in STEPS:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.xdist_group("gpu_check")
def test_gpu_check_cpu_runs_every_step_and_writes_one_table(tmp_path):
    proc, text, record = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _rows(text)
    assert list(rows) == STEPS and all(r[1] == "ok" for r in rows.values()), text
    assert all(float(r[2]) > 0 for r in rows.values())
    assert "--cpu" in text.splitlines()[0] and "Commands" in text and "$WORK" in text
    steps = {s["name"]: s["numbers"] for s in record["steps"]}
    assert steps["cuda-tests"]["skipped"] >= 3 and not steps["cuda-tests"].get("failed")  # no GPU: skipped, collected
    assert steps["extract"]["images_per_s"] > 0 and set(steps["extract"]["splits"]) == {"shapes/train", "shapes/test"}
    assert steps["env-scorer"]["folds"] == 2 and steps["env-scorer"]["env_scorer_seconds"] > 0
    for run in ("train", "finetune"):
        assert steps[run]["epochs"] == 1 and 0 <= steps[run]["mAP_area"]["learned"] <= 100
    kinds = {(r["kind"], r["B"]) for r in steps["env-speed"]["rows"]}
    assert {("numpy", 16), ("torch cpu", 16), ("torch cpu, preload", 64), ("crop cpu", 64)} <= kinds
    assert "(a) backbone forward" in steps["inference"]["rows"] and steps["inference"]["ratios"]
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert [ln.split(":")[0] for ln in log.splitlines() if ln.startswith("===== ") and ": rc=0 after" in ln] == [
        f"===== {s}" for s in STEPS
    ]


def test_failed_and_timed_out_steps_are_rows_and_the_next_steps_still_run(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'error: this interpreter fails on purpose' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    proc, text, record = _run(tmp_path, "--python", str(fake), timeout=60)
    assert proc.returncode == 1
    rows = _rows(text)
    assert list(rows) == STEPS
    assert all(rows[s][1] == "**FAILED** (rc 3)" for s in STEPS[:-1])
    assert "this interpreter fails on purpose" in rows["extract"][3]
    assert rows["inference"][1] == "skipped" and "train step failed" in rows["inference"][3]
    assert [s["status"] for s in record["steps"]][:2] == ["**FAILED** (rc 3)"] * 2

    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(slow.stat().st_mode | stat.S_IEXEC)
    proc, text, _ = _run(tmp_path, "--python", str(slow), "--only", "cuda-tests", "--budget", "0.01", timeout=60)
    assert proc.returncode == 1
    assert _rows(text)["cuda-tests"][1] == "**TIMEOUT** (> 5 s)"


@pytest.mark.parametrize(("extra", "dataset"), [([], "voc07"), (["--data-root", "/nonexistent"], "shapes")])
def test_the_gpu_plan_without_a_gpu(extra, dataset):
    """``--dry-run`` prints the GPU steps' commands: VOC07 where the data is, else the drawn Shapes
    (nothing to carry to a GPU machine); every step on CUDA, the limits within 8 minutes."""
    if dataset == "voc07" and not (ROOT.parent / "shared" / "data" / "voc07").is_dir():
        pytest.skip("no ../shared/data/voc07 here")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr
    lines = {ln.split(" (")[0]: ln for ln in proc.stdout.splitlines() if " s): " in ln}
    assert list(lines) == STEPS
    assert sum(float(ln.split(" (")[1].split(" s)")[0]) for ln in lines.values()) <= 480
    assert f"--dataset {dataset}" in lines["extract"] and "cuda" in lines["env-scorer"]
    assert "--device cuda" in lines["env-speed"] and "1024" in lines["env-speed"] and "--device cuda" in lines["inference"]
    assert ("RARL-VOC07-v0" if dataset == "voc07" else "RARL-Shapes-v0") in lines["train"]
    assert "efficientnet_lite0_s16" in lines["finetune"] and "--epochs 1" in lines["finetune"]
