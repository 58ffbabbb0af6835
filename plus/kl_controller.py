"""The KL penalty that keeps the RL policy close to the supervised one, and its coefficient.

Stiennon et al. 2020 (eq. 2) optimize

    R(x, y) = r(x, y) - beta * log(pi_RL(y | x) / pi_SFT(y | x))

The log-ratio is a sum over the response tokens, so it is paid per token:
with delta_t = log pi_RL(y_t | ...) - log pi_SFT(y_t | ...) on tokens sampled
from pi_RL, three estimators of KL(pi_RL || pi_SFT) are in use
(J. Schulman, "Approximating KL divergence", 2020):

    k1 = delta                      unbiased, can be negative per token
    k2 = delta^2 / 2                biased, always >= 0, low variance
    k3 = exp(-delta) - 1 + delta    unbiased, always >= 0

The coefficient beta is either fixed (0.05 in Stiennon et al.) or adapted so the
measured KL tracks a target (Ziegler et al. 2019, "Fine-tuning language models
from human preferences", section 2.2):

    e    = clip(KL / KL_target - 1, -0.2, 0.2)
    beta = beta * (1 + e * n_steps / horizon)

A KL above target raises beta (stronger pull back to the SFT policy); below
target lowers it. The clip bounds how fast beta can move.
"""

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token KL estimate between the policy and the reference, shape like the inputs ([B, T])."""
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} must have the same shape")
    delta = logprobs - ref_logprobs  # [B, T]
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return 0.5 * delta**2
    if estimator == "k3":
        # exp(-delta) = pi_ref / pi; its expectation under pi is 1, so the
        # estimate stays unbiased while every term is >= 0.
        return torch.exp(-delta) - 1.0 + delta
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


class FixedKLController:
    """A constant KL coefficient; `update` does nothing, so it can replace the adaptive one."""

    def __init__(self, kl_coef: float):
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient stays fixed."""


class AdaptiveKLController:
    """Ziegler et al. 2019's proportional controller that steers the KL towards `target`.

    `horizon` (in episodes; 10,000 in the paper) sets how fast: after `horizon`
    episodes with the KL persistently off target, beta has moved by at most ~20%.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if init_kl_coef <= 0:
            raise ValueError(f"init_kl_coef must be > 0 (a multiplicative update cannot leave 0), got {init_kl_coef}")
        if target <= 0:
            raise ValueError(f"KL target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"KL horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adjust beta after `n_steps` episodes whose measured KL was `current_kl`."""
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
