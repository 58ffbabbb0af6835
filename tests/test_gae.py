import numpy as np
import pytest
import torch

from plus.gae import compute_gae, leave_one_out, whiten


def test_gae_hand_worked_left_and_right_padding():
    gamma, lam = 0.9, 0.5  # gamma * lam = 0.45
    # Row 0: left padding (2 prompt positions), response at t = 2, 3, 4.
    # Row 1: response at t = 0, 1, 2, then right padding.
    # Rewards and values on padding are deliberately large: they must be ignored.
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    rewards = torch.tensor([[5.0, 5.0, 0.0, 0.0, 1.0], [0.0, 0.0, 2.0, 7.0, 7.0]], dtype=torch.float64)
    values = torch.tensor([[3.0, 3.0, 0.5, 1.0, 0.5], [1.0, 0.5, 1.5, 4.0, 4.0]], dtype=torch.float64)

    # Row 0, from the end (value after the last response token is 0):
    #   delta_4 = 1 + 0.9 * 0   - 0.5 =  0.5     A_4 = 0.5
    #   delta_3 = 0 + 0.9 * 0.5 - 1.0 = -0.55    A_3 = -0.55 + 0.45 * 0.5     = -0.325
    #   delta_2 = 0 + 0.9 * 1.0 - 0.5 =  0.4     A_2 =  0.4  + 0.45 * -0.325  =  0.25375
    #   returns = A + V: 0.25375 + 0.5 = 0.75375, -0.325 + 1.0 = 0.675, 0.5 + 0.5 = 1.0
    # Row 1:
    #   delta_2 = 2 + 0.9 * 0   - 1.5 =  0.5     A_2 = 0.5
    #   delta_1 = 0 + 0.9 * 1.5 - 0.5 =  0.85    A_1 =  0.85 + 0.45 * 0.5     =  1.075
    #   delta_0 = 0 + 0.9 * 0.5 - 1.0 = -0.55    A_0 = -0.55 + 0.45 * 1.075   = -0.06625
    #   returns: -0.06625 + 1.0 = 0.93375, 1.075 + 0.5 = 1.575, 0.5 + 1.5 = 2.0
    expected_adv = torch.tensor(
        [[0.0, 0.0, 0.25375, -0.325, 0.5], [-0.06625, 1.075, 0.5, 0.0, 0.0]], dtype=torch.float64
    )
    expected_ret = torch.tensor(
        [[0.0, 0.0, 0.75375, 0.675, 1.0], [0.93375, 1.575, 2.0, 0.0, 0.0]], dtype=torch.float64
    )
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    torch.testing.assert_close(advantages, expected_adv, atol=1e-12, rtol=0)
    torch.testing.assert_close(returns, expected_ret, atol=1e-12, rtol=0)


def gae_plain_loop(rewards, values, mask, gamma, lam):
    """Reference: per row, find the response run and do the textbook recursion on Python floats."""
    batch, steps = len(mask), len(mask[0])
    adv = [[0.0] * steps for _ in range(batch)]
    ret = [[0.0] * steps for _ in range(batch)]
    for b in range(batch):
        positions = [t for t in range(steps) if mask[b][t] == 1]
        last_adv = 0.0
        for i in reversed(range(len(positions))):
            t = positions[i]
            next_value = values[b][positions[i + 1]] if i + 1 < len(positions) else 0.0
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            last_adv = delta + gamma * lam * last_adv
            adv[b][t] = last_adv
            ret[b][t] = last_adv + values[b][t]
    return adv, ret


def random_contiguous_mask(generator, batch, steps):
    mask = torch.zeros(batch, steps, dtype=torch.long)
    for b in range(batch - 1):  # the last row stays empty (a row with no response tokens)
        start = int(torch.randint(0, steps, (1,), generator=generator))
        length = int(torch.randint(1, steps - start + 1, (1,), generator=generator))
        mask[b, start : start + length] = 1
    return mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0), (1.0, 0.0)])
def test_gae_matches_plain_loop_on_random_inputs(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    batch, steps = 6, 11
    rewards = torch.randn(batch, steps, generator=generator, dtype=torch.float64)
    values = torch.randn(batch, steps, generator=generator, dtype=torch.float64)
    mask = random_contiguous_mask(generator, batch, steps)
    expected_adv, expected_ret = gae_plain_loop(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    torch.testing.assert_close(advantages, torch.tensor(expected_adv, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(returns, torch.tensor(expected_ret, dtype=torch.float64), atol=1e-12, rtol=0)


def test_gae_has_no_gradient():
    values = torch.randn(2, 4, requires_grad=True)
    rewards = torch.randn(2, 4, requires_grad=True)
    advantages, returns = compute_gae(rewards, values, torch.ones(2, 4))
    assert not advantages.requires_grad and not returns.requires_grad


def test_gae_rejects_bad_masks_and_shapes():
    with pytest.raises(ValueError, match="contiguous"):
        compute_gae(torch.zeros(2, 5), torch.zeros(2, 5), torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0]]))
    with pytest.raises(ValueError, match="same shape"):
        compute_gae(torch.zeros(2, 5), torch.zeros(2, 4), torch.ones(2, 5))


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_numpy(shift_mean):
    generator = torch.Generator().manual_seed(1)
    x = 3.0 + 2.0 * torch.randn(4, 7, generator=generator, dtype=torch.float64)
    mask = random_contiguous_mask(generator, 4, 7)
    mask[0, :3] = 1  # make sure there are enough masked positions
    eps = 1e-8

    x_np, mask_np = x.numpy(), mask.numpy()
    selected = x_np[mask_np == 1]
    mean, variance = selected.mean(), selected.var(ddof=1)
    expected = (x_np - mean) / np.sqrt(variance + eps)
    if not shift_mean:
        expected = expected + mean
    expected = expected * mask_np

    result = whiten(x, mask, shift_mean=shift_mean, eps=eps)
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-12, rtol=0)
    if shift_mean:  # the masked values really are standardized
        assert result[mask == 1].mean().item() == pytest.approx(0.0, abs=1e-12)
        assert result[mask == 1].std().item() == pytest.approx(1.0, abs=1e-6)


def test_whiten_needs_two_positions():
    with pytest.raises(ValueError, match="at least 2"):
        whiten(torch.randn(2, 3), torch.tensor([[0, 1, 0], [0, 0, 0]]))


def test_leave_one_out_by_hand():
    # Two prompts, three samples each: each score less the mean of its group's other two.
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 13.0])
    # 1 - (2 + 3) / 2, 2 - (1 + 3) / 2, 3 - (1 + 2) / 2; 10 - (10 + 13) / 2 twice, 13 - (10 + 10) / 2
    expected = torch.tensor([-1.5, 0.0, 1.5, -1.5, -1.5, 3.0])
    torch.testing.assert_close(leave_one_out(scores, 3), expected)
    # Whatever the group's samples share cancels: a constant added to one group changes nothing.
    shifted = scores + torch.tensor([0.0, 0.0, 0.0, 100.0, 100.0, 100.0])
    torch.testing.assert_close(leave_one_out(shifted, 3), expected)
    # Pairs: each is paid its difference from the other.
    torch.testing.assert_close(leave_one_out(torch.tensor([0.25, -0.5]), 2), torch.tensor([0.75, -0.75]))


def test_leave_one_out_needs_whole_groups_of_two_or_more():
    for scores, n in ((torch.zeros(4), 1), (torch.zeros(5), 2), (torch.zeros(2, 2), 2)):
        with pytest.raises(ValueError, match="groups of n >= 2"):
            leave_one_out(scores, n)
