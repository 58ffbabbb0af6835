"""Comparisons in OpenAI's format, labeled by simulated labelers.

Each comparison pairs two summaries of one post: the reference and its perturbations
(PAIR_KINDS), or a policy's samples. Training comparisons compare all pairs among several
summaries of each post; held-out ones are one pair per post. Every record carries the
noisy label (`choice`) and the gold judge's noiseless one (`gold_choice`).
"""

from __future__ import annotations

import math
import random
from typing import Iterator

from plus.world.judge import gold_score
from plus.world.labelers import LABELER_TAU, Labeler, sigmoid
from plus.world.perturbations import perturb
from plus.world.posts import Post, World, post_from_id
from plus.world.tables import SEED_PREFIX, SyntheticWorldError


# How often each kind of summary enters a comparison: mostly realistic near-misses of the
# reference, rarely garbage (Stiennon's pairs were samples of similar policies). No empty
# summaries: plus.data rejects a comparison with an empty response as bad input.
PAIR_KINDS = {"reference": 3.0, "drop_fact": 3.0, "add_fact": 2.0, "paraphrase": 2.0, "swap_value": 1.5,
              "invent_fact": 1.0, "reorder": 1.0, "filler": 1.5, "truncate": 1.0, "repeat": 0.7, "salad": 0.2}
N_WORKERS = 8
# Training comparisons compare all pairs among this many summaries of each post (the
# reward trainer then computes each post once for its comparisons); held-out ones stay
# one comparison per post, so that their pairs are independent.
TRAIN_SUMMARIES_PER_POST = 4


def _candidate(post: Post, kind: str, rng: random.Random) -> tuple[str, str, str]:
    """(text, policy, note) of one summary of the given kind."""
    if kind == "reference":
        return post.summary, "ref", "reference"
    return perturb(post, kind, rng), "ref_perturbed", kind


def _distinct(a: str, b: str) -> bool:
    """Whether two summaries differ within their first 30 words (what a 48-token model sees)."""
    return a.split()[:30] != b.split()[:30]


def _comparison_groups(world: World, split: str, n: int, seed: int,
                       summaries_per_post: int) -> Iterator[tuple[Post, tuple, tuple, float, float]]:
    """n pairs as `_comparison_pairs` gives them, but `summaries_per_post` candidates
    (PAIR_KINDS) are drawn for each post in turn and every untied, distinct pair of them is
    compared: up to k(k-1)/2 comparisons of one post, as labelers who rank several
    summaries of a post give (Ouyang et al. 2022 train on all pairs of such a ranking)."""
    rng = random.Random(f"{SEED_PREFIX}/groups/{world.seed}/{split}/{seed}/{summaries_per_post}")
    kinds, kind_weights = list(PAIR_KINDS), list(PAIR_KINDS.values())
    made, i = 0, 0
    while made < n:
        post = world.posts(split, 1, start=i)[0]
        i += 1
        candidates: dict[str, tuple] = {}
        for _ in range(4 * summaries_per_post):
            if len(candidates) == summaries_per_post:
                break
            c = _candidate(post, rng.choices(kinds, kind_weights)[0], rng)
            if all(_distinct(c[0], other) for other in candidates):
                candidates[c[0]] = c
        group = list(candidates.values())
        scores = [gold_score(post, c[0]) for c in group]
        for j in range(len(group)):
            for k in range(j + 1, len(group)):
                if made == n or abs(scores[j] - scores[k]) <= 1e-9:
                    continue
                a, b, sa, sb = group[j], group[k], scores[j], scores[k]
                if rng.random() < 0.5:
                    a, b, sa, sb = b, a, sb, sa
                made += 1
                yield post, a, b, sa, sb


def _comparison_pairs(world: World, split: str, n: int, seed: int,
                      policy_samples: dict[str, list[str]] | None,
                      summaries_per_post: int = 2) -> Iterator[tuple[Post, tuple, tuple, float, float]]:
    """n pairs (post, (text, policy, note) x 2, gold score a, gold score b), with no ties
    and texts that differ within their first 30 words (what a 48-token model sees)."""
    if n is None or n < 0:
        raise SyntheticWorldError(f"number of comparisons must be a non-negative integer, got {n!r}")
    if not isinstance(summaries_per_post, int) or summaries_per_post < 2:
        raise SyntheticWorldError(f"summaries_per_post must be an integer >= 2, got {summaries_per_post!r}")
    if summaries_per_post > 2:
        if policy_samples:
            raise SyntheticWorldError("summaries_per_post > 2 applies to the world's own summaries, not policy samples")
        yield from _comparison_groups(world, split, n, seed, summaries_per_post)
        return
    rng = random.Random(f"{SEED_PREFIX}/pairs/{world.seed}/{split}/{seed}")
    kinds, kind_weights = list(PAIR_KINDS), list(PAIR_KINDS.values())
    post_ids = list(policy_samples) if policy_samples else None
    for i in range(n):
        post = post_from_id(post_ids[i % len(post_ids)]) if post_ids else world.posts(split, 1, start=i)[0]
        samples = [s for s in (policy_samples or {}).get(post.id, []) if s.strip()]
        for _ in range(200):
            if samples:
                r = rng.random()
                if r < 0.6 and len(samples) >= 2:
                    j, k = rng.sample(range(len(samples)), 2)
                    a, b = (samples[j], "policy", f"sample {j}"), (samples[k], "policy", f"sample {k}")
                else:
                    j = rng.randrange(len(samples))
                    a = (samples[j], "policy", f"sample {j}")
                    b = _candidate(post, "reference" if r < 0.85 else rng.choices(kinds, kind_weights)[0], rng)
            else:
                ka, kb = rng.choices(kinds, kind_weights, k=2)
                a, b = _candidate(post, ka, rng), _candidate(post, kb, rng)
            if not _distinct(a[0], b[0]):
                continue
            sa, sb = gold_score(post, a[0]), gold_score(post, b[0])
            if abs(sa - sb) > 1e-9:
                break
        else:
            raise SyntheticWorldError(f"{post.id}: no pair of different, untied summaries in 200 draws")
        if rng.random() < 0.5:
            a, b, sa, sb = b, a, sb, sa
        yield post, a, b, sa, sb


def make_comparisons(world: World, split: str, n: int, seed: int = 0,
                     policy_samples: dict[str, list[str]] | None = None, summaries_per_post: int = 2) -> list[dict]:
    """n OpenAI-format comparison records labeled by simulated labelers.

    Without policy_samples, comparison i is on post i of `split` and pairs the reference
    and its perturbations (PAIR_KINDS); with summaries_per_post = k > 2, k such summaries
    are drawn per post and all their pairs compared, each labeled separately, so the
    posts are 0, 1, ... with up to k(k-1)/2 comparisons each. With policy_samples ({post id: [summaries]}),
    the posts are those ids, in turn, and every pair holds at least one sample: two
    samples (60%), a sample and the reference (25%) or a perturbation (15%).
    Each record: info{id, post, title, subreddit}, summaries[{text, policy, note}] x 2,
    choice (the noisy label: 0 = first summary), worker, batch, split,
    extra{confidence} (1-9, how sure the labeler was) and gold_choice (the noiseless
    gold judge's choice; pairs are never ties).
    """
    labelers = [Labeler(LABELER_TAU, seed=_stable_seed(world.seed, split, seed, k)) for k in range(N_WORKERS)]
    records = []
    for i, (post, a, b, sa, sb) in enumerate(_comparison_pairs(world, split, n, seed, policy_samples,
                                                               summaries_per_post)):
        labeler = labelers[i % N_WORKERS]
        p = labeler.prob_a(sa, sb)
        records.append({
            "info": {"id": post.id, "post": post.post, "title": post.title, "subreddit": post.subreddit},
            "summaries": [{"text": t, "policy": pol, "note": note} for t, pol, note in (a, b)],
            "choice": labeler.choose_scores(sa, sb),
            "worker": f"simulated-{i % N_WORKERS}",
            "batch": f"synthetic-s{world.seed}-{split}",
            "split": split,
            "extra": {"confidence": 1 + round(8 * abs(2 * p - 1))},
            "gold_choice": 0 if sa > sb else 1,
        })
    return records


def _stable_seed(*parts: object) -> int:
    """A stable integer seed from parts (Python's hash() is salted per process)."""
    return random.Random("/".join(map(str, parts))).randrange(2**31)


def calibrate_labeler_tau(target_agreement: float = 0.75, n: int = 4000, seed: int = 0) -> float:
    """The tau at which a labeler's expected agreement with the gold choice,
    mean over pairs of sigmoid(|gold(a) - gold(b)| / tau), equals `target_agreement` on
    make_comparisons' pair distribution (World(seed), "train", n pairs). Agreement falls
    as tau grows, so bisect (in log tau)."""
    gaps = [abs(sa - sb) for *_, sa, sb in _comparison_pairs(World(seed), "train", n, seed, None)]

    def agreement(tau: float) -> float:
        return sum(sigmoid(g / tau) for g in gaps) / len(gaps)

    lo, hi = 1e-3, 1e3
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if agreement(mid) > target_agreement else (lo, mid)
    return math.sqrt(lo * hi)
