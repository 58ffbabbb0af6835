"""Simulated labelers.

A labeler prefers summary a over b with probability sigmoid((gold(a) - gold(b)) / tau)
(a Bradley-Terry labeler), with tau calibrated so that labelers agree with the
noiseless gold choice about 75% of the time, as Stiennon's labelers agreed with
researchers 73-77% of the time. A labeler's `weights` give it a persona: the gold
judge's weights (judge.py), so that simulated users can differ in what they value.
"""

from __future__ import annotations

import math
import random

from plus.world.judge import gold_score, resolve_weights
from plus.world.posts import Post
from plus.world.tables import SEED_PREFIX, SyntheticWorldError


# Calibrated with calibrate_labeler_tau() (comparisons.py; python -m plus.world --calibrate):
# the tau at which the expected agreement with the gold choice over make_comparisons' pairs
# of World(0) "train" (4000 pairs) is 75%.
LABELER_TAU: float = 1.24


def sigmoid(x: float) -> float:
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class Labeler:
    """A noisy Bradley-Terry labeler: prefers a over b with probability
    sigmoid((gold(a) - gold(b)) / tau). `weights` gives it a persona (see gold_score)."""

    def __init__(self, tau: float = LABELER_TAU, seed: int = 0, weights: dict | None = None):
        if tau <= 0:
            raise SyntheticWorldError(f"labeler tau must be positive, got {tau}")
        self.tau = tau
        self.weights = resolve_weights(weights)
        self.rng = random.Random(f"{SEED_PREFIX}/labeler/{seed}")

    def prob_a(self, score_a: float, score_b: float) -> float:
        """P(this labeler picks a) given the two gold scores."""
        return sigmoid((score_a - score_b) / self.tau)

    def choose_scores(self, score_a: float, score_b: float) -> int:
        """0 picks a, 1 picks b (OpenAI's `choice` convention), given the gold scores."""
        return 0 if self.rng.random() < self.prob_a(score_a, score_b) else 1

    def choose(self, post: Post, a: str, b: str) -> int:
        """0 picks a, 1 picks b (OpenAI's `choice` convention)."""
        return self.choose_scores(gold_score(post, a, self.weights), gold_score(post, b, self.weights))
