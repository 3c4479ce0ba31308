"""Where an env's (or a trainer's) features come from: dataset + backbone + input size -> cache.

:func:`open_split` resolves a dataset name and split to a finished :class:`FeatureStore`
(extracting it on first use) and :func:`region_scorer` gives the env's ``locate``-mode scorer,
fitted once on the training split and saved beside that split's cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from rarl_gym.data import make_dataset
from rarl_gym.data.base import MultiLabelDataset
from rarl_gym.errors import check_choice
from rarl_gym.features.store import FeatureStore, extract_features
from rarl_gym.glimpse import DEFAULT_RATIOS, DEFAULT_SCALES
from rarl_gym.scorer import CrossFitScorer, fit_cross_fitted_scorer, load_scorer, save_scorer

#: Per dataset: the training split (default env split, where the scorer is fitted), the split
#: agents are evaluated on, and the backbone input size.
DATASETS: dict[str, dict] = {
    "shapes": {"train_split": "train", "eval_split": "test", "input_size": 256},
    "voc07": {"train_split": "train", "eval_split": "val", "input_size": 320},
    "coco": {"train_split": "train2014", "eval_split": "val2014", "input_size": 320},
}


#: How the env's ``locate``-mode scorer is fitted (:func:`rarl_gym.scorer.fit_cross_fitted_scorer`):
#: 2 folds, each a linear multiple-instance fit on half of the training split. See docs/design.md
#: for how the settings were chosen (the first ones, 10 epochs at lr 1e-3, were underfit).
SCORER_FIT = {"folds": 2, "regions_per_image": 2, "epochs": 60, "lr": 3e-3}


@dataclass(frozen=True)
class FeatureSource:
    """Everything that fixes a split's cached features."""

    dataset: str = "shapes"
    root: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    input_size: int | None = None
    cache_dir: str | None = None
    dataset_kwargs: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        check_choice("dataset", self.dataset, tuple(DATASETS))

    @property
    def size(self) -> int:
        return int(self.input_size or DATASETS[self.dataset]["input_size"])

    @property
    def train_split(self) -> str:
        return DATASETS[self.dataset]["train_split"]

    @property
    def eval_split(self) -> str:
        return DATASETS[self.dataset]["eval_split"]

    def make_dataset(self, split: str) -> MultiLabelDataset:
        return make_dataset(self.dataset, split, root=self.root, **self.dataset_kwargs)

    def open_split(self, split: str, *, device="cpu", progress: bool = True) -> tuple[MultiLabelDataset, FeatureStore]:
        """The dataset object and its finished feature cache (extracted on first use)."""
        dataset = self.make_dataset(split)
        store = extract_features(
            dataset,
            self.backbone,
            self.size,
            pretrained=self.pretrained,
            cache_dir=self.cache_dir,
            device=device,
            progress=progress,
        )
        return dataset, store

    def region_scorer(self, *, device="cpu", progress: bool = True) -> CrossFitScorer:
        """The ``locate``-mode scorer: loaded from beside the training split's cache, fitted if
        missing or fitted with other settings than :data:`SCORER_FIT`."""
        _, store = self.open_split(self.train_split, device=device, progress=progress)
        path = Path(store.path) / "scorer.pt"
        if path.exists():
            scorer, meta = load_scorer(path)
            if meta.get("fit") == SCORER_FIT:
                return scorer
        scorer = fit_cross_fitted_scorer(store, scales=DEFAULT_SCALES, ratios=DEFAULT_RATIOS, device=device, progress=progress, **SCORER_FIT)
        save_scorer(scorer.cpu(), path, {"fit": SCORER_FIT, "split": self.train_split})
        return scorer.cpu()


__all__ = ["DATASETS", "SCORER_FIT", "FeatureSource"]
