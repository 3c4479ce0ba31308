"""What a user sees in TensorBoard while an agent trains, besides the scalars.

* ``figure2/<i>`` (images): the paper's Figure 2 of a few fixed evaluation images (the regions of
  each glimpse step in that step's colour, predicted and true labels below), every epoch (RARL)
  or every tenth of the run (SB3), so the attention can be watched as it is learnt.
* ``pr/<class>`` (PR curves): one precision-recall curve per class of the final evaluation
  (learned centres; difficult labels left out, as the metrics do).
* the HPARAMS tab (``tb/hparams``): the run's hyperparameters with its final metrics
  (``hparam/mAP_area_<centres>``, ``hparam/CF1_learned``...), to compare runs side by side.

The RARL trainer calls :func:`rarl_figure2` and :func:`rarl_final`; the SB3 training calls
:class:`Figure2Callback` and :func:`env_agent_final` (one line each).

A full disk or a read-only folder under the logs is a :class:`~rarl_gym.errors.DiskFullError` /
:class:`~rarl_gym.errors.NotWritableError` naming the folder and the fix, not a traceback of
TensorBoard's writer thread: open writers with :func:`open_writer` (SB3's own TensorBoard writer
is wrapped the same way by :class:`Figure2Callback`).
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import NotWritableError, RarlGymError
from rarl_gym.glimpse import anchor_boxes, boxes_to_pixels
from rarl_gym.io import disk_full_error, is_disk_full

if TYPE_CHECKING:
    from stable_baselines3.common.callbacks import BaseCallback

    from rarl_gym.features.store import FeatureStore

#: How many fixed evaluation images the Figure 2 pictures show.
FIGURE_IMAGES = 4


# -- the writer, its errors named ---------------------------------------------------------------
#: errno values of a folder that may not be written (read-only file system, permissions).
NOT_WRITABLE_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


def writer_error(err: BaseException, folder: str | Path) -> RarlGymError | None:
    """The named error for an ``OSError`` met while writing the TensorBoard logs in ``folder`` (a
    full disk: :class:`~rarl_gym.errors.DiskFullError`; a read-only folder, or a file where the
    folder should be: :class:`~rarl_gym.errors.NotWritableError`); ``None`` for anything else."""
    folder = Path(folder)
    if isinstance(err, RarlGymError):
        return err
    if is_disk_full(err):
        return disk_full_error(folder / "events.out.tfevents", "TensorBoard logs", err=err)
    if isinstance(err, OSError) and (err.errno in NOT_WRITABLE_ERRNOS or isinstance(err, PermissionError)):
        return NotWritableError(
            f"cannot write the TensorBoard logs in {folder}: {err.strerror or err}",
            f"make {folder} writable (or remove a file in its way), or train into another --run-dir; "
            "the checkpoint of the last finished epoch or save is kept",
        )
    return None


def _named(fn: Callable[..., Any], folder: Path) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as err:
            named = writer_error(err, folder)
            if named is None:
                raise
            raise named from err

    return call


class NamedErrorsWriter:
    """A TensorBoard ``SummaryWriter`` (torch's, or the one SB3's logger holds) whose ``OSError`` s
    are named (:func:`writer_error`): every method call, and with it the error that the writer's
    background thread met and TensorBoard re-raises on the next call, or at ``flush`` / ``close``."""

    def __init__(self, writer: Any, folder: str | Path):
        self._writer, self._folder = writer, Path(folder)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._writer, name)
        return _named(value, self._folder) if callable(value) else value

    def close(self) -> None:
        """Close the writer; an error its thread met and nothing re-raised since is raised now (named)."""
        workers = _writer_threads(self._writer)  # torch's close() drops its file writers
        _named(self._writer.close, self._folder)()
        for thread_error in [w.exception for w in workers if isinstance(getattr(w, "exception", None), BaseException)]:
            named = writer_error(thread_error, self._folder)
            if named is not None:
                raise named from thread_error

    def __enter__(self) -> NamedErrorsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _writer_threads(writer: Any) -> list[Any]:
    """The event-writer threads of a torch ``SummaryWriter``, whose exceptions TensorBoard re-raises
    on the next write but not at ``close``."""
    file_writers = [getattr(writer, "file_writer", None), *(getattr(writer, "all_writers", None) or {}).values()]
    threads = []
    for file_writer in file_writers:
        worker = getattr(getattr(getattr(file_writer, "event_writer", None), "_async_writer", None), "_worker", None)
        if worker is not None and worker not in threads:
            threads.append(worker)
    return threads


def _thread_error_is_reraised(args: threading.ExceptHookArgs) -> bool:
    """Whether the exception that ends a thread is an OSError of TensorBoard's event writer thread
    (which TensorBoard re-raises in the writing thread: printing it there too would be a bare traceback)."""
    return type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, OSError)


def _quiet_writer_threads() -> None:
    """Install (once) a ``threading.excepthook`` that leaves the writer thread's OSError to the
    writing thread, where :class:`NamedErrorsWriter` names it; every other thread's error is printed as before."""
    if getattr(threading.excepthook, "_rarl_gym_quiet", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not _thread_error_is_reraised(args):
            previous(args)

    hook._rarl_gym_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def open_writer(folder: str | Path) -> NamedErrorsWriter:
    """A TensorBoard ``SummaryWriter`` logging into ``folder`` with its errors named: a file in
    the way of the folder, a read-only folder or a full disk is a :class:`~rarl_gym.errors.RarlGymError`
    naming the fix, at once or at the write that meets it."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotWritableError(
            f"{folder} is a file, not a folder: the run's TensorBoard logs go there",
            f"remove or rename the file {folder}, or train into another --run-dir",
        )
    _quiet_writer_threads()
    return NamedErrorsWriter(_named(SummaryWriter, folder)(str(folder)), folder)


def name_sb3_writer_errors(logger: Any) -> None:
    """Wrap the TensorBoard writer of an SB3 logger (``model.logger``) in :class:`NamedErrorsWriter`."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat

    _quiet_writer_threads()
    for fmt in getattr(logger, "output_formats", []):
        if isinstance(fmt, TensorBoardOutputFormat) and not isinstance(fmt.writer, NamedErrorsWriter):
            fmt.writer = NamedErrorsWriter(fmt.writer, Path(fmt.writer.log_dir))  # type: ignore[assignment]


def fixed_indices(n: int, count: int = FIGURE_IMAGES) -> list[int]:
    """``count`` image indices spread evenly over a split of ``n`` (the same every epoch)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(count, n)).round()})


def figure2_pictures(
    dataset: Any,
    classes: Sequence[str],
    indices: Sequence[int],
    boxes: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    label_boxes: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Figure 2 pictures ``[H, W, 3]`` uint8 of the images ``indices`` of ``dataset``.

    ``boxes [B, T, K, 4]`` in image coordinates ``[-1, 1]``; ``probs [B, L]``; ``labels [B, L]``
    (1 / 0 / -1); ``label_boxes [B, L, 4]`` (image coordinates): per class the region that gave its
    score, drawn as one labelled box per predicted label over the faint glimpse trail. The
    predicted labels are the ``k`` most probable, k = the number of true ones.
    """
    from rarl_gym.render import figure2

    pictures = []
    for row, index in enumerate(indices):
        image = dataset.load_image(int(index))
        w, h = image.size
        true = [c for c, y in zip(classes, labels[row].tolist()) if y == 1]
        pred = [classes[j] for j in np.argsort(-probs[row], kind="stable")[: max(1, len(true))]]
        pixels = boxes_to_pixels(torch.as_tensor(boxes[row]), w, h).numpy()
        where = None
        if label_boxes is not None:
            at = boxes_to_pixels(torch.as_tensor(label_boxes[row]), w, h).numpy()  # [L, 4]
            where = {c: at[list(classes).index(c)] for c in pred}
        pictures.append(np.asarray(figure2(image, list(pixels), pred, true, label_boxes=where)))
    return pictures


_DATASETS: dict[str, object] = {}


def _dataset(settings: EnvSettings, split: str) -> Any:
    """The split's dataset object, made once per process (COCO parses its annotation file)."""
    import json

    key = json.dumps([settings.to_dict(), split], sort_keys=True, default=str)
    if key not in _DATASETS:
        _DATASETS[key] = settings.source.make_dataset(split)
    return _DATASETS[key]


def log_pictures(writer: Any, pictures: Sequence[np.ndarray], step: int, tag: str = "figure2") -> None:
    for i, picture in enumerate(pictures):
        writer.add_image(f"{tag}/{i}", picture, step, dataformats="HWC")


def log_pr_curves(
    writer: Any, probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], step: int, tag: str = "pr"
) -> None:
    """``add_pr_curve`` per class: ``labels`` 1 / 0, difficult (-1) entries left out."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    for c, name in enumerate(classes):
        keep = labels[:, c] >= 0
        if keep.any():
            writer.add_pr_curve(f"{tag}/{name}", labels[keep, c] > 0, probs[keep, c], step)


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return "None" if value is None else value
    return str(value)


def log_hparams(writer: Any, hparams: dict, results: dict) -> None:
    """``add_hparams`` of the run's flat hyperparameters and its final metrics (into ``<logdir>/hparams``)."""
    flat = {}
    for key, value in hparams.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": _scalar(v) for k, v in value.items() if not isinstance(v, (dict, list, tuple))})
        else:
            flat[key] = _scalar(value)
    metrics = {}
    for name, row in results.get("policies", {}).items():
        for key in ("mAP_area", "mAP_voc07", "CF1", "OF1", "reward"):
            if isinstance(row.get(key), (int, float)) and np.isfinite(row[key]):
                metrics[f"hparam/{key}_{name}"] = float(row[key])
    writer.add_hparams(flat, metrics, run_name="hparams")


# -- RARL ------------------------------------------------------------------------------------------
@torch.no_grad()
def rarl_figure2(
    writer: Any,
    agent: Any,
    store: FeatureStore,
    settings: EnvSettings,
    step: int,
    device: torch.device | str,
    count: int = FIGURE_IMAGES,
) -> None:
    """Figure 2 of ``count`` fixed images of ``store`` with the agent's current (test-time) centres."""
    from agents.rarl.rollout import rollout

    indices = fixed_indices(len(store), count)
    feats, labels = store.batch(indices, device)
    was_training = agent.training
    agent.eval()
    try:
        out = rollout(agent, feats, labels, **settings.rollout_kwargs(), sample=False)
        to_probs = getattr(agent, "probabilities", None) or (lambda fused: torch.softmax(fused, dim=-1))
        probs = to_probs(out.fused).cpu().numpy()
    finally:
        agent.train(was_training)
    t = out.centers.shape[1]
    boxes = anchor_boxes(out.centers.reshape(-1, 2).cpu(), settings.scales, settings.ratios).reshape(len(indices), t, -1, 4)
    dataset = _dataset(settings, store.meta["key"]["split"])
    rows = torch.arange(len(indices), device=out.giver.device)[:, None]
    label_boxes = out.regions[rows, out.giver].cpu().numpy()  # [B, L, 4]: the region that gave each class
    pictures = figure2_pictures(dataset, store.classes, indices, boxes.numpy(), probs, labels.cpu().numpy(), label_boxes)
    log_pictures(writer, pictures, step)


def rarl_final(
    writer: Any,
    agent: Any,
    store: FeatureStore,
    settings: EnvSettings,
    config: Any,
    results: dict,
    step: int,
    device: torch.device | str,
) -> None:
    """PR curves of the final evaluation (learned centres, the run's views) and the hyperparameters."""
    from agents.rarl.evaluate import predict

    probs = predict(agent, store, settings, views=config.eval_views, view_crop=config.augment_crop, device=device).probs
    log_pr_curves(writer, probs, store.labels, store.classes, step)
    log_hparams(writer, {**dataclasses.asdict(config), **{f"env.{k}": v for k, v in settings.to_dict().items()}}, results)


# -- agents trained through the env (SB3, CEM) ----------------------------------------------------
def env_agent_episodes(policy: Any, env_id: str, env_kwargs: dict, split: str, indices: Sequence[int]) -> dict:
    """One deterministic episode per image ``indices`` of ``split``: the final info (``boxes`` in
    pixels, ``scores``, ``labels``) and ``probs``."""
    from agents.common.evaluation import env_scores_to_probs, lockstep_envs, play_episodes

    venv = lockstep_envs(env_id, env_kwargs, split, len(indices))
    try:
        final, _ = play_episodes(policy, venv, np.asarray(indices))
        info: dict[str, Any] = {k: np.asarray(final[k]) for k in ("boxes", "scores", "labels")}
        info["probs"] = env_scores_to_probs(info["scores"], venv.unwrapped.mode)
        info["classes"] = tuple(venv.unwrapped.classes)
        info["dataset"] = venv.unwrapped.data
        return info
    finally:
        venv.close()


def env_agent_figure2(writer: Any, policy: Any, env_id: str, env_kwargs: dict, step: int, count: int = FIGURE_IMAGES) -> None:
    settings = EnvSettings.from_env_id(env_id, env_kwargs)
    split = settings.source.eval_split
    n = len(settings.source.open_split(split, progress=False)[1])
    indices = fixed_indices(n, count)
    info = env_agent_episodes(policy, env_id, env_kwargs, split, indices)
    first = info["dataset"]
    sizes = np.asarray([first.load_image(i).size for i in indices], np.float32)  # boxes in pixels -> [-1, 1]
    unit = info["boxes"] / np.tile(sizes, 2)[:, None, None, :] * 2.0 - 1.0
    log_pictures(writer, figure2_pictures(first, info["classes"], indices, unit, info["probs"], info["labels"]), step)


def env_agent_final(writer: Any, policy: Any, config: dict, results: dict, step: int) -> None:
    """PR curves of the final evaluation (the policy's centres) and the run's hyperparameters."""
    from agents.common.evaluation import evaluate_policy_on_split

    pred = evaluate_policy_on_split(
        policy, config["env_id"], config["env_kwargs"], results["split"], seed=config.get("seed", 0)
    )
    log_pr_curves(writer, pred.probs, pred.labels, pred.classes, step)
    env_agent_figure2(writer, policy, config["env_id"], config["env_kwargs"], step)
    log_hparams(writer, {k: v for k, v in config.items() if k != "settings"}, results)


class Figure2Callback:
    """An SB3 callback (built lazily, so this module imports without SB3) that logs the Figure 2
    pictures to the run's TensorBoard every ``every`` environment steps; it also names the errors
    of SB3's TensorBoard writer (:func:`name_sb3_writer_errors`)."""

    def __new__(cls, env_id: str, env_kwargs: dict, every: int) -> BaseCallback:  # type: ignore[misc]  # a factory
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.logger import TensorBoardOutputFormat

        class _Figure2(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.next = every

            def _on_training_start(self) -> None:
                name_sb3_writer_errors(self.logger)  # a full disk or read-only tb/: named, not the writer thread's traceback

            def _on_step(self) -> bool:
                if self.num_timesteps >= self.next:
                    self.next = self.num_timesteps + every
                    writer = next(
                        (f.writer for f in self.logger.output_formats if isinstance(f, TensorBoardOutputFormat)), None
                    )
                    if writer is not None:
                        env_agent_figure2(writer, self.model, env_id, env_kwargs, self.num_timesteps)
                return True

        return _Figure2()


__all__ = [
    "FIGURE_IMAGES",
    "Figure2Callback",
    "NamedErrorsWriter",
    "env_agent_episodes",
    "env_agent_figure2",
    "env_agent_final",
    "figure2_pictures",
    "fixed_indices",
    "log_hparams",
    "log_pictures",
    "log_pr_curves",
    "name_sb3_writer_errors",
    "open_writer",
    "rarl_figure2",
    "rarl_final",
    "writer_error",
]
