import math

import pytest
import torch

from plus.kl_controller import AdaptiveKLController, FixedKLController, kl_penalty

LOG2 = math.log(2.0)


def test_estimators_on_known_values():
    # delta = +log 2 and -log 2 (policy twice / half as likely as the reference)
    ref = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    logprobs = ref + torch.tensor([[LOG2, -LOG2]], dtype=torch.float64)
    # k1 = delta                  ->  0.6931471806, -0.6931471806
    # k2 = delta^2 / 2            ->  0.2402265070 (both)
    # k3 = exp(-delta) - 1 + delta -> 1/2 - 1 + log 2 = 0.1931471806;  2 - 1 - log 2 = 0.3068528194
    expected = {
        "k1": [0.6931471806, -0.6931471806],
        "k2": [0.2402265070, 0.2402265070],
        "k3": [0.1931471806, 0.3068528194],
    }
    for estimator, values in expected.items():
        result = kl_penalty(logprobs, ref, estimator)
        torch.testing.assert_close(result, torch.tensor([values], dtype=torch.float64), atol=1e-10, rtol=0)


def test_k1_and_k3_average_to_the_exact_kl():
    # Under samples from p, E_p[k1] = E_p[k3] = KL(p || q); check with exact expectations.
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    exact_kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    for estimator in ("k1", "k3"):
        per_outcome = kl_penalty(p.log(), q.log(), estimator)
        assert (p * per_outcome).sum().item() == pytest.approx(exact_kl, abs=1e-12)


def test_unknown_estimator_lists_valid_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(1, 2), torch.zeros(1, 2), "k4")


def test_fixed_controller_unchanged():
    controller = FixedKLController(0.05)
    for kl in [100.0, 0.0, 6.0]:
        controller.update(kl, n_steps=512)
    assert controller.value == 0.05


def test_adaptive_controller_trajectory():
    init, target, horizon, n_steps = 0.1, 6.0, 10_000, 256
    kls = [12.0, 3.0, 6.6, 0.0, 7.2, 6.0]
    controller = AdaptiveKLController(init, target, horizon)
    trajectory = []
    for kl in kls:
        controller.update(kl, n_steps)
        trajectory.append(controller.value)

    # By hand: n_steps / horizon = 0.0256
    #   KL 12: e = clip(12/6 - 1 = 1, -0.2, 0.2) = 0.2   -> 0.1 * (1 + 0.2 * 0.0256) = 0.100512
    #   KL 3:  e = clip(3/6 - 1 = -0.5)          = -0.2  -> 0.100512 * (1 - 0.00512) = 0.09999737856
    assert trajectory[0] == pytest.approx(0.100512, abs=1e-15)
    assert trajectory[1] == pytest.approx(0.09999737856, abs=1e-15)

    # The rest by a plain loop.
    beta, expected = init, []
    for kl in kls:
        error = kl / target - 1
        error = 0.2 if error > 0.2 else (-0.2 if error < -0.2 else error)
        beta = beta * (1 + error * n_steps / horizon)
        expected.append(beta)
    assert trajectory == pytest.approx(expected, abs=1e-15)
    assert trajectory[-1] == trajectory[-2]  # KL exactly on target: no change


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(init_kl_coef=0.1, target=0.0, horizon=10_000), "target"),
        (dict(init_kl_coef=0.1, target=6.0, horizon=-1), "horizon"),
        (dict(init_kl_coef=0.0, target=6.0, horizon=10_000), "init_kl_coef"),
    ],
)
def test_adaptive_controller_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveKLController(**kwargs)


def test_fixed_controller_rejects_negative():
    with pytest.raises(ValueError, match="kl_coef"):
        FixedKLController(-0.1)
