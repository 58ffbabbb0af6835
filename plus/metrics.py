"""Evaluation metrics: ROUGE, win rates with a confidence interval, masked statistics.

* ROUGE-N and ROUGE-L (Lin 2004, "ROUGE: A Package for Automatic Evaluation of
  Summaries"), computed exactly like Google's `rouge-score` package with its default
  tokenizer and no stemming, so numbers are comparable with published TL;DR results.
  Stiennon et al. 2020 report ROUGE only as a side metric: it rewards copying the
  reference and correlates poorly with human preference, which is why the project's
  headline number is a win rate.
* Win rate: the fraction of pairwise comparisons a policy wins (Stiennon et al. 2020,
  Fig. 1), with a Wilson score interval (Wilson 1927).
* Masked statistics over `[B, T]` tensors, where `mask` is 1 on real response tokens.
  Following the project convention (ARCHITECTURE.md), a masked mean is token-level over the
  whole batch, `sum(x * mask) / sum(mask)`, so every token weighs the same however
  long its sequence is. These feed advantage whitening (GAE), the PPO losses, and
  the explained-variance diagnostic that CleanRL logs for the critic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


# ---------------------------------------------------------------------------- ROUGE


def rouge_tokenize(text: str) -> list[str]:
    """ROUGE's default tokenizer: lowercase, every run of non-[a-z0-9] becomes a break.

    Non-ASCII letters are separators too ("café" -> ["caf"]), as in `rouge-score`.
    """
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def _prf(overlap: int, candidate_total: int, reference_total: int) -> dict:
    """Precision, recall and their harmonic mean; 0 instead of dividing by zero."""
    precision = overlap / candidate_total if candidate_total else 0.0
    recall = overlap / reference_total if reference_total else 0.0
    fmeasure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "fmeasure": fmeasure}


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: str, reference: str, n: int) -> dict:
    """ROUGE-N: n-gram overlap between a candidate summary and a reference.

    Counts are clipped: an n-gram that occurs twice in the candidate but once in the
    reference matches once, so repeating a good phrase earns nothing.
    Precision divides by the candidate's n-grams, recall by the reference's.
    """
    if n < 1:
        raise ValueError(f"rouge_n needs n >= 1, got {n}")
    candidate_ngrams = _ngrams(rouge_tokenize(candidate), n)
    reference_ngrams = _ngrams(rouge_tokenize(reference), n)
    overlap = sum((candidate_ngrams & reference_ngrams).values())  # & keeps the min count
    return _prf(overlap, sum(candidate_ngrams.values()), sum(reference_ngrams.values()))


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) dynamic programming.

    `row[j]` holds the LCS of the prefix of `a` seen so far and `b[:j]`; one row is
    kept at a time, so memory is O(len(b)).
    """
    row = [0] * (len(b) + 1)
    for token in a:
        diagonal = 0  # LCS(a[:i-1], b[:j-1]) for the current j
        for j, other in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if token == other else max(above, row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(candidate: str, reference: str) -> dict:
    """ROUGE-L (sentence level): precision and recall of the longest common subsequence.

    The LCS rewards words in the right order without requiring them to be adjacent.
    The whole text is one sequence (this is `rougeL`, not the per-line `rougeLsum`).
    """
    candidate_tokens = rouge_tokenize(candidate)
    reference_tokens = rouge_tokenize(reference)
    lcs = _lcs_length(candidate_tokens, reference_tokens)
    return _prf(lcs, len(candidate_tokens), len(reference_tokens))


def rouge_scores(candidates: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean F-measures {"rouge1", "rouge2", "rougeL"} over aligned pairs, as fractions in [0, 1]."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    if not candidates:
        raise ValueError("rouge_scores needs at least one candidate/reference pair")
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for candidate, reference in zip(candidates, references):
        totals["rouge1"] += rouge_n(candidate, reference, 1)["fmeasure"]
        totals["rouge2"] += rouge_n(candidate, reference, 2)["fmeasure"]
        totals["rougeL"] += rouge_l(candidate, reference)["fmeasure"]
    return {name: total / len(candidates) for name, total in totals.items()}


# ------------------------------------------------------------------------- win rate


def win_rate(outcomes: Sequence[float], z: float = 1.96) -> tuple[float, tuple[float, float]]:
    """Mean of pairwise outcomes (1 win, 0.5 tie, 0 loss) and its Wilson score interval.

    With p the mean and n the number of comparisons, the interval is

        (p + z^2 / 2n  -/+  z * sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n),

    the set of true rates whose normal test would not reject p. Unlike the plain
    p +/- z sqrt(p(1-p)/n) it stays inside [0, 1] and does not collapse to a point
    at p = 0 or 1. z = 1.96 gives 95%.

    Ties count as half a win, both in p and in n. The interval treats each outcome as
    a Bernoulli(p) draw, whose variance p(1 - p) is the largest any [0, 1]-valued
    outcome with mean p can have (a tie has less spread than a coin flip), so with
    ties the interval is conservative (a little too wide), never too narrow.
    """
    if len(outcomes) == 0:
        raise ValueError("win_rate needs at least one outcome")
    bad = [o for o in outcomes if o not in (0, 0.5, 1)]
    if bad:
        raise ValueError(f"win_rate outcomes must be 0, 0.5 or 1, got {bad[0]!r}")
    n = len(outcomes)
    p = sum(outcomes) / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Clamp only float round-off; mathematically the bounds already lie in [0, 1].
    return p, (max(0.0, center - half_width), min(1.0, center + half_width))


# ---------------------------------------------------------------- masked statistics
# No checks that force a GPU sync here: these run inside the loss. An all-zero mask
# gives 0/0 = nan, which is loud, rather than a silent 0.


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * mask), over everything (dim=None) or along `dim`."""
    masked = x * mask.to(x.dtype)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * mask) / sum(mask): token-level over the whole batch when dim is None,
    per row (e.g. per sequence with dim=1) otherwise."""
    count = masked_sum(torch.ones_like(x), mask, dim)  # masked-in elements (mask may broadcast)
    return masked_sum(x, mask, dim) / count


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked-in elements of x, over the whole batch.

    unbiased=True applies Bessel's correction n / (n - 1), n = number of masked-in
    elements, matching `torch.var` on those elements (nan when n < 2).
    """
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = masked_sum(torch.ones_like(x), mask)
        variance = variance * n / (n - 1)
    return variance


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[target - pred] / Var[target] over masked-in elements.

    A critic diagnostic: 1 means the values predict the returns perfectly, 0 means no
    better than predicting their mean, negative means worse than that. nan when the
    targets have zero variance (nothing to explain).
    """
    target_var = masked_var(target, mask, unbiased=False)
    residual_var = masked_var(target - pred, mask, unbiased=False)
    return (1 - residual_var / target_var).item() if target_var.item() > 0 else math.nan
