"""Training and evaluating the RARL agent on cached features (read top to bottom, CleanRL style).

``train(config)`` runs the paper's recipe: per batch, B episodes of T glimpses on the training
split's feature maps (random crop + flip views as augmentation), the hybrid loss
(classification + REINFORCE with a learned baseline), Adam. It logs to TensorBoard, saves a
resumable checkpoint every epoch, and finally evaluates on the evaluation split with learned,
random, fixed (image middle) and fixed-grid centres, next to the global-image linear classifier.

Ready to grow: the batches come from one generator (:func:`feature_batches`), the model may be
wrapped in ``DistributedDataParallel`` (``torchrun`` sets ``WORLD_SIZE``; each rank then takes its
shard of every epoch and only rank 0 writes), and a fine-tuned backbone only has to produce
``feature_maps`` with a gradient: the crop is differentiable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from agents.rarl.evaluate import evaluate_agent, feature_batches, predict, split_objects
from agents.rarl.loss import RETURNS, rarl_loss
from agents.rarl.model import RARLAgent
from agents.rarl.rollout import RolloutModule
from agents.tb_logging import open_writer, rarl_figure2, rarl_final
from rarl_gym import metrics
from rarl_gym.cli import json_object
from rarl_gym.device import distributed, pick_device
from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import CheckpointError, ConfigError, RunExistsError, check_names
from rarl_gym.features.backbones import TAILS
from rarl_gym.features.store import FeatureStore
from rarl_gym.glimpse import random_views
from rarl_gym.io import atomic_torch_save, run_lock, sigterm_as_interrupt
from rarl_gym.scorer import (
    fit_cross_fitted_scorer,
    fit_global_classifier,
    fit_region_scorer,
    pooled_features,
)
from rarl_gym.sources import SCORER_FIT

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything a run depends on (saved in its checkpoint)."""

    env_id: str = "RARL-Shapes-v0"
    env_kwargs: dict = field(default_factory=dict)  # overrides of the env's registered kwargs
    run_dir: str = "runs/rarl-shapes"
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    rl_weight: float = 1.0
    proj_dim: int | None = 64
    embed_dim: int = 128
    hidden_dim: int = 128
    dropout: float = 0.2
    memory: bool = True  # False: no recurrence ("Ours-A")
    location_prior: str = "grid"  # locator "linear" / "map": start at the fixed grid; "none": the paper's absolute centres
    explore: float = 0.0  # fraction of training episodes with uniform random centres (for a classifier still learning)
    head: str = "linear"  # a linear classifier on full-channel region means; "lstm": the paper's (RARLAgent)
    folds: int = 2  # cross-fitted reward heads (head="linear"): the policy's reward comes out of fold
    locator: str = "peak"  # glimpses on class peaks (agents/rarl/policies.py); "map", "linear": the paper's (RARLAgent)
    candidates: int = 7  # side of the map locator's candidate grid (locator="map")
    output: str = "sigmoid"  # per-class BCE; "softmax": the paper's loss
    rl_return: str = "topk"  # what REINFORCE maximises: "topk" (the paper's reward) or "likelihood" of the true labels
    samples: int = 4  # episodes per image and batch; > 1: leave-one-out baseline
    fuse_whole_image: bool = False  # the whole image's scores (step 0) join the category-wise max
    context: bool = True  # a whole-image linear head whose logits are added to the regions' max (RARLAgent)
    locator_lr: float | None = 0.01  # Adam learning rate of the localization parameters (default: lr)
    head_lr: float | None = 0.0  # Adam learning rate of the linear and context heads (default: lr; 0 freezes a warm start)
    head_init: str = "mil"  # "mil": warm-start the linear head by multiple-instance fits (see init_linear_head)
    finetune: bool = False  # train the cached backbone's tail end to end (backbone efficientnet_lite0_s16)
    finetune_lr: float = 1e-4  # Adam learning rate of the fine-tuned tail
    augment_crop: float = 0.875  # side of the random training crop (the paper: (N - 64) / N); 1 = off
    eval_views: int = 1  # 1 (whole image) or 10 (4 corners + centre, mirrored)
    eval_samples: int = 1  # > 1: the table gains the M-sequence ensembles "learned xM" and "random xM"
    oracle_samples: int = 64  # the oracle row: best of N centre sequences per image (0: no row)
    eval_split: str | None = None  # default: the dataset's evaluation split
    seed: int = 0
    device: str = "auto"
    progress: bool = True


#: Named presets, each a set of TrainConfig overrides (``train_agent.py --preset NAME``,
#: :func:`preset_config`); documented in README.md ("Presets") and docs/design.md.
#:
#: * ``default``: the field defaults above: a frozen linear region head warm-started by
#:   multiple-instance fits, a whole-image context head added to the regions' max, and the peak
#:   locator (every glimpse on a class's smoothed map peak, the order learned by REINFORCE on the
#:   out-of-fold likelihood, 4 episodes per image with a leave-one-out baseline).
#: * ``paper``: the paper's formulation: classification from the LSTM state with the softmax loss,
#:   a linear Gaussian locator on absolute centres, the top-k reward with a learned baseline, one
#:   episode per image, no exploration episodes, 15 epochs.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "head": "lstm",
        "locator": "linear",
        "location_prior": "none",
        "explore": 0.0,
        "output": "softmax",
        "rl_return": "topk",
        "samples": 1,
        "folds": 0,
        "fuse_whole_image": False,
        "context": False,
        "head_init": "random",
        "locator_lr": None,
        "head_lr": None,
        "embed_dim": 256,
        "hidden_dim": 256,
        "epochs": 15,
    },
}
PAPER = PRESETS["paper"]

#: Fields of saved configurations that were renamed (old -> new), and removed ones with the value
#: that meant "off" (a saved run that used one cannot be rebuilt: see :func:`config_from_dict`).
RENAMED_FIELDS = {"reward": "rl_return"}
REMOVED_FIELDS: dict[str, Any] = {"imitate": 0, "imitate_weight": None, "recurrent_classifier": True}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig of preset ``name`` (:data:`PRESETS`) with ``overrides`` on top."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}", f"use one of {', '.join(map(repr, PRESETS))}")
    return TrainConfig(**{**PRESETS[name], **overrides})


def config_from_dict(saved: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields of a configuration saved by an earlier version (a checkpoint's
    ``config``): renamed fields under their new names, removed ones dropped (when they were off),
    fields added since then at their defaults.

    Raises:
        CheckpointError: the run used an option that has been removed (e.g. ``imitate > 0``).
    """
    out = dict(saved)
    for old, new in RENAMED_FIELDS.items():
        if old in out:
            out.setdefault(new, out.pop(old))
    for name, off in REMOVED_FIELDS.items():
        if name in out:
            value = out.pop(name)
            if off is not None and value != off:
                raise CheckpointError(
                    f"this run used {name}={value!r}, an option removed since (it measured worse, docs/design.md)",
                    "train a new run, or use the rarl-gym version that wrote it (git history)",
                )
    defaults = dataclasses.asdict(TrainConfig())
    return {**defaults, **{k: v for k, v in out.items() if k in defaults}}


#: TrainConfig fields a command line sets with its own options, not through ``--hyperparams``.
RUN_FIELDS = ("run_dir", "device", "progress", "env_id", "env_kwargs")


def hyperparams_from_json(text: str, example: str = '{"samples": 2}') -> dict:
    """TrainConfig overrides from the JSON of a ``--hyperparams`` option (unknown names are an error)."""
    hyper = json_object(text, "--hyperparams", example)
    fields = [f for f in TrainConfig.__dataclass_fields__ if f not in RUN_FIELDS]
    check_names(hyper, fields, "unknown RARL training option(s)", f"valid options: {', '.join(fields)}")
    return hyper


def build_agent(settings: EnvSettings, num_classes: int, channels: int, config: TrainConfig) -> RARLAgent:
    """The agent of ``config``; options the agent refuses (alone or together) are a ConfigError."""
    try:
        return RARLAgent(
            channels,
            num_classes,
            glimpse_size=settings.glimpse_size,
            proj_dim=config.proj_dim,
            embed_dim=config.embed_dim,
            hidden_dim=config.hidden_dim,
            dropout=config.dropout,
            memory=config.memory,
            location_prior=config.location_prior,
            head=config.head,
            folds=config.folds,
            locator=config.locator,
            candidates=config.candidates,
            output=config.output,
            fuse_whole_image=config.fuse_whole_image,
            tail=settings.backbone if config.finetune else None,
            context=config.context,
        )
    except ValueError as err:
        raise ConfigError(f"the RARL agent cannot be built: {err}", "change the training options (--hyperparams)") from err


def init_linear_head(
    agent: RARLAgent, settings: EnvSettings, train_store: FeatureStore, config: TrainConfig, device: Any
) -> None:
    """Warm start of the linear head (``head_init="mil"``) by the env scorer's recipe: each head
    is a linear classifier fitted by category-wise max over the whole image and the anchors of
    random centres (:data:`rarl_gym.sources.SCORER_FIT`). The F cross-fitted heads are the env's
    own ``locate``-mode scorer when it has F folds (fitted once per training cache and reused), and
    head 0 is the same fit on every training image. Training then starts from a converged
    classifier, and REINFORCE from rewards that already mean something.
    """
    fit = {k: v for k, v in SCORER_FIT.items() if k != "folds"}
    if agent.tail is not None:  # the untrained tail gives the full backbone's maps: fit on that backbone's cache
        assert agent.tail_name is not None  # the agent's tail is built from it
        settings = settings.replace(backbone=TAILS[agent.tail_name][2])
        assert settings.split is not None  # EnvSettings fills in the training split
        train_store = settings.source.open_split(settings.split, progress=config.progress)[1]
    heads: list[Any] = [fit_region_scorer(train_store, seed=config.seed, device=device, **fit)]
    if agent.folds:
        if agent.folds == SCORER_FIT["folds"]:
            heads += list(settings.source.region_scorer(settings.split, device=device, progress=config.progress).scorers)
        else:
            heads += list(
                fit_cross_fitted_scorer(train_store, folds=agent.folds, seed=config.seed, device=device, **fit).scorers
            )
    with torch.no_grad():
        agent.region_head.weight.copy_(torch.cat([h.linear.weight for h in heads])[:, :, None, None])
        assert agent.region_head.bias is not None  # a Conv2d with bias
        agent.region_head.bias.copy_(torch.cat([h.linear.bias for h in heads]))
    if agent.context:  # the context heads: the global-image linear classifier, on all images and per fold
        pooled, labels = pooled_features(train_store), torch.from_numpy(train_store.labels)
        index = np.arange(len(train_store))
        subsets = [index] + [index[index % agent.folds != f] for f in range(agent.folds)]
        ctx = [fit_global_classifier(pooled[i], labels[i], seed=config.seed) for i in subsets]
        with torch.no_grad():
            agent.context_head.weight.copy_(torch.cat([h.linear.weight for h in ctx])[:, :, None, None])
            assert agent.context_head.bias is not None  # a Conv2d with bias
            agent.context_head.bias.copy_(torch.cat([h.linear.bias for h in ctx]))


def parameter_groups(agent: RARLAgent, config: TrainConfig) -> list[dict]:
    """Adam's parameter groups: the localization parameters at ``locator_lr``, the linear and
    context heads at ``head_lr`` (when set), a fine-tuned tail at ``finetune_lr``, the rest at ``lr``."""
    loc = [
        p for name, p in agent.named_parameters() if name.startswith(("loc_", "locator.")) and config.locator_lr is not None
    ]
    tail = [p for name, p in agent.named_parameters() if name.startswith("tail.")]
    heads = [
        p
        for name, p in agent.named_parameters()
        if name.startswith(("region_head.", "context_head.")) and config.head_lr is not None
    ]
    ids = {id(p) for p in loc + tail + heads}
    groups: list[dict[str, Any]] = [{"params": [p for p in agent.parameters() if id(p) not in ids]}]
    if heads:
        groups.append({"params": heads, "lr": config.head_lr})
    if loc:
        groups.append({"params": loc, "lr": config.locator_lr, "weight_decay": 0.0})
    if tail:
        groups.append({"params": tail, "lr": config.finetune_lr})
    return groups


# -- checkpoints -------------------------------------------------------------------------------
#: What every checkpoint holds (:func:`load_checkpoint` checks it) and what a resume needs besides.
CHECKPOINT_KEYS = ("model", "config", "settings", "agent_config", "epoch")
RESUME_KEYS = ("optimizer", "rng", "step")


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write atomically (:func:`rarl_gym.io.atomic_torch_save`): a crash or a full disk mid-write
    never damages the previous checkpoint and leaves no temporary file; a full disk is a
    :class:`rarl_gym.errors.DiskFullError`."""
    atomic_torch_save(state, path, what="checkpoint")


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` (a ``checkpoint.pt`` or the run folder that holds one).

    Raises:
        CheckpointError: no such file, not readable, or not a RARL checkpoint (names the missing key).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}", "pass the checkpoint file or the run folder that holds checkpoint.pt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling failure means the same thing here
        raise CheckpointError(
            f"{path} is not a readable rarl-gym checkpoint ({type(err).__name__}: {err})",
            "pass a checkpoint.pt written by train_agent.py",
        ) from err
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(CHECKPOINT_KEYS)
    if missing or not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("settings"), dict):
        raise CheckpointError(
            f"{path} is not a RARL checkpoint of train_agent.py (missing "
            f"or malformed: {', '.join(missing) or 'config / settings'})",
            "pass a checkpoint.pt written by train_agent.py (SB3 runs are folders with model.zip)",
        )
    return ckpt


def agent_from_checkpoint(ckpt: dict) -> RARLAgent:
    agent = RARLAgent(**ckpt["agent_config"])
    result = agent.load_state_dict(ckpt["model"], strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"loc_prior"}:
        agent.load_state_dict(ckpt["model"])  # raises with the full list
    if "loc_prior" in result.missing_keys:  # a map locator saved before the grid prior existed had none
        assert agent.loc_prior is not None  # a missing key of the state dict: the agent has it
        with torch.no_grad():
            agent.loc_prior.zero_()
    return agent.eval()


def _check_resume(ckpt: dict, config: TrainConfig, settings: EnvSettings) -> None:
    """A resumed run must have the configuration it was started with (epochs may grow)."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"the checkpoint in {config.run_dir} cannot be resumed (it has no {', '.join(missing)})",
            "start a new run with another --run-dir",
        )
    saved = config_from_dict(ckpt["config"])  # a field added after the checkpoint was written ran with its default
    now = dataclasses.asdict(config)
    ignore = {"epochs", "progress", "device", "run_dir"}
    diff = {k: (saved.get(k), now[k]) for k in now if k not in ignore and saved.get(k) != now[k]}
    saved_settings = {**EnvSettings().to_dict(), **ckpt["settings"]}  # fields added since the checkpoint: their defaults
    if saved_settings != settings.to_dict():
        diff["env settings"] = (ckpt["settings"], settings.to_dict())
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"the checkpoint in {config.run_dir} comes from another configuration ({lines})",
            "resume with the same options, or start a new run with another --run-dir",
        )


def _data_keys(run: _Run) -> dict[str, str]:
    """Checkpoint entry ``data``: per split read (training, evaluation), the key of its data on disk
    (:meth:`rarl_gym.sources.FeatureSource.data_key`), checked by :func:`_check_data` on ``--resume``."""
    return {store.meta["key"]["split"]: store.meta["key"]["dataset"] for store in (run.train_store, run.eval_store)}


def _check_data(config: TrainConfig, allow_change: bool) -> None:
    """Before a resume opens (or extracts) anything: the dataset on disk must be the one the checkpoint
    was trained on (an image replaced, a split file edited change its key); refused unless
    ``allow_change``, said either way. A checkpoint from before this check (no ``data``) is not checked."""
    saved = load_checkpoint(Path(config.run_dir) / CHECKPOINT).get("data")
    if not isinstance(saved, dict):
        return
    source = EnvSettings.from_env_id(config.env_id, config.env_kwargs).source
    changed = []
    for split, key in saved.items():
        now = source.data_key(split)
        if now != key:
            counts = [k.rsplit("-", 2)[1] if k.count("-") >= 2 else "?" for k in (key, now)]
            sizes = f", {counts[0]} images then, {counts[1]} now" if all(c.isdigit() for c in counts) else ""
            changed.append(f"split {split!r} ({key} then, {now} now{sizes})")
    if not changed:
        return
    problem = f"the dataset on disk changed since the checkpoint in {config.run_dir} was written: " + "; ".join(changed)
    if not allow_change:
        raise CheckpointError(
            problem + " (an image replaced, added or removed, or a split file edited)",
            "restore the data the run was trained on, or pass --allow-data-change (train(..., allow_data_change=True)) "
            "to continue on the data as it is now, or start a new run with another --run-dir",
        )
    print(f"warning: {problem}; continuing on the data as it is now (--allow-data-change)", file=sys.stderr)


def _interrupted(config: TrainConfig) -> None:
    """Say what an interrupted run (Ctrl-C, SIGTERM) kept: the checkpoint of its last finished epoch (rank 0)."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    try:
        epoch = load_checkpoint(Path(config.run_dir) / CHECKPOINT)["epoch"]
    except CheckpointError:
        print(f"interrupted before the first epoch ended: {config.run_dir} holds no checkpoint", file=sys.stderr)
        return
    print(
        f"interrupted: {Path(config.run_dir) / CHECKPOINT} keeps epoch {epoch} of {config.epochs}; continue with --resume",
        file=sys.stderr,
    )


def _rng_state(generator: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["generator"])


# -- the training loop -------------------------------------------------------------------------
def _check_numbers(config: TrainConfig) -> None:
    """Refuse options that would fail deep inside the loop, or silently do nothing (the agent's own
    choices, ``head``, ``locator``, ``output``, ``location_prior``, are checked by :func:`build_agent`)."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_real(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    checks = {
        "epochs": (is_int(config.epochs) and config.epochs >= 1, "a positive int, e.g. 15"),
        "batch_size": (is_int(config.batch_size) and config.batch_size >= 1, "a positive int, e.g. 64"),
        "lr": (is_real(config.lr) and config.lr > 0, "a finite positive number, e.g. 1e-3"),
        "weight_decay": (is_real(config.weight_decay) and config.weight_decay >= 0, "a finite number >= 0, e.g. 1e-4"),
        "seed": (is_int(config.seed) and config.seed >= 0, "an int >= 0"),
        "explore": (is_real(config.explore) and 0 <= config.explore <= 1, "a fraction in [0, 1], e.g. 0.5"),
        "augment_crop": (is_real(config.augment_crop) and 0 < config.augment_crop <= 1, "a fraction in (0, 1], e.g. 0.875"),
        "samples": (is_int(config.samples) and config.samples >= 1, "a positive int, e.g. 4"),
        "hidden_dim": (is_int(config.hidden_dim) and config.hidden_dim >= 1, "a positive int, e.g. 128"),
        "embed_dim": (is_int(config.embed_dim) and config.embed_dim >= 1, "a positive int, e.g. 128"),
        "proj_dim": (config.proj_dim is None or (is_int(config.proj_dim) and config.proj_dim >= 1), "null or a positive int"),
        "dropout": (is_real(config.dropout) and 0 <= config.dropout < 1, "a fraction in [0, 1), e.g. 0.2"),
        "rl_weight": (is_real(config.rl_weight) and config.rl_weight >= 0, "a finite number >= 0, e.g. 1.0"),
        "folds": (is_int(config.folds) and config.folds >= 0, "an int >= 0, e.g. 2"),
        "candidates": (is_int(config.candidates) and config.candidates >= 1, "a positive int, e.g. 7"),
        "locator_lr": (config.locator_lr is None or (is_real(config.locator_lr) and config.locator_lr >= 0), "null or >= 0"),
        "head_lr": (config.head_lr is None or (is_real(config.head_lr) and config.head_lr >= 0), "null or a number >= 0"),
        "finetune_lr": (is_real(config.finetune_lr) and config.finetune_lr >= 0, "a finite number >= 0, e.g. 1e-4"),
        "eval_views": (is_int(config.eval_views) and config.eval_views in (1, 10), "1 or 10"),
        "oracle_samples": (is_int(config.oracle_samples) and config.oracle_samples >= 0, "an int >= 0, e.g. 64"),
        "eval_samples": (is_int(config.eval_samples) and config.eval_samples >= 1, "a positive int, e.g. 16"),
        "rl_return": (config.rl_return in RETURNS, f"one of {', '.join(RETURNS)}"),
        "head_init": (config.head_init in ("mil", "random"), "mil or random"),
        "memory": (isinstance(config.memory, bool), "true or false"),
        "context": (isinstance(config.context, bool), "true or false"),
        "fuse_whole_image": (isinstance(config.fuse_whole_image, bool), "true or false"),
        "finetune": (isinstance(config.finetune, bool), "true or false"),
    }
    for name, (ok, want) in checks.items():
        if not ok:
            raise ConfigError(
                f"training option {name}={getattr(config, name)!r} is invalid",
                f"use {want} (--{name.replace('_', '-')} or --hyperparams)",
            )


def train(config: TrainConfig, *, resume: bool = False, allow_data_change: bool = False) -> dict:
    """Train (or resume) a run; returns the final evaluation (see :func:`evaluate_agent`).

    The run folder is locked meanwhile (:func:`rarl_gym.io.run_lock`): a second process training
    into it fails at once with :class:`rarl_gym.errors.InUseError` naming the holder. A resume
    whose dataset changed on disk since the checkpoint is refused unless ``allow_data_change``
    (:func:`_check_data`). SIGTERM is treated like Ctrl-C: the checkpoint of the last finished
    epoch is kept, and a line says which.
    """
    _check_numbers(config)
    EnvSettings.from_env_id(config.env_id, config.env_kwargs)  # a wrong env fails before the folder is made
    if resume and (Path(config.run_dir) / CHECKPOINT).exists():
        _check_data(config, allow_data_change)
    try:
        with sigterm_as_interrupt():
            if distributed()[0] != 0:
                return _train(config, resume=resume)
            with run_lock(config.run_dir):
                return _train(config, resume=resume)
    except KeyboardInterrupt:
        _interrupted(config)
        raise


def _train(config: TrainConfig, *, resume: bool = False) -> dict:
    """The training loop, top to bottom: setup, then per epoch one pass over the training split and
    (rank 0) its logs and checkpoint, then (rank 0) the final evaluation."""
    run = _setup(config, resume=resume)
    start = time.perf_counter()
    for epoch in range(run.start_epoch, config.epochs):
        means = _train_epoch(run, config)
        run.reward_curve.append(means["reward"])
        if run.rank == 0:
            _log_epoch(run, means)
            _save_run(run, config, epoch=epoch + 1, train_seconds=run.earlier_seconds + time.perf_counter() - start)
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()  # the evaluation below runs on rank 0 alone
    if run.rank != 0:
        return {}
    run.bar.close()
    train_seconds = run.earlier_seconds + time.perf_counter() - start  # every session of the run
    return _final_evaluation(run, config, train_seconds)


@dataclass
class _Run:
    """What the training loop carries from one epoch to the next (built by :func:`_setup`)."""

    rank: int
    world: int
    device: torch.device
    run_dir: Path
    settings: EnvSettings
    train_store: FeatureStore
    eval_store: FeatureStore
    agent: RARLAgent
    model: torch.nn.Module  # the agent's RolloutModule, wrapped in DistributedDataParallel when world > 1
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # CPU: the data order (the same on every rank)
    device_gen: torch.Generator  # on the device: views, exploration, sampled centres (per rank)
    start_epoch: int = 0
    step: int = 0  # optimizer steps so far
    reward_curve: list[float] = field(default_factory=list)  # the mean training reward of every epoch
    earlier_seconds: float = 0.0  # training time of the run's earlier sessions
    writer: Any = None  # TensorBoard's SummaryWriter (rank 0)
    bar: Any = None  # the epochs' progress bar (rank 0)


def _check_run_folder(run_dir: Path, resume: bool) -> None:
    """A new run needs an empty run folder, a resumed one its checkpoint."""
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise RunExistsError(
            f"the run folder {run_dir} already holds a run ({ckpt_path})",
            "pass --resume to continue it, or --run-dir NEW_FOLDER to start another",
        )
    if resume and not ckpt_path.exists():
        raise CheckpointError(
            f"--resume: there is no checkpoint in {run_dir}", "check --run-dir, or drop --resume to start a new run"
        )


def _setup(config: TrainConfig, *, resume: bool) -> _Run:
    """Open the training and evaluation splits, seed, build the agent (warm-started, see
    :func:`init_linear_head`) and its optimizer, restore a resumed run, and (rank 0) open the run
    folder's TensorBoard log and the progress bar."""
    rank, world = distributed()
    device = pick_device(config.device)
    run_dir = Path(config.run_dir)
    _check_run_folder(run_dir, resume)
    settings = EnvSettings.from_env_id(config.env_id, config.env_kwargs)
    progress = config.progress and rank == 0
    assert settings.split is not None  # EnvSettings fills in the training split
    train_store = settings.source.open_split(settings.split, progress=progress)[1]
    eval_store = settings.source.open_split(config.eval_split or settings.source.eval_split, progress=progress)[1]

    torch.manual_seed(config.seed + rank)
    np.random.seed(config.seed + rank)
    random.seed(config.seed + rank)
    channels = TAILS[settings.backbone][0] if config.finetune and settings.backbone in TAILS else train_store.channels
    agent = build_agent(settings, len(train_store.classes), channels, config).to(device)
    if config.head_init == "mil" and not resume:
        if config.head != "linear":
            raise ConfigError(
                "head_init='mil' warm-starts the linear head", "use it with head='linear', or head_init='random'"
            )
        init_linear_head(agent, settings, train_store, config, device)
    optimizer = torch.optim.Adam(parameter_groups(agent, config), lr=config.lr, weight_decay=config.weight_decay)
    run = _Run(
        rank=rank,
        world=world,
        device=device,
        run_dir=run_dir,
        settings=settings,
        train_store=train_store,
        eval_store=eval_store,
        agent=agent,
        model=RolloutModule(agent),
        optimizer=optimizer,
        generator=torch.Generator().manual_seed(config.seed),
        device_gen=torch.Generator(device=device).manual_seed(config.seed + rank),
    )
    if resume:
        _restore(run, config)
    if world > 1:  # after the restore: DDP starts every rank from rank 0's parameters
        run.model = torch.nn.parallel.DistributedDataParallel(run.model)
    if rank == 0:
        from tqdm.auto import tqdm

        run_dir.mkdir(parents=True, exist_ok=True)
        run.writer = open_writer(run_dir / "tb")
        run.bar = tqdm(
            total=config.epochs, initial=run.start_epoch, desc="train RARL", unit="epoch", disable=not config.progress
        )
    return run


def _restore(run: _Run, config: TrainConfig) -> None:
    """Continue from the run folder's checkpoint: the model, the optimizer, every random generator,
    the epoch and step counters, the reward curve and the earlier sessions' training time."""
    ckpt = load_checkpoint(run.run_dir / CHECKPOINT)
    _check_resume(ckpt, config, run.settings)
    run.agent.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    _set_rng_state(ckpt["rng"], run.generator)
    run.device_gen.set_state(ckpt["rng"]["device_generator"])
    run.start_epoch, run.step = ckpt["epoch"], ckpt["step"]
    run.reward_curve = list(ckpt.get("reward_curve", []))
    run.earlier_seconds = float(ckpt.get("train_seconds", 0.0))


def _train_epoch(run: _Run, config: TrainConfig) -> dict[str, float]:
    """One pass over (this rank's shard of) the training split; the means over its batches of
    the losses (``loss``, ``cls``, ``reinforce``, ``baseline``), the ``return`` and the ``reward``."""
    run.agent.train()
    sums = {"loss": 0.0, "cls": 0.0, "reinforce": 0.0, "baseline": 0.0, "reward": 0.0, "return": 0.0}
    batches = 0
    for feats, labels, index in feature_batches(
        run.train_store, config.batch_size, run.generator, run.device, rank=run.rank, world=run.world
    ):
        losses, reward = _train_step(run, config, feats, labels, index)
        for key in sums.keys() - {"reward"}:
            sums[key] += float(losses[key].detach())
        sums["reward"] += reward
        batches += 1
    return {k: v / max(batches, 1) for k, v in sums.items()}


def _train_step(
    run: _Run, config: TrainConfig, feats: torch.Tensor, labels: torch.Tensor, index: torch.Tensor
) -> tuple[dict[str, torch.Tensor], float]:
    """One Adam step on a batch (``feats [B, C, H, W]``, ``labels [B, L]``, ``index [B]``): the
    rollout of ``samples`` episodes per image, the hybrid loss, clipped gradients. Returns the losses and the
    mean reward of the episodes."""
    if config.samples > 1:  # M consecutive episodes of each image (leave-one-out baseline)
        labels, index = (x.repeat_interleave(config.samples, 0) for x in (labels, index))
    view = None
    if config.augment_crop < 1.0:
        view = random_views(labels.shape[0], config.augment_crop, generator=run.device_gen, device=run.device)
    fold_of = index % config.folds if config.folds else None
    out = run.model(
        feats,
        labels,
        **run.settings.rollout_kwargs(),
        generator=run.device_gen,
        view=view,
        explore=config.explore,
        repeat=config.samples,
        fold_of=fold_of,
    )
    losses = rarl_loss(
        out,
        labels,
        rl_weight=config.rl_weight,
        output=config.output,
        rl_return=config.rl_return,
        fold_of=fold_of,
        samples=config.samples,
        k=run.settings.k,
    )
    run.optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    torch.nn.utils.clip_grad_norm_(run.agent.parameters(), 5.0)
    run.optimizer.step()
    run.step += 1
    return losses, float(out.reward.mean())


def _log_epoch(run: _Run, means: dict[str, float]) -> None:
    """TensorBoard: the epoch's means (``train/...``), the evaluation split's mAP of the learned
    policy (one view, ``eval/mAP_area_learned``: the learning curve) and Figure 2 on fixed
    evaluation images; the progress bar."""
    for key, value in means.items():
        run.writer.add_scalar(f"train/{key}", value, run.step)
    probs = predict(run.agent, run.eval_store, run.settings, device=run.device).probs
    run.writer.add_scalar("eval/mAP_area_learned", metrics.mean_average_precision(probs, run.eval_store.labels), run.step)
    run.agent.train()
    rarl_figure2(run.writer, run.agent, run.eval_store, run.settings, run.step, run.device)
    run.bar.set_postfix(reward=f"{means['reward']:.3f}", cls=f"{means['cls']:.3f}")
    run.bar.update(1)


def _save_run(run: _Run, config: TrainConfig, *, epoch: int, train_seconds: float) -> None:
    """The run folder's checkpoint after ``epoch`` epochs (everything :func:`_restore` reads)."""
    save_checkpoint(
        run.run_dir / CHECKPOINT,
        model=run.agent.state_dict(),
        optimizer=run.optimizer.state_dict(),
        rng={**_rng_state(run.generator), "device_generator": run.device_gen.get_state()},
        epoch=epoch,
        step=run.step,
        config=dataclasses.asdict(config),
        settings=run.settings.to_dict(),
        agent_config=run.agent.config(),
        train_seconds=train_seconds,
        reward_curve=run.reward_curve,
        data=_data_keys(run),
    )


def _final_evaluation(run: _Run, config: TrainConfig, train_seconds: float) -> dict:
    """The comparison table on the evaluation split (:func:`evaluate_agent`) with the training
    time and reward curve; logged to TensorBoard and written to ``metrics.json``."""
    results = evaluate_agent(
        run.agent,
        run.eval_store,
        run.settings,
        config,
        device=run.device,
        train_store=run.train_store,
        objects=split_objects(run.settings, config.eval_split or run.settings.source.eval_split),
    )
    results["train_seconds"] = round(train_seconds, 1)
    results["reward_curve"] = [round(r, 4) for r in run.reward_curve]
    for name, row in results["policies"].items():
        run.writer.add_scalar(f"eval/mAP_area_{name}", row["mAP_area"], run.step)
    rarl_final(
        run.writer, run.agent, run.eval_store, run.settings, config, results, run.step, run.device
    )  # PR curves, hparams
    run.writer.close()
    (run.run_dir / "metrics.json").write_text(json.dumps({k: v for k, v in results.items() if k != "reports"}, indent=1))
    return results


__all__ = [
    "PAPER",
    "PRESETS",
    "TrainConfig",
    "agent_from_checkpoint",
    "config_from_dict",
    "evaluate_agent",
    "load_checkpoint",
    "predict",
    "preset_config",
    "train",
]
