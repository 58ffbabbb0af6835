import math

import pytest
import torch

from plus.bradley_terry import bradley_terry_loss, preference_accuracy, ranking_loss, ranking_pairs


def neg_log_sigmoid(d: float) -> float:
    """-log sigmoid(d) = log(1 + e^-d), by hand for moderate d."""
    return math.log(1.0 + math.exp(-d))


def test_loss_on_hand_worked_pairs():
    chosen = torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64)
    rejected = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    # differences 1, -1, 0:
    #   diff  1 -> log(1 + e^-1) = 0.3132616875
    #   diff -1 -> log(1 + e^1)  = 1.3132616875
    #   diff  0 -> log 2         = 0.6931471806
    # mean = (0.3132616875 + 1.3132616875 + 0.6931471806) / 3 = 0.7732235185
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(0.7732235185, abs=1e-10)


def test_margin_scalar_and_per_pair():
    # 3 - 1 - margin 1 = 1 -> log(1 + e^-1) = 0.3132616875
    loss = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0]), margin=1.0)
    assert loss.item() == pytest.approx(0.3132616875, abs=1e-7)
    # per-pair margins [1, -1]: z = [3 - 1 - 1, 1 - 1 + 1] = [1, 1] -> both 0.3132616875
    loss = bradley_terry_loss(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]), margin=torch.tensor([1.0, -1.0]))
    assert loss.item() == pytest.approx(0.3132616875, abs=1e-7)


def test_stable_for_large_differences():
    chosen = torch.tensor([100.0, -100.0], requires_grad=True)
    rejected = torch.zeros(2)
    # Per pair: diff +100 -> log(1 + e^-100) ~ 3.7e-44 ~ 0; diff -100 -> log(1 + e^100) = 100 + log(1 + e^-100) ~ 100.
    loss_each = [bradley_terry_loss(chosen[i : i + 1], rejected[i : i + 1]).item() for i in range(2)]
    assert loss_each[0] == pytest.approx(0.0, abs=1e-30)
    assert loss_each[1] == pytest.approx(100.0, rel=1e-6)
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(50.0, rel=1e-6)
    loss.backward()
    # d/dc of -log sigmoid(c) / N = -sigmoid(-c) / N: -e^-100/2 ~ 0 for c = 100, -1/2 for c = -100.
    assert torch.isfinite(chosen.grad).all()
    assert chosen.grad[0].item() == pytest.approx(0.0, abs=1e-30)
    assert chosen.grad[1].item() == pytest.approx(-0.5, rel=1e-6)


def test_gradient_matches_closed_form():
    chosen = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.1, 0.5, -1.0], dtype=torch.float64, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    for c, r, gc, gr in zip(chosen.tolist(), rejected.tolist(), chosen.grad.tolist(), rejected.grad.tolist()):
        expected = -1.0 / (1.0 + math.exp(c - r)) / 3  # -sigmoid(-(c - r)) / N
        assert gc == pytest.approx(expected, abs=1e-12)
        assert gr == pytest.approx(-expected, abs=1e-12)


def test_shape_mismatch_and_empty_raise():
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="at least one pair"):
        bradley_terry_loss(torch.zeros(0), torch.zeros(0))


def test_ranking_pairs_hand_made():
    # scores 3 > 2 > 1 = 1: index 0 beats 1, 2, 3; index 2 beats 1 and 3; the two 1s tie (skipped).
    assert ranking_pairs([3, 1, 2, 1]) == [(0, 1), (0, 2), (0, 3), (2, 1), (2, 3)]
    # DSP: the domain's own response (score 1) is preferred over each of the other four.
    assert ranking_pairs([1, 0, 0, 0, 0]) == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert ranking_pairs([0.5, 0.5]) == []


def test_ranking_loss_hand_worked():
    rewards = torch.tensor([1.0, 0.0, 0.5, -1.0], dtype=torch.float64)
    # pairs (0,1) (0,2) (0,3) (2,1) (2,3) -> reward differences 1, 0.5, 2, 0.5, 1.5
    expected = sum(neg_log_sigmoid(d) for d in [1.0, 0.5, 2.0, 0.5, 1.5]) / 5
    assert ranking_loss(rewards, [3, 1, 2, 1]).item() == pytest.approx(expected, abs=1e-12)


def test_ranking_loss_of_two_is_bradley_terry():
    rewards = torch.tensor([0.2, 1.7])
    # response 1 scored higher -> chosen = 1.7, rejected = 0.2
    expected = bradley_terry_loss(torch.tensor([1.7]), torch.tensor([0.2]))
    assert ranking_loss(rewards, [0.0, 1.0]).item() == pytest.approx(expected.item(), abs=1e-7)


def test_ranking_loss_bad_input():
    with pytest.raises(ValueError, match="all equal"):
        ranking_loss(torch.zeros(3), [1, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        ranking_loss(torch.zeros(2), [1, 2, 3])


def test_preference_accuracy_ties_count_half():
    chosen = torch.tensor([2.0, 0.0, 1.0, 5.0])
    rejected = torch.tensor([1.0, 1.0, 1.0, 3.0])
    # win, loss, tie, win -> (1 + 0 + 0.5 + 1) / 4 = 0.625
    assert preference_accuracy(chosen, rejected) == pytest.approx(0.625)
