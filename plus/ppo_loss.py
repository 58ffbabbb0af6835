"""PPO's clipped objectives for the policy and the value function.

Policy (Schulman et al. 2017, "Proximal policy optimization algorithms",
eq. 7), written as a loss to minimize, per response token:

    ratio = pi_new(a_t | s_t) / pi_old(a_t | s_t) = exp(logprob - old_logprob)
    loss  = max(-A_t * ratio, -A_t * clip(ratio, 1 - eps, 1 + eps))

Taking the larger (more pessimistic) of the two terms removes the incentive to
move the ratio beyond [1 - eps, 1 + eps] in the direction the advantage
favours: once it is there the clipped term is the active one, and it has no
gradient. Moves in the unfavourable direction are never clipped.

Value function, clipped the same way around the old prediction (as in OpenAI's
baselines and Huang et al. 2024, value clip 0.2):

    v_clipped = old_value + clip(value - old_value, -eps, eps)
    loss      = 0.5 * max((value - R)^2, (v_clipped - R)^2)

Both losses are averaged over every response token of the batch (token-level
masked mean), so long and short responses weigh each token the same.
"""

import torch
from torch import Tensor

from plus.metrics import masked_mean


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of one shape [B, T], got {shapes}")


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate policy loss; all inputs [B, T].

    `logprobs` come from the policy being updated (they carry the gradient);
    `old_logprobs` and `advantages` were fixed when the rollout was collected.
    Returns the scalar loss and detached statistics:
    `clipfrac` (fraction of tokens where the clipped term is active),
    `approx_kl` (k3 estimate of KL(pi_old || pi_new)) and `ratio_mean`.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    log_ratio = logprobs - old_logprobs.detach()  # [B, T]
    ratio = torch.exp(log_ratio)  # [B, T]
    advantages = advantages.detach()
    unclipped = -advantages * ratio  # [B, T]
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # [B, T]
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)

    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), mask).item(),
            # k3 = (ratio - 1) - log ratio: non-negative, unbiased under pi_old samples.
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss 0.5 * masked_mean(max((v - R)^2, (v_clipped - R)^2)); inputs [B, T].

    `values` come from the critic being updated; `old_values` (its predictions
    at rollout time) and `returns` (from GAE) are fixed targets. Returns the
    scalar loss and detached statistics `vf_clipfrac` (fraction of tokens where
    the clipped error is the larger one) and `value_mean`.
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    old_values = old_values.detach()
    returns = returns.detach()
    values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # [B, T]
    error_unclipped = (values - returns) ** 2  # [B, T]
    error_clipped = (values_clipped - returns) ** 2  # [B, T]
    loss = 0.5 * masked_mean(torch.maximum(error_unclipped, error_clipped), mask)

    with torch.no_grad():
        stats = {
            "vf_clipfrac": masked_mean((error_clipped > error_unclipped).to(values.dtype), mask).item(),
            "value_mean": masked_mean(values, mask).item(),
        }
    return loss, stats
