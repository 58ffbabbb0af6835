"""Bradley-Terry preference loss: how a reward model learns from comparisons.

The Bradley-Terry model says that a response with reward r_a beats one with
reward r_b with probability

    P(a > b) = sigmoid(r_a - r_b)

Training the reward model maximizes the likelihood of the human choices, i.e.
minimizes (Stiennon et al. 2020, "Learning to summarize from human feedback",
eq. 1)

    loss(r) = -E[ log sigmoid(r(x, y_win) - r(x, y_lose)) ]

Only differences of rewards enter the loss, so the reward scale has no fixed
zero point; that is why the trained model is shifted afterwards so that
reference summaries score 0.

Cheng et al. 2023 ("Everyone deserves a reward", the DSP data) generalize the
pair to a list of responses with scores: every ordered pair (better, worse) of
the list contributes one Bradley-Terry term and the loss is their mean
(`ranking_pairs` + `ranking_loss` below).
"""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(chosen: Tensor, rejected: Tensor, margin: float | Tensor = 0.0) -> Tensor:
    """Mean of -log sigmoid(chosen - rejected - margin) over the pairs.

    `chosen` and `rejected` are the rewards of the preferred and the other
    response of each pair, shape [N]. `margin` (a float, or a per-pair [N]
    tensor) asks the preferred reward to win by at least that much before the
    loss flattens out (used when labelers say how strongly they prefer one).
    """
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must have the same shape")
    if chosen.numel() == 0:
        raise ValueError("bradley_terry_loss needs at least one pair")
    # -log sigmoid(z) = log(1 + exp(-z)); F.logsigmoid evaluates it without
    # overflow, so reward gaps of +-100 give ~0 and ~100 instead of inf/nan.
    return -F.logsigmoid(chosen - rejected - margin).mean()


def ranking_pairs(scores: Sequence[float]) -> list[tuple[int, int]]:
    """Every ordered pair (better, worse) of indices of a list of scored responses.

    Responses with equal scores carry no preference, so their pair is skipped.
    Example: scores [3, 1, 2, 1] -> [(0, 1), (0, 2), (0, 3), (2, 1), (2, 3)].
    """
    return [
        (better, worse)
        for better in range(len(scores))
        for worse in range(len(scores))
        if scores[better] > scores[worse]
    ]


def ranking_loss(rewards: Tensor, scores: Sequence[float]) -> Tensor:
    """Mean Bradley-Terry loss over all ordered pairs of a scored list (Cheng et al. 2023).

    `rewards` [n] are the reward model's outputs for the n responses of one
    query and `scores` their n preference scores. With two responses this is
    exactly `bradley_terry_loss` on the one pair.
    """
    if rewards.dim() != 1 or rewards.numel() != len(scores):
        raise ValueError(f"rewards must have shape [{len(scores)}] to match the scores, got {tuple(rewards.shape)}")
    pairs = ranking_pairs(scores)
    if not pairs:
        raise ValueError(f"scores {list(scores)} are all equal: no preference pair to learn from")
    better = torch.tensor([b for b, _ in pairs], device=rewards.device)  # [P]
    worse = torch.tensor([w for _, w in pairs], device=rewards.device)  # [P]
    return bradley_terry_loss(rewards[better], rewards[worse])


def preference_accuracy(chosen: Tensor, rejected: Tensor) -> float:
    """Fraction of pairs where the chosen reward is higher; a tie counts half.

    Counting ties as half makes a constant reward model score exactly 0.5,
    the accuracy of a coin flip, instead of 0 or 1.
    """
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must have the same shape")
    if chosen.numel() == 0:
        raise ValueError("preference_accuracy needs at least one pair")
    wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
    return wins.mean().item()
