import numpy as np
import torch
import torch.nn.functional as F

from rarl_gym import metrics
from rarl_gym import scorer as scorer_mod
from rarl_gym.glimpse import anchor_boxes, crop, fuse
from rarl_gym.scorer import (
    CrossFitScorer,
    RegionScorer,
    fit_cross_fitted_scorer,
    fit_global_classifier,
    fit_region_scorer,
    load_scorer,
    pooled_features,
    save_scorer,
)


class ArrayStore:
    """The part of FeatureStore the scorers read."""

    def __init__(self, features, labels, classes):
        self.features, self.labels, self.classes = features, labels, classes
        self.channels = features.shape[1]

    def __len__(self):
        return len(self.features)

    def batch(self, index, device="cpu"):
        return torch.from_numpy(self.features[index]).float().to(device), torch.from_numpy(self.labels[index]).to(device)


def blobs(n=96, seed=0):
    """Class c present = a bright blob in channel c somewhere on an 8 x 8 map of noise."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(0, 0.3, (n, 6, 8, 8)).astype(np.float32)
    labels = (rng.random((n, 3)) < 0.4).astype(np.int8)
    for i, c in zip(*np.nonzero(labels)):
        y, x = rng.integers(0, 7, 2)
        feats[i, c, y : y + 2, x : x + 2] += 3.0
    return ArrayStore(feats, labels, ("a", "b", "c"))


def test_cropping_logit_maps_equals_scoring_crops():
    torch.manual_seed(0)
    scorer = RegionScorer(6, 3)
    feats = torch.randn(4, 6, 8, 8)
    boxes = anchor_boxes(torch.rand(4, 2) * 2 - 1)
    direct = scorer(crop(feats, boxes, 1))  # [4,9,3]
    maps = F.conv2d(feats, scorer.linear.weight[:, :, None, None], scorer.linear.bias)
    assert torch.allclose(direct, crop(maps, boxes, 1).flatten(2), atol=1e-5)
    # the env's route: bias-free logit maps, s x s bins, mean, then the bias
    for size in (1, 3):
        want = scorer(crop(feats, boxes, size))
        assert torch.allclose(scorer.score_regions(scorer.logit_maps(feats), boxes, size), want, atol=1e-5)


def test_scorers_learn_the_blobs():
    train, test = blobs(seed=0), blobs(seed=1)
    region = fit_region_scorer(train, epochs=40, batch_size=32, lr=0.02)
    whole = torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]]).expand(len(test), 1, 4)
    boxes = torch.cat([whole, anchor_boxes(torch.rand(len(test) * 5, 2) * 2 - 1).reshape(len(test), -1, 4)], 1)
    feats = torch.from_numpy(test.features)
    region_scores = region(crop(feats, boxes, 1)).amax(1)
    assert metrics.mean_average_precision(region_scores, test.labels) > 0.9
    glob = fit_global_classifier(pooled_features(train), torch.from_numpy(train.labels), lr=0.02)
    assert metrics.mean_average_precision(glob.linear(feats.mean((2, 3))), test.labels) > 0.7
    # seeded: the same fit twice
    again = fit_region_scorer(train, epochs=40, batch_size=32, lr=0.02)
    assert torch.equal(again.linear.weight, region.linear.weight)


def test_the_env_scores_regions_from_the_crop_means():
    """GlimpseEpisodes scores the regions from the means the crop computes in the same pass:
    the same as the scorer applied to the observed glimpses, step 0 (whole image) included."""
    from envs.episodes import GlimpseEpisodes

    torch.manual_seed(1)
    scorer = RegionScorer(40, 5)
    ep = GlimpseEpisodes(
        num_steps=3, glimpse_size=3, scales=(0.2, 0.5), ratios=(1.0, 2.0), k=2, scorer=scorer, fuse_whole_image=True
    )
    maps, labels = torch.randn(4, 40, 7, 7), torch.randint(0, 2, (4, 5))
    glimpses = ep.reset(maps, labels)
    for t in range(4):
        assert torch.allclose(ep.region_scores(), fuse(scorer(glimpses)), atol=1e-5), t
        glimpses, _ = ep.step(torch.rand(4, 2) * 2 - 1)


def test_cross_fitted_scorer_scores_each_training_image_out_of_fold(tmp_path, monkeypatch):
    """Scorer f is fitted without the images i % F == f, which it alone scores; other splits get
    the fold mean; the pair survives save / load (and a one-scorer file of the old format loads)."""
    train = blobs(seed=0)
    seen = []
    original = fit_region_scorer

    def spy(store, *, images=None, **kw):
        seen.append(np.asarray(images))
        return original(store, images=images, **kw)

    monkeypatch.setattr(scorer_mod, "fit_region_scorer", spy)
    cross = fit_cross_fitted_scorer(train, folds=2, epochs=20, batch_size=32, lr=0.02)
    assert cross.folds == 2 and [len(s) for s in seen] == [48, 48]
    assert (seen[0] % 2 == 1).all() and (seen[1] % 2 == 0).all()  # scorer 0 never saw the even images
    means = torch.randn(4, 9, 6)
    a, b = (s.linear(means) for s in cross.scorers)
    routed = cross.score_means(means, torch.tensor([0, 1, 1, 0]))
    close = lambda x, y: torch.allclose(x, y, atol=1e-6)  # noqa: E731
    assert close(routed[0], a[0]) and close(routed[1], b[1]) and close(routed[3], a[3]) and not close(routed[1], a[1])
    assert torch.allclose(cross.score_means(means), (a + b) / 2)
    # both folds learnt the blobs (a held-out set)
    test = blobs(seed=1)
    whole = torch.tensor([[[-1.0, -1.0, 1.0, 1.0]]]).expand(len(test), 1, 4)
    feats = torch.from_numpy(test.features)
    for fold in cross.scorers:
        assert metrics.mean_average_precision(fold(crop(feats, whole, 1))[:, 0], test.labels) > 0.8
    save_scorer(cross, tmp_path / "s.pt", {"fit": {"folds": 2}})
    again, meta = load_scorer(tmp_path / "s.pt")
    assert isinstance(again, CrossFitScorer) and meta == {"fit": {"folds": 2}}
    assert torch.equal(
        again.score_means(means, torch.tensor([1, 0, 0, 1])), cross.score_means(means, torch.tensor([1, 0, 0, 1]))
    )
    torch.save({"state_dict": cross.scorers[0].state_dict(), "meta": {}}, tmp_path / "old.pt")  # the first format
    old, _ = load_scorer(tmp_path / "old.pt")
    assert isinstance(old, RegionScorer) and close(old.score_means(means), a)


def test_the_env_scores_training_images_out_of_fold(small_kwargs):
    """On the training split image i is scored by fold i % 2; on the test split by the fold mean."""
    from envs import GlimpseEnv

    for split, want in (("train", lambda i: torch.tensor([i % 2])), ("test", lambda i: None)):
        env = GlimpseEnv(dataset="shapes", split=split, **small_kwargs)
        assert isinstance(env.episodes.scorer, CrossFitScorer)
        for i in (3, 4):
            obs, _ = env.reset(options={"index": i})
            folds = env.episodes.folds
            assert (folds is None and want(i) is None) or torch.equal(folds, want(i))
            for _ in range(2):  # the regions shown now (step 0, then step 1) are scored by that fold
                means = torch.from_numpy(obs["glimpses"])[None].mean(dim=(-2, -1))
                assert torch.allclose(
                    env.episodes.region_scores(), fuse(env.episodes.scorer.score_means(means, folds)), atol=1e-5
                )
                obs = env.step(np.zeros(2, np.float32))[0]


def test_a_scorer_fitted_with_other_settings_is_refitted(tmp_path, monkeypatch):
    """``scorer.pt`` records the settings it was fitted with (:data:`rarl_gym.sources.SCORER_FIT`):
    the env's scorer is loaded while they match, and fitted and saved again when they changed."""
    from rarl_gym import sources

    source = sources.FeatureSource(
        dataset="shapes",
        backbone="tiny",
        input_size=64,
        cache_dir=str(tmp_path),
        dataset_kwargs={"num_images": 40, "image_size": 64},
    )
    fits = []
    real_fit = sources.fit_cross_fitted_scorer
    monkeypatch.setattr(sources, "fit_cross_fitted_scorer", lambda *a, **k: fits.append(k) or real_fit(*a, **k))
    quick = {"folds": 2, "regions_per_image": 1, "epochs": 2, "lr": 3e-3}
    monkeypatch.setattr(sources, "SCORER_FIT", quick)

    def weights(cross):
        return torch.cat([s.linear.weight.flatten() for s in cross.scorers])

    first = source.region_scorer(progress=False)
    _, store = source.open_split(source.train_split, progress=False)
    path = store.path / "scorer.pt"
    store.close()
    assert len(fits) == 1 and load_scorer(path)[1]["fit"] == quick
    assert torch.equal(weights(source.region_scorer(progress=False)), weights(first))  # loaded, not fitted
    assert len(fits) == 1

    changed = {**quick, "epochs": 3}
    monkeypatch.setattr(sources, "SCORER_FIT", changed)  # a new version of the library fits otherwise
    refitted = source.region_scorer(progress=False)
    assert len(fits) == 2 and fits[1]["epochs"] == 3
    assert load_scorer(path)[1]["fit"] == changed  # the stale file was replaced
    assert not torch.equal(weights(refitted), weights(first))
    assert torch.equal(weights(source.region_scorer(progress=False)), weights(refitted)) and len(fits) == 2


def test_fitting_the_env_scorer_leaves_the_global_generator_as_loading_it_does(small_kwargs, tmp_path, monkeypatch):
    """The first env on a fresh cache fits ``scorer.pt``, later ones load it: torch's global random
    state afterwards is the same either way, so a training run does not depend on which it was."""
    from envs import GlimpseEnv
    from rarl_gym import sources

    monkeypatch.setattr(sources, "SCORER_FIT", {"folds": 2, "regions_per_image": 1, "epochs": 2, "lr": 3e-3})
    fits = []
    real_fit = sources.fit_cross_fitted_scorer
    monkeypatch.setattr(sources, "fit_cross_fitted_scorer", lambda *a, **k: fits.append(k) or real_fit(*a, **k))

    def global_state_after_opening_an_env() -> torch.Tensor:
        torch.manual_seed(7)
        GlimpseEnv(dataset="shapes", **{**small_kwargs, "cache_dir": str(tmp_path)}).close()
        return torch.get_rng_state()

    fresh = global_state_after_opening_an_env()
    assert len(fits) == 1  # fitted and saved
    warm = global_state_after_opening_an_env()
    assert len(fits) == 1  # loaded
    assert torch.equal(fresh, warm)
