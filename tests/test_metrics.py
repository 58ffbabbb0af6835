"""Tests for plus/metrics.py against hand-worked values, closed forms, loops and references."""

import math
import random

import numpy as np
import pytest
import torch

from plus.metrics import (
    explained_variance,
    masked_mean,
    masked_sum,
    masked_var,
    rouge_l,
    rouge_n,
    rouge_scores,
    rouge_tokenize,
    win_rate,
)

# ---------------------------------------------------------------------------- ROUGE

CANDIDATE = "The cat, the CAT sat"  # tokens: the cat the cat sat            (5)
REFERENCE = "The cat sat on the mat."  # tokens: the cat sat on the mat     (6)


def _close(scores: dict, precision: float, recall: float, fmeasure: float) -> None:
    assert scores["precision"] == pytest.approx(precision, abs=1e-12)
    assert scores["recall"] == pytest.approx(recall, abs=1e-12)
    assert scores["fmeasure"] == pytest.approx(fmeasure, abs=1e-12)


def test_rouge_tokenize():
    assert rouge_tokenize(CANDIDATE) == ["the", "cat", "the", "cat", "sat"]
    assert rouge_tokenize("  It's 2 A.M.! café\tTL;DR ") == ["it", "s", "2", "a", "m", "caf", "tl", "dr"]
    assert rouge_tokenize("?!  ...") == []


def test_rouge1_hand_worked():
    # Candidate counts the:2 cat:2 sat:1; reference the:2 cat:1 sat:1 on:1 mat:1.
    # Clipped overlap = min(2,2) + min(2,1) + min(1,1) = 4.
    # P = 4/5, R = 4/6 = 2/3, F = 2PR/(P+R) = (16/15)/(22/15) = 8/11.
    _close(rouge_n(CANDIDATE, REFERENCE, 1), 4 / 5, 2 / 3, 8 / 11)


def test_rouge2_hand_worked():
    # Candidate bigrams: (the cat) x2, (cat the), (cat sat)         -> 4
    # Reference bigrams: (the cat) (cat sat) (sat on) (on the) (the mat) -> 5
    # Clipped overlap: (the cat) min(2,1) = 1, (cat sat) 1 -> 2.
    # P = 2/4 = 1/2, R = 2/5, F = (2/5)/(9/10) = 4/9.
    _close(rouge_n(CANDIDATE, REFERENCE, 2), 1 / 2, 2 / 5, 4 / 9)


def test_rougeL_hand_worked():
    # LCS of [the cat the cat sat] and [the cat sat on the mat] is "the cat sat" = 3
    # (the reference has one "cat", so no 4-token subsequence exists).
    # P = 3/5, R = 3/6 = 1/2, F = (3/5)/(11/10) = 6/11.
    _close(rouge_l(CANDIDATE, REFERENCE), 3 / 5, 1 / 2, 6 / 11)
    # Order matters for LCS but not for ROUGE-1: reversed words share only one in order.
    _close(rouge_l("c b a", "a b c"), 1 / 3, 1 / 3, 1 / 3)
    _close(rouge_n("c b a", "a b c", 1), 1.0, 1.0, 1.0)


def test_rouge_empty_strings():
    zero = {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    for candidate, reference in [("", ""), ("", "a b"), ("a b", ""), ("!!", "a"), ("a", "a")]:
        assert rouge_n(candidate, reference, 2) == zero  # one token has no bigram
        if candidate != reference:
            assert rouge_l(candidate, reference) == zero
            assert rouge_n(candidate, reference, 1) == zero
    assert rouge_l("a", "a")["fmeasure"] == 1.0
    assert rouge_scores(["", "a"], ["", "a"]) == {"rouge1": 0.5, "rouge2": 0.0, "rougeL": 0.5}


def test_rouge_scores_mean_and_errors():
    got = rouge_scores([CANDIDATE, "c b a"], [REFERENCE, "a b c"])
    assert got["rouge1"] == pytest.approx((8 / 11 + 1) / 2)
    assert got["rouge2"] == pytest.approx((4 / 9 + 0) / 2)
    assert got["rougeL"] == pytest.approx((6 / 11 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        rouge_scores([], [])
    with pytest.raises(ValueError, match="n >= 1"):
        rouge_n("a", "a", 0)


def _random_sentence(rng: random.Random) -> str:
    words = ["the", "The", "cat", "sat", "on", "mat", "my", "boyfriend", "forgot", "TL;DR:", "it's",
             "2", "years", "café", "naïve", "don't", "I", "am", "so", "sad", "!", "...", "e-mail", "U.S."]
    return " ".join(rng.choice(words) for _ in range(rng.randrange(0, 25)))


def test_rouge_matches_rouge_score_package():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    rng = random.Random(0)
    candidates, references = [], []
    for _ in range(200):
        candidate, reference = _random_sentence(rng), _random_sentence(rng)
        expected = scorer.score(reference, candidate)  # the package takes (target, prediction)
        ours = {"rouge1": rouge_n(candidate, reference, 1), "rouge2": rouge_n(candidate, reference, 2),
                "rougeL": rouge_l(candidate, reference)}
        for name, score in ours.items():
            for field in ("precision", "recall", "fmeasure"):
                assert score[field] == pytest.approx(getattr(expected[name], field), abs=1e-9), (candidate, reference)
        candidates.append(candidate)
        references.append(reference)
        assert rouge_tokenize(candidate) == scorer._tokenizer.tokenize(candidate)
    means = rouge_scores(candidates, references)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = np.mean([scorer.score(r, c)[name].fmeasure for c, r in zip(candidates, references)])
        assert means[name] == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------------- win rate


def _wilson_by_quadratic(p: float, n: int, z: float) -> tuple[float, float]:
    # The Wilson interval is the set of rates q with (p - q)^2 <= z^2 q (1 - q) / n,
    # i.e. the roots of (1 + z^2/n) q^2 - (2p + z^2/n) q + p^2 = 0.
    a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def test_win_rate_hand_worked_with_ties():
    # 6 wins, 2 ties, 2 losses: p = (6 + 2 * 0.5) / 10 = 0.7 over n = 10 comparisons.
    outcomes = [1] * 6 + [0.5] * 2 + [0] * 2
    p, (low, high) = win_rate(outcomes)
    assert p == pytest.approx(0.7)
    expected = _wilson_by_quadratic(0.7, 10, 1.96)
    assert (low, high) == pytest.approx(expected, abs=1e-12)
    # By hand: z^2/n = 0.38416, centre = (0.7 + 0.19208) / 1.38416 = 0.644492,
    # half width = 1.96 * sqrt(0.021 + 0.009604) / 1.38416 = 0.247719.
    assert (low, high) == pytest.approx((0.644492 - 0.247719, 0.644492 + 0.247719), abs=2e-6)
    # For large n the interval narrows like 1/sqrt(n): 100x the data, ~10x narrower.
    _, (low_100, high_100) = win_rate(outcomes * 10)
    p_big, (low_big, high_big) = win_rate(outcomes * 1000)
    assert p_big == pytest.approx(0.7)
    assert (high_100 - low_100) / (high_big - low_big) == pytest.approx(10, rel=0.05)


def test_win_rate_extremes_and_z():
    # All losses: the lower bound is exactly 0 and the upper z^2/n / (1 + z^2/n).
    p, (low, high) = win_rate([0] * 10)
    z2n = 1.96**2 / 10
    assert p == 0 and low == 0 and high == pytest.approx(z2n / (1 + z2n))
    p, (low, high) = win_rate([1] * 10)
    assert p == 1 and high == 1 and low == pytest.approx(1 / (1 + z2n))
    # Wider z, wider interval; all ties sit symmetrically around 0.5.
    _, (low99, high99) = win_rate([0.5] * 8, z=2.576)
    assert (low99, high99) == pytest.approx(_wilson_by_quadratic(0.5, 8, 2.576))
    assert low99 + high99 == pytest.approx(1.0)


def test_win_rate_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        win_rate([])
    with pytest.raises(ValueError, match="0.3"):
        win_rate([1, 0.3])


# ---------------------------------------------------------------- masked statistics


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 7, generator=g, dtype=torch.float64)
    lengths = [7, 3, 1, 5]
    mask = torch.tensor([[1 if t < length else 0 for t in range(7)] for length in lengths], dtype=torch.float64)
    return x, mask


def _masked_values(x: torch.Tensor, mask: torch.Tensor) -> list[float]:
    return [x[b, t].item() for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t] == 1]


def test_masked_sum_and_mean_match_loops():
    x, mask = _batch()
    values = _masked_values(x, mask)  # 16 tokens
    assert len(values) == 16
    assert masked_sum(x, mask).item() == pytest.approx(sum(values))
    # Token-level: every token weighs the same, not every sequence.
    assert masked_mean(x, mask).item() == pytest.approx(sum(values) / len(values))
    for b in range(4):
        row = [x[b, t].item() for t in range(7) if mask[b, t] == 1]
        assert masked_sum(x, mask, dim=1)[b].item() == pytest.approx(sum(row))
        assert masked_mean(x, mask, dim=1)[b].item() == pytest.approx(sum(row) / len(row))
    # A boolean mask gives the same numbers.
    assert masked_mean(x, mask.bool()).item() == pytest.approx(sum(values) / len(values))
    # An empty mask is 0/0 = nan, not a silent 0.
    assert math.isnan(masked_mean(x, torch.zeros_like(mask)).item())


def test_masked_var_matches_loop():
    x, mask = _batch(1)
    values = _masked_values(x, mask)
    n = len(values)
    mean = sum(values) / n
    squares = sum((v - mean) ** 2 for v in values)
    assert masked_var(x, mask).item() == pytest.approx(squares / (n - 1))
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(squares / n)
    # Padding values must not leak in, whatever they are.
    assert masked_var(x + 1000 * (1 - mask), mask).item() == pytest.approx(squares / (n - 1))


def test_explained_variance_matches_numpy():
    target, mask = _batch(2)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pred = 0.8 * target + 0.3 * noise
    keep = mask.bool().numpy()
    t, p = target.numpy()[keep], pred.numpy()[keep]
    expected = 1 - np.var(t - p) / np.var(t)
    assert explained_variance(pred, target, mask) == pytest.approx(expected, abs=1e-12)
    assert explained_variance(target, target, mask) == pytest.approx(1.0)
    # Predicting the mean explains nothing; padding garbage in pred is ignored.
    constant = torch.full_like(target, float(t.mean())) + 50 * (1 - mask)
    assert explained_variance(constant, target, mask) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(explained_variance(pred, torch.ones_like(target), mask))
