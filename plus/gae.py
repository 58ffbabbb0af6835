"""Generalized advantage estimation (GAE) over response tokens, and whitening.

PPO on text treats each response token as one action. The advantage of token t
says how much better that token turned out than the critic expected. GAE
(Schulman et al. 2016, "High-dimensional continuous control using generalized
advantage estimation", eqs. 11-16) builds it from one-step TD errors

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lam * A_{t+1}        (computed from the end backwards)

lam trades bias (lam = 0: trust the critic) for variance (lam = 1: Monte-Carlo
return). Stiennon et al. 2020 use gamma = 1, lam = 0.95. The critic is trained
towards returns = A_t + V(s_t).

In a batch, each row holds one episode: the response tokens are a contiguous run
where `mask` is 1, possibly after left padding (the prompt) and before right
padding. The episode ends after its last response token, so the value after it
is 0 and nothing flows back from the padding.

`whiten` normalizes advantages over all response tokens of the batch (Huang et
al. 2024: advantage whitening on), which keeps the policy step size independent
of the reward scale.

`leave_one_out` is a baseline for a score that the critic cannot predict. When n
responses y_1..y_n are sampled for the same prompt and scored the same way, each
score can be compared with the mean of the others (Kool et al. 2019, "Buy 4
REINFORCE samples, get a baseline for free!"; RLOO in Ahmadian et al. 2024):

    s_i' = s_i - (1 / (n - 1)) sum_{j != i} s_j

The baseline does not depend on y_i, so the policy gradient stays unbiased, and
whatever the n scores share (in PLUS: the comparison they were all scored on)
cancels. GAE then runs on s_i' in place of s_i.
"""

import torch
from torch import Tensor

from plus.metrics import masked_mean, masked_var


def _check_contiguous(mask: Tensor) -> None:
    """Raise if a row of the mask has more than one run of 1s."""
    mask = mask.long()
    starts = (mask[:, 1:] - mask[:, :-1] == 1).sum(dim=1) + mask[:, 0]  # [B] number of runs per row
    if (starts > 1).any():
        row = int((starts > 1).nonzero()[0])
        raise ValueError(f"mask row {row} has {int(starts[row])} separate runs of response tokens; expected one contiguous run")


@torch.no_grad()
def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Advantages and returns for a batch of episodes, all tensors [B, T].

    `rewards[b, t]` is the reward received after token t (in RLHF: the per-token
    KL penalty, plus the reward-model score on the last response token);
    `values[b, t]` is the critic's estimate before token t. Returns
    `(advantages, returns)`, both [B, T], zero where `mask` is 0. No gradient
    flows through them: they are fixed targets for the PPO update.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask {tuple(mask.shape)} "
            "must all have the same shape [B, T]"
        )
    _check_contiguous(mask)
    mask = mask.to(values.dtype)
    rewards = rewards.detach() * mask
    values = values.detach() * mask

    batch_size, num_steps = values.shape
    advantages = torch.zeros_like(values)  # [B, T]
    # What the token after t sees: its value and advantage. Both are 0 past the
    # end of the response, so the last response token bootstraps from 0.
    next_value = values.new_zeros(batch_size)  # [B]
    next_advantage = values.new_zeros(batch_size)  # [B]
    for t in reversed(range(num_steps)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        # Multiplying by the mask zeroes padding positions, which also resets
        # the recursion to 0 just before the right padding starts.
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t]
        next_advantage = advantages[:, t]
    returns = advantages + values  # values are already 0 on padding
    return advantages, returns


def leave_one_out(scores: Tensor, n: int) -> Tensor:
    """Each score less the mean of the other n - 1 scores of its group [B]; the groups
    are n consecutive entries (the n samples of one prompt)."""
    if n < 2 or scores.dim() != 1 or scores.shape[0] % n:
        raise ValueError(f"leave_one_out needs groups of n >= 2 consecutive scores; got n={n} for "
                         f"{tuple(scores.shape)} scores")
    groups = scores.view(-1, n)                                    # [B / n, n]
    others = (groups.sum(1, keepdim=True) - groups) / (n - 1)      # [B / n, n]
    return (groups - others).reshape(-1)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize x to mean 0 and variance 1 over the masked positions of the whole batch.

    Mean and (unbiased) variance are token-level over every position where
    `mask` is 1. With `shift_mean=False` the original mean is added back, so
    only the scale changes. The result is 0 where `mask` is 0.
    """
    if x.shape != mask.shape:
        raise ValueError(f"x {tuple(x.shape)} and mask {tuple(mask.shape)} must have the same shape")
    mask = mask.to(x.dtype)
    count = mask.sum()
    if count < 2:
        raise ValueError(f"whiten needs at least 2 masked positions to estimate a variance, got {int(count)}")
    mean = masked_mean(x, mask)
    # Unbiased (divide by n - 1), as in TRL and summarize_from_feedback_details.
    variance = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask
