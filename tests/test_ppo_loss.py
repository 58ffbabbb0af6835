import math

import pytest
import torch

from plus.ppo_loss import policy_loss, value_loss


def make_policy_batch():
    """Six tokens laid out [2, 3]; the last one is padding with extreme values.

    With clip_eps = 0.2 the clip range is [0.8, 1.2]:
      tok  A   ratio  -A*ratio  -A*clip(ratio)  max    clipped term active?
      1   +1   1.5    -1.5      -1.2            -1.2   yes (gain capped)
      2   +1   0.5    -0.5      -0.8            -0.5   no  (bad move never clipped)
      3   -1   1.5     1.5       1.2             1.5   no  (bad move never clipped)
      4   -1   0.5     0.5       0.8             0.8   yes (gain capped)
      5   +2   1.1    -2.2      -2.2            -2.2   no  (inside the range)
      6  100   3.0    (mask 0: ignored)
    """
    ratios = torch.tensor([[1.5, 0.5, 1.5], [0.5, 1.1, 3.0]], dtype=torch.float64)
    old_logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, -1.5]], dtype=torch.float64)
    logprobs = (old_logprobs + ratios.log()).requires_grad_(True)
    advantages = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 2.0, 100.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logprobs, old_logprobs, advantages, mask


def test_policy_loss_hand_picked_ratios():
    logprobs, old_logprobs, advantages, mask = make_policy_batch()
    loss, stats = policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2)
    # token-level mean over the 5 real tokens: (-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5 = -1.6 / 5 = -0.32
    # (a mean of per-row means would give ((-0.2 / 3) + (-1.4 / 2)) / 2 = -0.3833: not what we want)
    assert loss.item() == pytest.approx(-0.32, abs=1e-12)
    assert stats["clipfrac"] == pytest.approx(2 / 5)  # tokens 1 and 4
    assert stats["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5)  # 1.02
    # k3 per token: (r - 1) - log r
    expected_kl = sum((r - 1) - math.log(r) for r in [1.5, 0.5, 1.5, 0.5, 1.1]) / 5  # 0.1160107930
    assert stats["approx_kl"] == pytest.approx(expected_kl, abs=1e-12)
    assert all(isinstance(v, float) for v in stats.values())


def test_policy_gradient_is_zero_on_clipped_tokens():
    logprobs, old_logprobs, advantages, mask = make_policy_batch()
    loss, _ = policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2)
    loss.backward()
    # Unclipped tokens: d(-A * exp(logp - old)) / dlogp / N = -A * ratio / 5
    #   tok 2: -1 * 0.5 / 5 = -0.1;  tok 3: +1 * 1.5 / 5 = 0.3;  tok 5: -2 * 1.1 / 5 = -0.44
    # Clipped tokens 1 and 4 and the padding token 6: 0
    expected = torch.tensor([[0.0, -0.1, 0.3], [0.0, -0.44, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logprobs.grad, expected, atol=1e-12, rtol=0)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    advantages = torch.tensor([[0.5, -2.0, 1.0, 3.0]])
    logprobs = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, stats = policy_loss(logprobs, logprobs.clone(), advantages, mask)
    # ratio 1 everywhere: loss = -(0.5 - 2 + 1) / 3 = 0.5 / 3, nothing clipped, KL 0
    assert loss.item() == pytest.approx(0.5 / 3, abs=1e-7)
    assert stats["clipfrac"] == 0.0 and stats["approx_kl"] == pytest.approx(0.0, abs=1e-7)


def test_value_loss_hand_picked():
    # clip_eps 0.2; v_clipped = old + clip(v - old, -0.2, 0.2)
    #  tok  old  v      R     v_clipped  (v-R)^2   (v_clip-R)^2  max        clipped larger?
    #  1    0    0.5    1     0.2        0.25      0.64          0.64       yes
    #  2    0    0.5    0     0.2        0.25      0.04          0.25       no
    #  3    1    0.875  0.5   0.875      0.140625  0.140625      0.140625   no (inside)
    #  4    1    0.0    2     0.8        4         1.44          4          no
    #  5    1    0.0   -1     0.8        1         3.24          3.24       yes
    #  6    (mask 0: ignored)
    # loss = 0.5 * (0.64 + 0.25 + 0.140625 + 4 + 3.24) / 5 = 0.5 * 8.270625 / 5 = 0.8270625
    old_values = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 50.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.5, 0.875], [0.0, 0.0, -50.0]], dtype=torch.float64, requires_grad=True)
    returns = torch.tensor([[1.0, 0.0, 0.5], [2.0, -1.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, stats = value_loss(values, old_values, returns, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.8270625, abs=1e-12)
    assert stats["vf_clipfrac"] == pytest.approx(2 / 5)
    assert stats["value_mean"] == pytest.approx((0.5 + 0.5 + 0.875 + 0.0 + 0.0) / 5)  # 0.375

    loss.backward()
    # Where the unclipped error is active: d(0.5 * (v - R)^2) / dv / N = (v - R) / 5
    #   tok 2: 0.5 / 5 = 0.1;  tok 3: 0.375 / 5 = 0.075;  tok 4: -2 / 5 = -0.4
    # Clipped-active tokens 1 and 5 (v_clipped is constant in v there) and padding: 0
    expected = torch.tensor([[0.0, 0.1, 0.075], [-0.4, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(values.grad, expected, atol=1e-12, rtol=0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="one shape"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="one shape"):
        value_loss(torch.zeros(2, 3), torch.zeros(3, 2), torch.zeros(2, 3), torch.ones(2, 3))
