#!/usr/bin/env python
"""The GPU check of issue 18, as one command: every CUDA path run once, timed, one markdown table.

``benchmarks/gpu_check.sh`` runs this file. Steps (each a subprocess with its own time limit, its
log kept; a failed or timed-out step is a row of the table, and the next steps still run):

1. ``cuda-tests``: the tests that are skipped without CUDA (``pytest -k cuda``);
2. ``extract``: feature extraction into a fresh cache, timed (``scripts/extract_features.py``;
   float16 autocast, pinned memory and channels-last on CUDA): VOC07 train + val, Lite0 at 320 px;
   ``env-scorer``: the env's locate-mode scorer fitted on the device (the env steps below need it);
3. ``train``: a default RARL training (``scripts/train_agent.py --env RARL-VOC07-v0``), its mAP;
4. ``finetune``: one epoch of fine-tuning the backbone with the agent (``--backbone
   efficientnet_lite0_s16 --hyperparams '{"finetune": true}'``: the cached stride-16 map, Lite0's
   last stages trained end to end, the trainer's only fine-tuning path), its mAP;
5. ``env-speed``: env steps/s of the numpy vector env and of the torch vector env on the device
   (``benchmarks/env_speed.py --device``), B = 16, 256, 1024;
6. ``inference``: the inference benchmark on the trained run (``benchmarks/inference_speed.py``).

``--cpu`` runs the same steps on the CPU and tiny data (Shapes, 32 images of 64 px, the tiny
backbone; step 4 on Lite0-s16 at 64 px, since the tiny backbone has no trainable tail) in about a
minute: the test suite runs it so that this script cannot rot.

The table goes to ``--out`` (default ``$OUT/gpu_check.md`` when ``$OUT`` is set, else
``runs/gpu-check/gpu_check.md``), with ``gpu_check.json`` (every number) and ``gpu_check.log``
(every step's output) beside it. Run folders and the feature cache go to ``--work`` (default: a
fresh temporary folder). Exit status: 0 when every step passed, 1 when one failed or timed out.

Examples:
    bash benchmarks/gpu_check.sh                                   # on a GPU machine, < 8 min
    bash benchmarks/gpu_check.sh --data-root /data/voc07 --out /tmp/gpu.md
    bash benchmarks/gpu_check.sh --cpu                             # the same steps, tiny, CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The tiny Shapes env of ``--cpu`` (32 train / 32 test images of 64 px, the tiny random backbone).
TINY = {"backbone": "tiny", "input_size": 64, "dataset_kwargs": {"num_images": 32, "image_size": 64}}
#: The fine-tuning step of ``--cpu``: Lite0's stride-16 map at 64 px (the tiny backbone has no tail).
TINY_FT = {"input_size": 64, "dataset_kwargs": {"num_images": 16, "image_size": 64}}

#: Seconds each step may take on the GPU (total 470 s: the check fits in 8 minutes); unused time
#: carries over to the next steps. ``--budget`` scales them.
GPU_BUDGET = {
    "cuda-tests": 40,
    "extract": 70,
    "env-scorer": 35,
    "train": 140,
    "finetune": 110,
    "env-speed": 35,
    "inference": 40,
}
CPU_BUDGET = {
    "cuda-tests": 30,
    "extract": 20,
    "env-scorer": 20,
    "train": 40,
    "finetune": 40,
    "env-speed": 30,
    "inference": 30,
}

#: The env-scorer step: the locate-mode scorer of the env, fitted on the device (on the CPU it
#: would be fitted inside the env-speed step, minutes on VOC07), saved beside the cache.
SCORER_CODE = (
    "import json, sys, time, rarl_gym; from rarl_gym.env_settings import EnvSettings; "
    "s = EnvSettings.from_kwargs(**json.loads(sys.argv[1])); t = time.perf_counter(); "
    "f = s.source.region_scorer(s.split, device=sys.argv[2], progress=False); "
    "print(json.dumps({'env_scorer_seconds': round(time.perf_counter() - t, 2), 'folds': f.folds}))"
)


@dataclass
class Step:
    """One row of the table: what ran, how long, and what it measured."""

    name: str
    what: str
    command: list[str]
    status: str = "not run"
    seconds: float = 0.0
    result: str = ""
    numbers: dict = field(default_factory=dict)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="the same steps on the CPU, tiny data (about a minute)")
    p.add_argument(
        "--data-root",
        default=str(ROOT.parent / "shared" / "data" / "voc07"),
        help="VOC07 root (default ../shared/data/voc07 beside the repo)",
    )
    p.add_argument(
        "--dataset",
        choices=["auto", "voc07", "shapes"],
        default="auto",
        help="the GPU steps' data: auto (default) = VOC07 where --data-root exists, else the drawn Shapes",
    )
    p.add_argument("--out", default=None, help="the markdown table (default $OUT/gpu_check.md or runs/gpu-check/)")
    p.add_argument("--work", default=None, help="run folders and the fresh feature cache (default: a temporary folder)")
    p.add_argument("--train-epochs", type=int, default=None, help="epochs of the default training (default: its own)")
    p.add_argument("--budget", type=float, default=1.0, help="scale every step's time limit (default 1)")
    p.add_argument("--only", nargs="+", choices=list(GPU_BUDGET), default=None, help="run only these steps")
    p.add_argument("--dry-run", action="store_true", help="print the steps' commands and limits, run nothing")
    p.add_argument("--python", default=sys.executable, help="the interpreter of the steps")
    return p.parse_args(argv)


def probe_device() -> dict:
    """torch's version and the CUDA device the steps will see (name, memory), or none."""
    import torch

    info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(), "cpus": os.cpu_count()}
    if info["cuda"]:
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1), "cuda_version": torch.version.cuda}
    return info


def plan(args: argparse.Namespace, work: Path) -> list[Step]:
    """The seven steps and their commands (``--cpu``: on tiny data)."""
    py = args.python
    voc = not args.cpu and args.dataset == "voc07"
    env, root = ("RARL-VOC07-v0", args.data_root) if voc else ("RARL-Shapes-v0", None)
    kw = json.dumps(TINY if args.cpu else ({"root": root} if voc else {}))
    data = ["--env-kwargs", kw]
    if args.cpu:
        tests = [py, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rs", "-k", "cuda"]
        tests += ["tests/test_torch_vector_env.py", "tests/test_cuda.py"]
        extract = [py, "scripts/extract_features.py", "--dataset", "shapes", "--backbone", "tiny", "--input-size", "64"]
        extract += ["--dataset-kwargs", json.dumps(TINY["dataset_kwargs"])]
        train = [py, "scripts/train_agent.py", *data, "--epochs", str(args.train_epochs or 1), "--batch-size", "16"]
        train += ["--hyperparams", '{"oracle_samples": 4}']  # the oracle row's 64 sequences: a third of the time here
        ft = [py, "scripts/train_agent.py", "--env-kwargs", json.dumps(TINY_FT), "--batch-size", "8"]
        env_speed = ["--batch-sizes", "16", "64", "--steps", "15"]
        inference = ["--images", "8", "--batch-size", "8", "--proposal-images", "1", "--repeat", "1"]
    else:
        tests = [py, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rs", "-k", "cuda", "tests"]
        where = ["--data-root", root] if root else []
        extract = [py, "scripts/extract_features.py", "--dataset", args.dataset, *where]
        extract += ["--splits", "train", "val"] if root else []  # Shapes: its train and test splits
        train = [py, "scripts/train_agent.py", "--env", env, *where]
        train += ["--epochs", str(args.train_epochs)] if args.train_epochs else []
        ft = [py, "scripts/train_agent.py", "--env", env, *where]
        env_speed = ["--batch-sizes", "16", "256", "1024", "--steps", "60"]
        inference = ["--images", "32", "--batch-size", "16"]
    cache = str(work / "cache")
    extract += ["--cache-dir", cache]
    train += ["--run-dir", str(work / "train"), "--no-progress"]
    ft += ["--backbone", "efficientnet_lite0_s16", "--hyperparams", '{"finetune": true}', "--epochs", "1"]
    ft += ["--run-dir", str(work / "finetune"), "--no-progress"]
    device = "cpu" if args.cpu else "cuda"
    env_kwargs = {"dataset": "shapes", **TINY} if args.cpu else ({"dataset": "voc07", "root": root} if voc else {})
    env_kwargs.setdefault("dataset", "shapes")
    scorer = [py, "-c", SCORER_CODE, json.dumps(env_kwargs), device]
    env_speed = [py, "benchmarks/env_speed.py", "--env", env, *data, "--device", device, "--vector-only", *env_speed]
    env_speed += ["--json", str(work / "env_speed.json")]
    inference = [py, "benchmarks/inference_speed.py", "--run", str(work / "train"), "--accuracy-images", "0", *inference]
    inference += ["--device", device, "--out", str(work / "inference.json")]
    if root:
        inference += ["--data-root", root]
    what = "Shapes tiny, CPU" if args.cpu else ("VOC07" if voc else "Shapes, 3000 + 1000 images of 256 px")
    return [
        Step("cuda-tests", "CUDA-only tests (`pytest -k cuda`)", tests),
        Step("extract", f"feature extraction, fresh cache ({what})", extract),
        Step("env-scorer", f"the env's locate-mode scorer, fitted on {device}", scorer),
        Step("train", f"default RARL training ({what})", train),
        Step("finetune", "1 epoch fine-tuning Lite0's stride-16 tail with the agent", ft),
        Step("env-speed", f"env steps/s, numpy vs torch vector env on {device}", env_speed),
        Step("inference", "inference speed of the trained run", inference),
    ]


# -- reading what each step measured -------------------------------------------------------------
def read_tests(step: Step, output: str, work: Path, cpu: bool) -> None:
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", output)}
    step.numbers = counts
    step.result = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped", "error") if counts.get(k))
    if not cpu and counts.get("skipped"):
        step.result += " (a CUDA test skipped on a GPU machine: see the log)"


def read_extract(step: Step, output: str, work: Path, cpu: bool) -> None:
    splits = re.findall(r"(\S+)/(\S+): (\d+) images, features \(([^)]*)\) in ([\d.]+) s", output)
    images = sum(int(n) for _, _, n, _, _ in splits)
    seconds = sum(float(s) for *_, s in splits)
    step.numbers = {"splits": {f"{d}/{s}": {"images": int(n), "seconds": float(t)} for d, s, n, _, t in splits}}
    parts = [f"{s} {n} img in {float(t):.1f} s" for _, s, n, _, t in splits]
    if splits:
        step.numbers["images_per_s"] = round(images / max(seconds, 1e-9), 1)
        step.result = f"{', '.join(parts)}: **{images / max(seconds, 1e-9):,.0f} images/s**, maps {splits[0][3]}"
    if not cpu:
        step.result += "; float16 autocast"


def read_scorer(step: Step, output: str, work: Path, cpu: bool) -> None:
    step.numbers = json.loads(output.strip().splitlines()[-1])
    step.result = f"{step.numbers['folds']} folds fitted (or loaded) in {step.numbers['env_scorer_seconds']:.1f} s"


def read_run(step: Step, output: str, work: Path, cpu: bool) -> None:
    folder = work / ("train" if step.name == "train" else "finetune")
    metrics = json.loads((folder / "metrics.json").read_text())
    pol = metrics["policies"]
    rows = {k: round(100 * pol[k]["mAP_area"], 1) for k in ("learned", "random", "grid", "global") if k in pol}
    step.numbers = {
        "mAP_area": rows,
        "mAP_voc07_learned": round(100 * pol["learned"]["mAP_voc07"], 1),
        "epochs": len(metrics.get("reward_curve", [])),
        "train_seconds": metrics.get("train_seconds"),
        "split": metrics.get("split"),
    }
    learned = f"learned {rows['learned']} / {step.numbers['mAP_voc07_learned']} (area / 11-pt)"
    others = ", ".join(f"{k} {v}" for k, v in rows.items() if k != "learned")
    step.result = (
        f"{step.numbers['epochs']} epoch(s), {metrics.get('train_seconds', 0):.0f} s training; "
        f"{metrics.get('split')} mAP: **{learned}**, {others}"
    )


def read_env_speed(step: Step, output: str, work: Path, cpu: bool) -> None:
    rows = json.loads((work / "env_speed.json").read_text())["rows"]
    step.numbers = {"rows": rows}
    by = {}
    for r in rows:
        by.setdefault(r["B"], {})[r["kind"]] = r["steps_per_s"]
    parts = []
    for b, kinds in sorted(by.items()):
        cells = [f"{k} {v:,.0f}" for k, v in kinds.items()]
        parts.append(f"B={b}: {' / '.join(cells)}")
    step.result = "env steps/s, " + "; ".join(parts)


def read_inference(step: Step, output: str, work: Path, cpu: bool) -> None:
    data = json.loads((work / "inference.json").read_text())
    rows, ratios = data.get("rows", {}), data.get("ratios", {})
    step.numbers = {"rows": rows, "ratios": ratios, "device": data.get("device")}
    ms = {k: v["ms_per_image"] for k, v in rows.items()}

    def get(prefix: str) -> str:
        hits = [v for k, v in ms.items() if k.startswith(prefix)]
        return f"{hits[0]:.2f}" if hits else "?"

    ratio = {k.split(" /")[0]: v for k, v in ratios.items() if "backbone forward" in k}
    step.result = (
        f"ms/image on {data.get('device')}: forward {get('(a) backbone forward')}, "
        f"RARL 1 view {get('(b)')} (**{ratio.get('single-view RARL', '?')}x**), "
        f"10 views {get('(c)')} (**{ratio.get('ten-view RARL', '?')}x**)"
    )


READERS: dict[str, Callable[[Step, str, Path, bool], None]] = {
    "cuda-tests": read_tests,
    "extract": read_extract,
    "env-scorer": read_scorer,
    "train": read_run,
    "finetune": read_run,
    "env-speed": read_env_speed,
    "inference": read_inference,
}


# -- running --------------------------------------------------------------------------------------
def run_step(step: Step, limit: float, env: dict, log, work: Path, cpu: bool) -> None:
    """Run ``step`` under ``limit`` seconds; set its status, time and result (never raises)."""
    log.write(f"\n===== {step.name}: {shlex.join(step.command)}\n")
    log.flush()
    start = time.perf_counter()
    rc: int | None
    try:  # its own process group: a timeout ends the step with every process it started
        proc = subprocess.Popen(
            step.command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=limit)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            rc = None
    except OSError as err:
        output, rc = f"{type(err).__name__}: {err}", -1
    step.seconds = time.perf_counter() - start
    log.write(output)
    log.write(f"\n===== {step.name}: rc={rc} after {step.seconds:.1f} s (limit {limit:.0f} s)\n")
    log.flush()
    if rc is None:
        step.status = f"**TIMEOUT** (> {limit:.0f} s)"
        step.result = _last_line(output)
        return
    step.status = "ok" if rc == 0 else f"**FAILED** (rc {rc})"
    try:
        READERS[step.name](step, output, work, cpu)
    except (OSError, KeyError, ValueError, TypeError, IndexError) as err:  # a step that ran but wrote no results
        step.status = "ok, unread" if rc == 0 else step.status
        step.result = f"{_last_line(output)} (results unreadable: {type(err).__name__}: {err})"
    if rc != 0 and not step.result:
        step.result = _last_line(output)


def _last_line(text: str) -> str:
    """The last informative line of a step's output (the error, usually), table-safe."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error", "Fix:")) or "Error:" in ln]
    line = " ".join(errors[-2:]) if errors else (lines[-1] if lines else "(no output)")
    return line.replace("|", "\\|")[:300]


def table(steps: list[Step], device: dict, cpu: bool, total: float, work: Path) -> str:
    where = (
        f"{device.get('gpu')} ({device.get('gpu_memory_gib')} GiB, CUDA {device.get('cuda_version')})"
        if device.get("cuda") and not cpu
        else "CPU"
    )
    lines = [
        f"GPU check (`bash benchmarks/gpu_check.sh{' --cpu' if cpu else ''}`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{where}, {device.get('cpus')} CPU cores, torch {device.get('torch')}; {total:.0f} s in all.",
        "",
        "| step | what | status | wall s | result |",
        "|---|---|---|---:|---|",
    ]
    for s in steps:
        lines.append(f"| {s.name} | {s.what} | {s.status} | {s.seconds:.1f} | {s.result} |")
    lines += ["", "Commands (run in the repository root; `$WORK` = the check's work folder):", ""]
    for s in steps:
        lines.append(f"- {s.name}: `{shlex.join(s.command).replace(str(work), '$WORK')}`")
    return "\n".join(lines) + "\n"


def default_out() -> Path:
    base = os.environ.get("OUT")
    return (Path(base) if base else ROOT / "runs" / "gpu-check") / "gpu_check.md"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = probe_device() if not args.dry_run else {}
    if not args.cpu and not args.dry_run and not device["cuda"]:
        print("error: no CUDA device is visible\nFix: run it on a GPU machine, or `gpu_check.sh --cpu`", file=sys.stderr)
        return 2
    if args.dataset == "auto":  # VOC07 where it is on disk, else the drawn Shapes (nothing to carry to a GPU machine)
        args.dataset = "voc07" if Path(args.data_root).is_dir() else "shapes"
        if args.dataset == "shapes" and not args.cpu:
            print(f"gpu_check: no VOC07 data at {args.data_root}: the GPU steps run on RARL-Shapes-v0", flush=True)
    if not args.cpu and args.dataset == "voc07" and not Path(args.data_root).is_dir():
        print(f"error: no VOC07 data at {args.data_root}\nFix: pass --data-root <folder holding VOCdevkit>", file=sys.stderr)
        return 2
    if args.dry_run:
        work = Path(args.work or "$WORK")
        budget = CPU_BUDGET if args.cpu else GPU_BUDGET
        for step in plan(args, work):
            if not args.only or step.name in args.only:
                print(f"{step.name} ({args.budget * budget[step.name]:.0f} s): {shlex.join(step.command)}")
        return 0
    out = Path(args.out) if args.out else default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RARL_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.pop("OUT", None)  # the steps write their own files into work/
    steps = plan(args, work)
    if args.only:
        steps = [s for s in steps if s.name in args.only]
    budget = CPU_BUDGET if args.cpu else GPU_BUDGET
    start, planned = time.perf_counter(), 0.0
    print(f"gpu_check: {device}; work folder {work}; table {out}", flush=True)
    with open(out.with_name("gpu_check.log"), "w") as log:
        for step in steps:
            planned += args.budget * budget[step.name]
            limit = max(5.0, planned - (time.perf_counter() - start))  # its share plus what earlier steps left
            if step.name == "inference" and not (work / "train" / "checkpoint.pt").exists():
                step.status, step.result = "skipped", "no trained run (the train step failed)"
            else:
                print(f"gpu_check: {step.name} (limit {limit:.0f} s) ...", flush=True)
                run_step(step, limit, env, log, work, args.cpu)
            print(f"gpu_check: {step.name}: {step.status}, {step.seconds:.1f} s: {step.result}", flush=True)
            text = table(steps, device, args.cpu, time.perf_counter() - start, work)
            out.write_text(text)  # after every step: a check cut short still leaves its table
    total = time.perf_counter() - start
    text = table(steps, device, args.cpu, total, work)
    out.write_text(text)
    record = {"device": device, "cpu": args.cpu, "seconds": round(total, 1), "steps": [vars(s) for s in steps]}
    out.with_name("gpu_check.json").write_text(json.dumps(record, indent=1, default=str))
    print("\n" + text)
    return 0 if all(s.status == "ok" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
