"""A new image in, labels out: any trained run (RARL, Stable-Baselines3, CEM) on your own pictures.

::

    from agents.predict import Predictor

    predictor = Predictor.from_run("runs/rarl-voc07")            # checkpoint.pt / model.zip / cem.npz or its folder
    for p in predictor.predict(["cat.jpg", "street.jpg"], views=10):
        print(p.source, p.labels, p.top(3))                     # labels (top-k above the threshold), top 3
        p.scores                                                # [{"label": "cat", "score": 0.93}, ...], by score
        p.probs                                                 # [L] label probabilities
        p.boxes                                                 # [V, T, K, 4] glimpse boxes in pixels (x1, y1, x2, y2)
    predictor(["cat.jpg"], top_k=5)                             # [[{"label": "cat", "score": 0.93}, ...]]

As Hugging Face's image-classification pipelines do, a prediction's labels are a list of
``{"label", "score"}`` sorted by score, at most ``top_k`` (default 5) and, here, those with a
probability of at least ``threshold`` (default 0.1); both are checked.

The backbone and its preprocessing (name, weights, input size) come from the run's own settings
(its checkpoint's ``settings``): asking for another backbone or input size, or finding that the
backbone built here differs from the one the run's features were extracted with, is an error,
never a silent mismatch. The backbone runs as in extraction
(:func:`rarl_gym.features.inference.forward`: channels-last on the CPU, float16 autocast on
CUDA) and its maps are rounded to float16 like the cache's, so a picture gets the probabilities
that ``rarl-gym evaluate`` gives the same picture from the cache (tested).

What runs after the backbone is the evaluation's functional core: for RARL, one test-time
:func:`agents.rarl.rollout.rollout` over the views of :func:`rarl_gym.glimpse.ten_views`, as
:func:`agents.rarl.trainer.predict` runs it (tests check that the probabilities are equal), which
also gives the centres for the boxes; for agents trained through the env, :class:`envs.episodes.GlimpseEpisodes` (the env's own
episode logic and region scorer) stepped by the policy's ``predict``, as
:func:`agents.common.evaluation.evaluate_policy_on_split` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from rarl_gym.device import pick_device
from rarl_gym.env_settings import EnvSettings
from rarl_gym.errors import CheckpointError, ConfigError, CorruptFileError
from rarl_gym.features.backbones import Backbone, build_backbone
from rarl_gym.features.inference import PixelRows, as_images, forward, open_image, pixel_loader, stack_pixels
from rarl_gym.features.store import FeatureStore
from rarl_gym.glimpse import anchor_boxes, view_to_image

if TYPE_CHECKING:
    from envs.episodes import GlimpseEpisodes

#: The labels a prediction lists by default: among the top 5 (Hugging Face's ``top_k`` default)
#: and with probability >= 0.1 (the threshold of the CP / CR / CF1 metrics,
#: :func:`rarl_gym.metrics.topk_prf`, which count the top 3).
TOP_K, THRESHOLD = 5, 0.1
#: Which view's boxes the Figure 2 picture shows for a ten-view prediction (the centre crop).
DRAW_VIEW = 4


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive(name: str, value: Any) -> None:
    if not (_is_int(value) and value >= 1):
        raise ConfigError(f"{name} must be a positive int, got {value!r}", f"use e.g. {name}=16")


def check_label_rule(top_k: Any, threshold: Any) -> None:
    """Refuse (:class:`~rarl_gym.errors.ConfigError`) a ``top_k`` that is not ``None`` or an int
    >= 1, and a ``threshold`` that is not ``None`` or a probability in [0, 1] (NaN included)."""
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise ConfigError(f"top_k must be a positive int (or None for every label), got {top_k!r}", "use e.g. top_k=5")
    if threshold is not None and not (
        isinstance(threshold, (int, float, np.floating))
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and 0 <= threshold <= 1
    ):
        raise ConfigError(
            f"threshold must be a probability in [0, 1] (or None for no threshold), got {threshold!r}",
            "use e.g. threshold=0.1",
        )


@dataclass
class Prediction:
    """The prediction for one image.

    Attributes:
        source: the image's path, or ``"<image i>"`` for a PIL image / tensor.
        size: ``(width, height)`` of the picture in pixels.
        classes: the L class names.
        probs: ``[L]`` label probabilities.
        labels: the predicted labels (see :meth:`Predictor.predict`), most probable first.
        boxes: ``[V, T, K, 4]`` the K regions of each glimpse step t = 1..T of each view, in pixels
            ``(x1, y1, x2, y2)`` of the original picture (V = 1 or 10).
        label_boxes: where each predicted label is, by label (pixel boxes ``(x1, y1, x2, y2)``),
            when the agent gives it; ``None`` otherwise. :attr:`scores` and :meth:`to_dict` add a
            label's box to its entry as ``"box"``.
    """

    source: str
    size: tuple[int, int]
    classes: tuple[str, ...]
    probs: np.ndarray
    labels: list[str]
    boxes: np.ndarray = field(repr=False)
    label_boxes: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def scores(self) -> list[dict[str, Any]]:
        """The predicted labels as ``[{"label": name, "score": probability}]``, by score (highest
        first; a label's ``"box"`` added when :attr:`label_boxes` has one)."""
        index = {c: j for j, c in enumerate(self.classes)}
        entries: list[dict[str, Any]] = []
        for name in self.labels:
            entry: dict[str, Any] = {"label": name, "score": round(float(self.probs[index[name]]), 6)}
            if self.label_boxes is not None and name in self.label_boxes:
                entry["box"] = np.round(np.asarray(self.label_boxes[name], dtype=np.float64), 1).tolist()
            entries.append(entry)
        return entries

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable ``(class, probability)``."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(self.classes[j], float(self.probs[j])) for j in order]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``image``, ``width``, ``height``, ``labels`` (:attr:`scores`: ``[{"label",
        "score"}]`` by score), ``probs`` (every class's probability, by class), ``boxes`` (nested
        lists, pixels) and ``label_boxes`` (label -> the pixel box of the region that gave it; empty
        for agents trained through the env)."""
        return {
            "image": self.source,
            "width": int(self.size[0]),
            "height": int(self.size[1]),
            "labels": self.scores,
            "probs": {c: round(float(p), 6) for c, p in zip(self.classes, self.probs)},
            "boxes": np.round(self.boxes, 1).tolist(),
            "label_boxes": {
                name: np.round(np.asarray(box, dtype=np.float64), 1).tolist() for name, box in (self.label_boxes or {}).items()
            },
        }

    def figure2(self, image: Image.Image | None = None) -> Image.Image:
        """The paper's Figure 2 for this image (the regions of each step, predicted labels below);
        for ten views, the boxes of the centre view."""
        from rarl_gym.render import figure2

        if image is None and self.source.startswith("<image "):
            raise ConfigError(f"{self.source} was given as pixels, not a file", "pass the image: prediction.figure2(image)")
        image = image if image is not None else open_image(self.source)
        view = DRAW_VIEW if self.boxes.shape[0] == 10 else 0
        return figure2(image, list(self.boxes[view]), self.labels or [c for c, _ in self.top(1)], label_boxes=self.label_boxes)


def _check_centers(centers: str | None, kind: str, policy: Any) -> str:
    """``centers`` if the run's agent can look there (``None``: ``"peak"`` where the agent has the
    linear head, else ``"learned"``), else a :class:`ConfigError` naming the choices."""
    from agents.rarl.evaluate import RARL_ROWS, rarl_rows

    if centers is None:
        return "peak" if kind == "rarl" and "peak" in rarl_rows(policy) else "learned"
    if kind != "rarl":
        if centers != "learned":
            raise ConfigError(
                f"centers={centers!r}: an agent trained through the env looks where its own policy does",
                "use centers='learned' (the default)",
            )
        return centers
    if centers not in rarl_rows(policy):
        allowed = rarl_rows(policy)
        why = "" if centers not in RARL_ROWS else " (the peak policy needs the linear head)"
        raise ConfigError(f"unknown centres {centers!r} for this run{why}", f"use one of {', '.join(allowed)}")
    return centers


def _run_file(path: Path) -> tuple[str, Path]:
    """``(kind, file)`` of a run folder or file: ``rarl`` (checkpoint.pt), ``sb3`` (model.zip), ``cem`` (cem.npz)."""
    kinds = {"checkpoint.pt": "rarl", "model.zip": "sb3", "cem.npz": "cem"}
    if path.is_dir():
        for name, kind in kinds.items():
            if (path / name).exists():
                return kind, path / name
        raise CheckpointError(
            f"{path} holds no trained run (no {', '.join(kinds)})", "pass a run folder written by rarl-gym train"
        )
    if not path.exists():
        raise CheckpointError(
            f"no run at {path}",
            "pass a run folder written by rarl-gym train (make demo writes runs/rarl-shapes), "
            "or its checkpoint.pt / model.zip / cem.npz",
        )
    return kinds.get(path.name, "rarl"), path


def _run_classes(settings: EnvSettings, num_classes: int) -> tuple[str, ...]:
    """The class names of the run's dataset (without its images where they are fixed)."""
    if settings.dataset == "shapes":
        from rarl_gym.data.shapes import CLASSES as names
    elif settings.dataset == "voc07":
        from rarl_gym.data.voc import VOC_CLASSES as names
    else:
        try:
            names = settings.source.make_dataset(settings.source.eval_split).classes
        except Exception:  # the dataset is not here: numbered classes
            names = tuple(f"class_{i}" for i in range(num_classes))
    names = tuple(names)
    if len(names) != num_classes:
        raise CheckpointError(
            f"the run predicts {num_classes} classes but its dataset {settings.dataset!r} has {len(names)}",
            "pass a run trained by this version of rarl-gym",
        )
    return names


class Predictor:
    """A trained run, ready to label new images. Build it with :meth:`from_run`."""

    def __init__(
        self,
        kind: str,
        settings: EnvSettings,
        policy: Any,
        *,
        crop: float = 0.875,
        device: str | torch.device = "auto",
        backbone: str | None = None,
        input_size: int | None = None,
        run: str = "",
        centers: str | None = None,
    ):
        self.kind, self.settings, self.policy, self.crop, self.run = kind, settings, policy, crop, run
        self.centers = _check_centers(centers, kind, policy)
        self.device = pick_device(str(device))
        if kind == "rarl":  # once here, not per batch (moving a module costs about half a millisecond)
            policy.to(self.device).eval()
        self.input_size = settings.source.size
        if backbone is not None and backbone != settings.backbone:
            raise ConfigError(
                f"the run {run} was trained on {settings.backbone!r} features, not {backbone!r}",
                f"predict with backbone={settings.backbone!r} (the default), or train a run on {backbone!r}",
            )
        if input_size is not None and int(input_size) != self.input_size:
            raise ConfigError(
                f"the run {run} was trained on features of {self.input_size} px images, not {input_size}",
                "leave the input size to the run (the default)",
            )
        self.backbone: Backbone = build_backbone(settings.backbone, pretrained=settings.pretrained, device=self.device)
        channels = self._channels()
        if channels is not None and channels != self.backbone.channels:
            raise CheckpointError(
                f"the run {run} reads {channels}-channel features but the "
                f"backbone {settings.backbone!r} gives {self.backbone.channels}",
                "predict with the backbone the run was trained with",
            )
        self._check_cache_weights()
        self.num_classes = self._num_classes()
        self.classes = _run_classes(settings, self.num_classes)
        self._episodes: GlimpseEpisodes | None = None

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_run(
        cls,
        run: str | Path,
        *,
        device: str | torch.device = "auto",
        backbone: str | None = None,
        input_size: int | None = None,
        data_root: str | None = None,
        centers: str | None = None,
    ) -> Predictor:
        """Load a run: its folder, or its ``checkpoint.pt`` (RARL), ``model.zip`` (SB3) or ``cem.npz`` (CEM).

        ``centers``: where a RARL agent looks (:data:`agents.rarl.evaluate.RARL_ROWS`). Default
        (``None``): ``"peak"``, the class-map peaks of the most likely classes, for a run with the
        linear head (the best one-sequence mAP of the same model on VOC07 val, docs/design.md), else
        ``"learned"``; ``"learned"`` is the agent's own policy (its label boxes lie on the objects
        more often). Agents trained through the env look where their own policy does.

        ``backbone`` / ``input_size`` are checked against the run's (a different one is a
        :class:`ConfigError`); ``data_root`` only matters for an SB3 / CEM run, whose env scorer is
        read from beside its training split's feature cache.
        """
        kind, path = _run_file(Path(run))
        if kind == "rarl":
            from agents.rarl.trainer import agent_from_checkpoint, load_checkpoint

            ckpt = load_checkpoint(path)
            if "settings" not in ckpt or "agent_config" not in ckpt:
                raise CheckpointError(
                    f"{path} has no settings: it was not written by rarl-gym train",
                    "pass a run written by rarl-gym train",
                )
            settings = EnvSettings.from_kwargs(**ckpt["settings"])
            policy: Any = agent_from_checkpoint(ckpt)
            crop = ckpt.get("config", {}).get("augment_crop", 0.875)
        else:
            if kind == "sb3":
                from agents.sb3.train import load_model

                policy, config = load_model(path, str(pick_device(str(device))))
            else:
                from agents.custom.cem import load_cem

                policy, config = load_cem(path)
            settings = EnvSettings.from_env_id(config["env_id"], config["env_kwargs"])
            crop = 0.875
        if data_root is not None:
            settings = settings.replace(root=data_root)
        return cls(
            kind,
            settings,
            policy,
            crop=crop,
            device=device,
            backbone=backbone,
            input_size=input_size,
            run=str(run),
            centers=centers,
        )

    def _channels(self) -> int | None:
        if self.kind == "rarl":
            return int(self.policy.channels)
        space: Any = getattr(self.policy, "observation_space", None)
        try:
            return int(space["glimpses"].shape[1])
        except (TypeError, KeyError, IndexError, AttributeError):
            return None

    def _num_classes(self) -> int:
        if self.kind == "rarl":
            return int(self.policy.num_classes)
        return len(self._env_classes())

    def _env_classes(self) -> tuple[str, ...]:
        return tuple(self._episodes_store().classes)

    def _episodes_store(self) -> FeatureStore:
        """The training split's cache of an env-trained run (its env scorer lives beside it)."""
        return self.settings.source.open_split(self.settings.source.train_split, progress=False)[1]

    def _check_cache_weights(self) -> None:
        """When the run's training features are cached here, their backbone weights and stride must be this backbone's."""
        from rarl_gym.features.store import cache_key, entry_path

        try:
            dataset = self.settings.source.make_dataset(self.settings.source.train_split)
            path = entry_path(
                cache_key(dataset, self.settings.backbone, self.settings.pretrained, self.input_size), self.settings.cache_dir
            )
            import json

            meta = json.loads((path / "meta.json").read_text())
        except Exception:  # no dataset or no cache here: nothing to compare with
            return
        mine = {"weights": self.backbone.weights, "stride": self.backbone.stride, "channels": self.backbone.channels}
        theirs = {"weights": meta.get("weights"), "stride": meta.get("stride"), "channels": meta.get("shape", [None, None])[1]}
        diff = {k: (theirs[k], mine[k]) for k in mine if theirs[k] is not None and theirs[k] != mine[k]}
        if diff:
            lines = "; ".join(f"{k}: run's features {a!r} vs here {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(
                f"the backbone built here is not the one the run {self.run} was trained on ({lines})",
                "install the same backbone weights (or retrain on these)",
            )

    # -- the two halves ---------------------------------------------------------------------------
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Feature maps ``[B, C, H, W]`` (float16, the cache's precision) of uint8 pixels ``[B, 3, N, N]``."""
        return forward(self.backbone, pixels, self.device)

    @torch.no_grad()
    def predict_maps(
        self, maps: torch.Tensor, sizes: Sequence[tuple[int, int]], *, views: int = 1, samples: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The agent's part: probabilities ``[B, L]``, pixel boxes ``[B, V, T, K, 4]`` and, for RARL
        runs, per class the pixel box of the region that gave its score ``[B, L, 4]`` (``None`` for
        agents trained through the env) of feature maps ``[B, C, H, W]`` of pictures of ``sizes``.
        ``samples``: see :meth:`predict`."""
        if views not in (1, 10):
            raise ConfigError(f"views must be 1 or 10, got {views}", "use views=1 or views=10")
        self.check_samples(samples)
        label_boxes = None
        if self.kind == "rarl":
            probs, boxes, label_boxes = self._rarl(maps, views, samples)
        else:
            if views != 1:
                raise ConfigError(f"views={views}: agents trained through the env see the whole image only", "use views=1")
            probs, boxes = self._env_agent(maps)
        wh = torch.as_tensor(np.asarray(sizes, dtype=np.float32)).repeat(1, 2)  # [B, 4]
        pixels = (boxes + 1.0) * wh[:, None, None, None, :] / 2.0  # [B, V, T, K, 4]
        label_pixels = None if label_boxes is None else ((label_boxes + 1.0) * wh[:, None, :] / 2.0).numpy()
        return probs, pixels.numpy(), label_pixels

    def check_samples(self, samples: Any) -> None:
        """Refuse (:class:`ConfigError`) ``samples`` that is not a positive int, or M > 1 sequences
        from centres that are the same every time (only ``"learned"`` and ``"random"`` sample)."""
        from agents.rarl.evaluate import ENSEMBLE_ROWS

        _check_positive("samples", samples)
        if samples > 1 and self.kind != "rarl":
            raise ConfigError(
                f"samples={samples}: an agent trained through the env looks once, at the whole image", "use samples=1"
            )
        if samples > 1 and self.centers not in ENSEMBLE_ROWS:
            raise ConfigError(
                f"samples={samples}: the {self.centers!r} centres are the same every time",
                f"sample M sequences with centers in {ENSEMBLE_ROWS} (--centers learned)",
            )

    def _rarl(self, maps: torch.Tensor, views: int, samples: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """One test-time rollout of the B x V views x M sequences, as :func:`agents.rarl.evaluate.predict`
        runs it (the same views, probabilities averaged over views and sequences), keeping the
        centres (of each view's first sequence) and, per class, the region that gave its score in
        the sequence where it scored highest (image coordinates)."""
        from agents.rarl.evaluate import view_batch
        from agents.rarl.rollout import rollout

        agent = self.policy
        b, reps = maps.shape[0], views * samples
        feats = maps.to(self.device, torch.float32)
        labels = torch.zeros(b * reps, self.num_classes, dtype=torch.int8, device=self.device)
        view = view_batch(b, views, self.crop, self.device, repeat=samples)
        generator = torch.Generator(device=self.device).manual_seed(0)
        out = rollout(
            agent,
            feats,
            labels,
            **self.settings.rollout_kwargs(),
            centers=self.centers,
            sample=samples > 1,
            generator=generator,
            view=view,
            repeat=reps,
        )
        p = agent.probabilities(out.fused).reshape(b, reps, -1)  # [B, V*M, L]
        t = out.centers.shape[1]
        boxes = anchor_boxes(out.centers.reshape(-1, 2), self.settings.scales, self.settings.ratios).reshape(
            b * reps, t, -1, 4
        )
        regions = out.regions  # [B*V*M, R, 4] image coordinates (of the mirrored image for a mirrored view)
        if view is not None:  # view coordinates -> image coordinates
            k = boxes.shape[2]  # K anchors per centre
            boxes = view_to_image(boxes.reshape(b * reps, t * k, 4), view[0], view[1]).reshape(b * reps, t, k, 4)
            mirrored = torch.stack([-regions[..., 2], regions[..., 1], -regions[..., 0], regions[..., 3]], -1)
            regions = torch.where(view[1][:, None, None], mirrored, regions)
        best = p.argmax(1)  # [B, L] the sequence where each class scored highest
        rows, classes = torch.arange(b, device=p.device)[:, None], torch.arange(p.shape[-1], device=p.device)
        giver = out.giver.reshape(b, reps, -1)[rows, best, classes]  # [B, L]
        label_boxes = regions.reshape(b, reps, -1, 4)[rows, best, giver]  # [B, L, 4]
        boxes = boxes.reshape(b, views, samples, t, -1, 4)[:, :, 0]  # [B, V, T, K, 4] each view's first sequence
        return p.mean(1).cpu().numpy(), boxes.cpu(), label_boxes.cpu()

    def _env_agent(self, maps: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        from agents.common.evaluation import env_scores_to_probs
        from envs.episodes import GlimpseEpisodes

        if self._episodes is None:  # the env's episode logic and region scorer, as on the evaluation split
            self._episodes = GlimpseEpisodes.from_settings(
                self.settings.replace(split=self.settings.source.eval_split), progress=False
            )
        episodes = self._episodes
        b = maps.shape[0]
        glimpses = episodes.reset(maps, torch.zeros(b, self.num_classes, dtype=torch.int8))
        state, first = None, np.ones(b, bool)
        for t in range(episodes.num_steps + 1):
            obs = {"glimpses": glimpses.numpy().astype(np.float32), "step": np.full(b, t, dtype=np.int64)}
            actions, state = self.policy.predict(obs, state=state, episode_start=first, deterministic=True)
            actions = np.clip(np.asarray(actions, dtype=np.float32).reshape(b, -1), -1.0, 1.0)
            first[:] = False
            scores = None if self.settings.mode == "locate" else torch.from_numpy(actions[:, 2:])
            stepped, _ = episodes.step(torch.from_numpy(actions[:, :2]), scores)
            if stepped is not None:  # None after the last step
                glimpses = stepped
        probs = env_scores_to_probs(episodes.fused.numpy(), self.settings.mode).astype(np.float32)
        boxes = torch.stack(episodes.history, dim=1)[:, None]  # [B, 1, T, K, 4]
        return probs, boxes

    # -- images in, predictions out ----------------------------------------------------------------
    def _labels(self, probs: np.ndarray, threshold: float | None, top_k: int | None) -> list[str]:
        order = np.argsort(-probs, kind="stable")[: (top_k or len(probs))]
        return [self.classes[j] for j in order if threshold is None or probs[j] >= threshold]

    def __call__(
        self,
        images: Any,
        *,
        top_k: int | None = TOP_K,
        threshold: float | None = THRESHOLD,
        views: int = 1,
        samples: int = 1,
    ) -> list[list[dict[str, Any]]]:
        """As a Hugging Face image-classification pipeline: per image, its labels as
        ``[{"label", "score"}]`` sorted by score (:attr:`Prediction.scores`); see :meth:`predict`."""
        return [p.scores for p in self.predict(images, views=views, samples=samples, threshold=threshold, top_k=top_k)]

    def predict(
        self,
        images: Any,
        *,
        views: int = 1,
        threshold: float | None = THRESHOLD,
        top_k: int | None = TOP_K,
        batch_size: int = 16,
        samples: int = 1,
    ) -> list[Prediction]:
        """Predictions for ``images``: paths, PIL images, or an RGB tensor ``[B, 3, H, W]`` (uint8 or
        float in ``[0, 1]``). A bad file raises :class:`~rarl_gym.errors.CorruptFileError`.

        ``views``: 1 (the whole image) or 10 (4 corner crops, the centre crop and their mirrors,
        cut from one feature map; RARL runs). ``samples``: M > 1 averages M sequences sampled from
        the policy per view (test-time Monte-Carlo sampling; RARL runs whose ``centers`` are
        ``"learned"`` or ``"random"``; BENCHMARKS.md gives its cost and accuracy). ``labels``
        lists the classes among the ``top_k`` most probable whose probability is at least
        ``threshold`` (``None`` turns either off; default:
        the top 5 with a probability of at least 0.1); ``top_k`` must be a positive int,
        ``threshold`` a probability in [0, 1], ``batch_size`` a positive int (a
        :class:`~rarl_gym.errors.ConfigError` otherwise).
        """
        check_label_rule(top_k, threshold)
        _check_positive("batch_size", batch_size)
        self.check_samples(samples)
        items = as_images(images)
        out: list[Prediction] = []
        for lo in range(0, len(items), batch_size):
            chunk = items[lo : lo + batch_size]
            loaded = [open_image(x) if isinstance(x, (str, Path)) else x for x in chunk]
            pixels = Backbone.pixels(loaded, self.input_size)
            names = [str(x) if isinstance(x, (str, Path)) else f"<image {lo + i}>" for i, x in enumerate(chunk)]
            out += self._predictions(pixels, [im.size for im in loaded], names, views, threshold, top_k, samples)
        return out

    def _predictions(
        self,
        pixels: torch.Tensor,
        sizes: Sequence[tuple[int, int]],
        names: Sequence[str],
        views: int,
        threshold: float | None,
        top_k: int | None,
        samples: int = 1,
    ) -> list[Prediction]:
        probs, boxes, label_boxes = self.predict_maps(self.features(pixels), sizes, views=views, samples=samples)
        out = []
        for i, (name, size, p, bx) in enumerate(zip(names, sizes, probs, boxes)):
            labels = self._labels(p, threshold, top_k)
            where = None if label_boxes is None else {c: label_boxes[i, self.classes.index(c)] for c in labels}
            out.append(Prediction(name, (int(size[0]), int(size[1])), self.classes, p, labels, bx, where))
        return out

    def predict_files(
        self,
        paths: Sequence[str | Path],
        *,
        views: int = 1,
        threshold: float | None = THRESHOLD,
        top_k: int | None = TOP_K,
        batch_size: int = 16,
        workers: int | None = None,
        samples: int = 1,
    ) -> Iterator[Prediction | CorruptFileError]:
        """Like :meth:`predict` for many files, in order, with loader workers decoding ahead; a file
        that cannot be read yields its :class:`CorruptFileError` instead of a prediction (the
        others go on). ``workers`` is ``None`` (one per core beyond two) or an int >= 0."""
        check_label_rule(top_k, threshold)
        _check_positive("batch_size", batch_size)
        self.check_samples(samples)
        if workers is not None and not (_is_int(workers) and workers >= 0):
            raise ConfigError(f"workers must be None or an int >= 0, got {workers!r}", "use workers=0 (decode here) or more")
        paths = [str(p) for p in paths]
        if workers is None and len(paths) <= 2 * batch_size:
            workers = 0
        rows = PixelRows(lambda i: open_image(paths[i]), len(paths), self.input_size)
        for items in pixel_loader(rows, batch_size, workers=workers, device=self.device):
            good = [item for item in items if item[2] is not None]
            results: dict[int, Prediction | CorruptFileError] = {}
            if good:
                preds = self._predictions(
                    stack_pixels(good, self.device),
                    [size for _, _, size in good],
                    [paths[i] for i, _, _ in good],
                    views,
                    threshold,
                    top_k,
                    samples,
                )
                results.update({i: p for (i, _, _), p in zip(good, preds)})
            for i, err, size in items:
                if size is None:
                    if not isinstance(err, Exception):
                        raise err  # KeyboardInterrupt and the like
                    results[i] = (
                        err
                        if isinstance(err, CorruptFileError)
                        else CorruptFileError(f"{paths[i]}: {err}", "skip or replace the file")
                    )
            for i, _, _ in items:
                yield results[i]


__all__ = ["DRAW_VIEW", "THRESHOLD", "TOP_K", "Prediction", "Predictor", "check_label_rule"]
