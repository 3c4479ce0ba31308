"""The paper's ablations (Tables 3-6) on one env, as one command.

Trains the RARL agent under each variant (each run in its own folder under --out; a finished
run is reused, never overwritten) and prints the tables:

* Table 3, where to look: learned centres vs random centres vs a fixed grid (and the image middle);
* Table 4, the LSTM: none (Ours-A) vs location only with the linear region classifier (the default)
  vs location and classification (the paper's Ours-C), and the paper's whole formulation;
* Table 5, regions per location: 9 anchors vs 1 square region (side 160/512 of the image);
* Table 6, iterations: T = 1, 5, 10.

Examples:
    rarl-gym ablate --env RARL-Shapes-v0 --epochs 12
    rarl-gym ablate --env RARL-VOC07-v0 --data-root ../shared/data/voc07 --views 10
    rarl-gym ablate --env RARL-VOC07-v0 --data-root ../shared/data/voc07 --hyperparams '{"oracle_samples": 0}'

In a clone, ``python scripts/ablate.py`` is the same command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rarl_gym.cli import env_overrides, positive_int, run_cli

#: name -> (TrainConfig changes, env kwarg changes)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "no-lstm": ({"memory": False}, {}),
    # the paper's LSTM classifier (softmax loss, trained from scratch) with the default's recipe otherwise;
    # the map locator reads the linear head's logit maps, so this variant locates with the paper's linear locator
    "paper-lstm-classifier": (
        {
            "head": "lstm",
            "output": "softmax",
            "folds": 0,
            "context": False,
            "head_init": "random",
            "head_lr": None,
            "locator": "linear",
            "fuse_whole_image": False,
        },
        {},
    ),
    "paper": ({"__paper__": True}, {}),
    "one-region": ({}, {"scales": [160 / 512], "ratios": [1.0]}),
    "T1": ({}, {"num_steps": 1}),
    "T10": ({}, {"num_steps": 10}),
}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="RARL-Shapes-v0")
    p.add_argument("--data-root", default=None)
    p.add_argument("--env-kwargs", default="{}", help="JSON object of env kwargs for every variant")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs of every variant (default: TrainConfig's)")
    p.add_argument("--views", type=int, choices=[1, 10], default=1, help="evaluation views")
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), default=None, help="run only these variants")
    p.add_argument("--out", default=None, help="folder of the runs (default runs/ablate-<dataset>)")
    p.add_argument(
        "--hyperparams",
        default="{}",
        help="JSON object of TrainConfig fields for every variant (a variant's own changes win), "
        "e.g. '{\"oracle_samples\": 0}'",
    )
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def run_variant(name: str, args: argparse.Namespace, base_env: dict, out: Path) -> dict:
    from agents.rarl.trainer import PAPER, TrainConfig, hyperparams_from_json, train

    config_changes, env_changes = VARIANTS[name]
    epochs = args.epochs or TrainConfig.epochs
    if config_changes.get("__paper__"):
        config_changes = PAPER
    run_dir = out / name
    done = run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    options = {**hyperparams_from_json(args.hyperparams, '{"oracle_samples": 0}'), **config_changes}
    options.update(  # every variant is trained for the same epochs and evaluated alike
        env_id=args.env,
        env_kwargs={**base_env, **env_changes},
        run_dir=str(run_dir),
        epochs=epochs,
        eval_views=args.views,
        device=args.device,
    )
    config = TrainConfig(**options)
    resume = (run_dir / "checkpoint.pt").exists()  # an interrupted variant continues
    results = train(config, resume=resume)
    return {k: v for k, v in results.items() if k != "reports"}


def table(title: str, rows: list[tuple[str, dict]]) -> str:
    lines = [f"### {title}", "", "| method | mAP area (%) | mAP VOC07 11-point (%) |", "|---|---:|---:|"]
    lines += [f"| {name} | {100 * row['mAP_area']:.1f} | {100 * row['mAP_voc07']:.1f} |" for name, row in rows]
    return "\n".join(lines)


def ablate(args: argparse.Namespace) -> str:
    from agents.cli._output import output_folder, write_text

    base_env = env_overrides(args.env_kwargs, data_root=args.data_root)
    out = output_folder(args.out or f"runs/ablate-{args.env.split('-')[1].lower()}", "--out")  # not a file, writable
    names = args.only or list(VARIANTS)
    res = {name: run_variant(name, args, base_env, out) for name in names}
    from agents.rarl.trainer import TrainConfig

    views = f"{args.views} view(s), {args.epochs or TrainConfig.epochs} epochs, {args.env}"
    tables = []
    if "base" in res:
        p = res["base"]["policies"]
        tables.append(
            table(
                f"Table 3: attentional regions ({views})",
                [
                    ("random centres", p["random"]),
                    ("fixed grid", p["grid"]),
                    ("image middle", p["center"]),
                    ("learned attention", p["learned"]),
                ],
            )
        )
    learned = {name: r["policies"]["learned"] for name, r in res.items()}
    for title, rows in (
        (
            "Table 4: the LSTM",
            [
                ("Ours-A: no LSTM (the locator reads the current regions only)", "no-lstm"),
                ("LSTM for location, linear region classifier (the default)", "base"),
                (
                    "LSTM for location and classification (the paper's classifier and locator, the default's recipe)",
                    "paper-lstm-classifier",
                ),
                ("the paper's formulation (LSTM classifier, linear Gaussian locator, top-k reward)", "paper"),
            ],
        ),
        ("Table 5: regions per location", [("single region", "one-region"), ("9 regions (3 scales x 3 ratios)", "base")]),
        ("Table 6: iterations T", [("T = 1", "T1"), ("T = 5", "base"), ("T = 10", "T10")]),
    ):
        have = [(label, learned[key]) for label, key in rows if key in learned]
        if have:
            tables.append(table(f"{title} ({views})", have))
    text = "\n\n".join(tables)
    write_text(out / "ablation.md", text + "\n", "the ablation tables", "--out")
    print(text)
    return text


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)

    def body() -> None:  # the tables are printed; the text is for callers of ablate()
        ablate(args)

    return run_cli(body, on_interrupt="finished variants are kept; the same command continues the rest")
