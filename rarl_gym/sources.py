"""Where an env's (or a trainer's) features come from: dataset + backbone + input size -> cache.

:func:`open_split` resolves a dataset name and split to a finished :class:`FeatureStore`
(extracting it on first use) and :func:`region_scorer` gives the env's ``locate``-mode scorer,
fitted once on the training split and saved beside that split's cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rarl_gym.data import make_dataset
from rarl_gym.data.base import MultiLabelDataset
from rarl_gym.data.files import dataset_root
from rarl_gym.errors import ConfigError, CorruptFileError, DatasetNotFoundError, NotWritableError, check_choice
from rarl_gym.features.store import FeatureStore, extract_features, resolve_entry
from rarl_gym.glimpse import DEFAULT_RATIOS, DEFAULT_SCALES
from rarl_gym.io import writable
from rarl_gym.scorer import CrossFitScorer, fit_cross_fitted_scorer, load_scorer, read_scorer, save_scorer

#: COCO: each split's counterpart in the other release (taken when only that one is on disk).
COCO_RELEASES = {"train2014": "train2017", "train2017": "train2014", "val2014": "val2017", "val2017": "val2014"}

#: Per dataset: the training split (default env split, where the scorer is fitted), the split
#: agents are evaluated on, and the backbone input size.
DATASETS: dict[str, dict[str, Any]] = {
    "shapes": {"train_split": "train", "eval_split": "test", "input_size": 256},
    "voc07": {"train_split": "train", "eval_split": "val", "input_size": 320},
    "coco": {"train_split": "train2014", "eval_split": "val2014", "input_size": 320},
}


#: How the env's ``locate``-mode scorer is fitted (:func:`rarl_gym.scorer.fit_cross_fitted_scorer`):
#: 2 folds, each a linear multiple-instance fit on half of the training split. See docs/design.md
#: for how the settings were chosen (the first ones, 10 epochs at lr 1e-3, were underfit).
SCORER_FIT: dict[str, Any] = {"folds": 2, "regions_per_image": 2, "epochs": 60, "lr": 3e-3}


@dataclass(frozen=True)
class FeatureSource:
    """Everything that fixes a split's cached features."""

    dataset: str = "shapes"
    root: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    input_size: int | None = None
    cache_dir: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, tuple(DATASETS))

    @property
    def size(self) -> int:
        return int(self.input_size or DATASETS[self.dataset]["input_size"])

    @property
    def train_split(self) -> str:
        """The default env split and where the scorer is fitted: :data:`DATASETS`'s, except that
        COCO takes ``train2017`` when only the 2017 release is on disk."""
        default = DATASETS[self.dataset]["train_split"]
        return self._present(default, COCO_RELEASES[default]) if self.dataset == "coco" else default

    @property
    def eval_split(self) -> str:
        """The split agents are evaluated on: :data:`DATASETS`'s, except that COCO takes
        ``val2017`` when only the 2017 release is on disk."""
        default = DATASETS[self.dataset]["eval_split"]
        return self._present(default, COCO_RELEASES[default]) if self.dataset == "coco" else default

    def scorer_split(self, split: str | None = None) -> str:
        """The training split the ``locate``-mode scorer of an env on ``split`` is fitted on: the
        training split of the same COCO release when it is on disk (``train2017`` for ``val2017``),
        else :attr:`train_split`."""
        if self.dataset == "coco" and split and split[-4:] in ("2014", "2017"):
            same = f"train{split[-4:]}"
            return self._present(same, COCO_RELEASES[same]) if self._coco_has(same) else self.train_split
        return self.train_split

    def _check_scorer_split(self, split: str | None, train_split: str) -> None:
        """COCO in ``locate`` mode needs a training split on disk to fit its scorer on: name the one of
        the env's own release (``train2017`` for ``val2017``) and the splits that are there, not the
        default ``instances_train2014.json`` the dataset would report."""
        if self.dataset != "coco" or self._coco_has(train_split):
            return
        try:
            root = dataset_root(self.root, "coco", "coco")
        except Exception:  # no root known: the dataset reports it when opened
            return
        if not (root / "annotations").is_dir():
            return  # no COCO layout at all: the dataset's own message says what is missing
        present = sorted(p.name[len("instances_") : -len(".json")] for p in (root / "annotations").glob("instances_*.json"))
        year = split[-4:] if split and split[-4:] in ("2014", "2017") else train_split[-4:]
        raise DatasetNotFoundError(
            f"mode='locate' fits the env's region scorer on a COCO training split, and {root} has none: no "
            f"annotations/instances_train{year}.json (nor the other release's); "
            f"splits present: {', '.join(present) or 'none'}",
            f"download train{year}.zip and annotations_trainval{year}.zip from https://cocodataset.org/#download into "
            f"{root}, or use mode='joint' (the agent scores the regions itself; no training split needed)",
        )

    def _coco_has(self, split: str) -> bool:
        try:
            root = dataset_root(self.root, "coco", "coco")
        except Exception:  # no root known: the dataset reports it when opened
            return False
        return (root / "annotations" / f"instances_{split}.json").is_file()

    def _present(self, first: str, second: str) -> str:
        """``first`` unless only ``second`` has an annotation file on disk."""
        return second if not self._coco_has(first) and self._coco_has(second) else first

    def make_dataset(self, split: str) -> MultiLabelDataset:
        return make_dataset(self.dataset, split, root=self.root, **self.dataset_kwargs)

    def feature_store(
        self,
        dataset: MultiLabelDataset,
        *,
        device: torch.device | str = "cpu",
        progress: bool = True,
        batch_size: int = 16,
        workers: int | None = None,
    ) -> FeatureStore:
        """The finished feature cache of ``dataset`` (a split from :meth:`make_dataset`), extracted first
        if needed: :func:`rarl_gym.features.store.extract_features` with this source's backbone, weights,
        input size and cache folder."""
        return extract_features(
            dataset,
            self.backbone,
            self.size,
            pretrained=self.pretrained,
            cache_dir=self.cache_dir,
            batch_size=batch_size,
            device=device,
            progress=progress,
            workers=workers,
        )

    def data_key(self, split: str) -> str:
        """The key of the data of ``split`` as it is on disk now (image ids, labels, every image file's size
        and modification time: :meth:`rarl_gym.data.base.MultiLabelDataset.cache_key`), as the feature
        cache it is read from records it (``FeatureStore.meta["key"]["dataset"]``); nothing is extracted.
        A trainer compares it with the one a checkpoint saved to notice a dataset changed on disk."""
        dataset = self.make_dataset(split)
        _, key = resolve_entry(dataset, self.backbone, self.size, pretrained=self.pretrained, cache_dir=self.cache_dir)
        return str(key["dataset"])

    def open_split(
        self, split: str, *, device: torch.device | str = "cpu", progress: bool = True
    ) -> tuple[MultiLabelDataset, FeatureStore]:
        """The dataset object and its finished feature cache (extracted on first use)."""
        dataset = self.make_dataset(split)
        return dataset, self.feature_store(dataset, device=device, progress=progress)

    def region_scorer(
        self, split: str | None = None, *, device: torch.device | str = "cpu", progress: bool = True
    ) -> CrossFitScorer:
        """The ``locate``-mode scorer of an env on ``split``: loaded from ``scorer.pt`` beside the
        cache of :meth:`scorer_split`, fitted (and saved) if missing, damaged (a warning names the
        file) or fitted with other settings than :data:`SCORER_FIT`.

        Raises:
            NotWritableError: the scorer must be fitted but its cache folder is read-only (checked
                before the fit, which takes minutes on a large split).
        """
        train_split = self.scorer_split(split)
        self._check_scorer_split(split, train_split)
        _, store = self.open_split(train_split, device=device, progress=progress)
        path = Path(store.path) / "scorer.pt"
        if path.exists():
            try:
                scorer, meta, digest = read_scorer(path, channels=store.channels, num_classes=len(store.classes))
                # a file without a checksum (an earlier version's) cannot be verified: fitted again, like a
                # stale one, where the cache is writable
                verified = digest is not None or not writable(store.path)
                if meta.get("fit") == SCORER_FIT and isinstance(scorer, CrossFitScorer) and verified:
                    store.close()
                    return scorer
            except CorruptFileError as err:
                if path.is_dir():  # in the way of the fitted scorer too: say so before a fit of minutes
                    store.close()
                    raise
                warnings.warn(f"{err.problem}; fitting it again", RuntimeWarning, stacklevel=2)
        if len(store) < SCORER_FIT["folds"]:
            raise ConfigError(
                f"the env's region scorer is cross-fitted on {SCORER_FIT['folds']} "
                f"folds of the training split {train_split!r}, "
                f"which has only {len(store)} image(s)",
                f"use a training split of at least {SCORER_FIT['folds']} images "
                f"(Shapes: num_images >= {SCORER_FIT['folds']}), or mode='joint'",
            )
        if not writable(store.path):
            store.close()
            raise NotWritableError(
                f"the env's region scorer {path} must be fitted (it is missing, "
                f"damaged or stale) but its folder {store.path} is read-only",
                "make the feature cache writable, or copy it to a writable folder and pass cache_dir= (or set $RARL_CACHE)",
            )
        # The caller's random state afterwards is the same whether the scorer was fitted or loaded: the
        # fit runs on forked global generators, and the fitted scorer is returned as loaded (the load
        # builds its modules with their default init, which draws from torch's global generator).
        dev = torch.device(device)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            fitted = fit_cross_fitted_scorer(
                store, scales=DEFAULT_SCALES, ratios=DEFAULT_RATIOS, device=device, progress=progress, **SCORER_FIT
            )
        store.close()
        save_scorer(fitted.cpu(), path, {"fit": SCORER_FIT, "split": train_split})
        scorer, _ = load_scorer(path)
        assert isinstance(scorer, CrossFitScorer)  # save_scorer just wrote the cross-fitted one
        return scorer


__all__ = ["DATASETS", "SCORER_FIT", "FeatureSource"]
