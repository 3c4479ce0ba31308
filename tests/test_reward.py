import pytest
import torch

from rarl_gym.reward import topk_overlap


def test_adaptive_k_is_the_number_of_true_labels():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    # image 0: G = {0, 2}, top-2 = {0, 1} -> 1/2 ; image 1: G = {3}, top-1 = {3} -> 1
    assert torch.allclose(topk_overlap(scores, labels), torch.tensor([0.5, 1.0]))


def test_fixed_k():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5]])
    labels = torch.tensor([[1, 0, 1, 0]])
    assert topk_overlap(scores, labels, k=3).item() == pytest.approx(1 / 3)  # top-3 = {0, 1, 3}
    assert topk_overlap(scores, labels, k=4).item() == pytest.approx(2 / 4)


def test_difficult_labels_are_left_out_of_the_ranking():
    scores = torch.tensor([[0.9, 0.8, 0.1]])
    labels = torch.tensor([[-1, 1, 0]])  # the top-scored class is difficult: it neither hits nor blocks
    assert topk_overlap(scores, labels).item() == 1.0


def test_no_true_label_gives_zero():
    assert topk_overlap(torch.tensor([[0.3, 0.2]]), torch.tensor([[0, 0]])).item() == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="must both be"):
        topk_overlap(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="k must be"):
        topk_overlap(torch.zeros(2, 3), torch.zeros(2, 3), k=0)
