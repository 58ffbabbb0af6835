"""The pretraining corpus: texts in the world's language, for pretraining a small model
before SFT (`World.corpus` streams them from the "corpus" split, disjoint from the posts
of train, valid and test).

A fifth of the texts are posts alone (the query format without the TL;DR line); the rest
are queries followed by a TL;DR that is *true* but of varying completeness: the
reference, the complete summary, a dropped fact, a paraphrase or filler. No TL;DR here
states a wrong fact: a corpus whose summaries invent numbers teaches a small model that a
summary's numbers are guesses, and it then never learns to copy them from the post.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from plus.world.perturbations import perturb
from plus.world.references import complete_summary
from plus.world.tables import SEED_PREFIX

if TYPE_CHECKING:
    from plus.world.posts import Post


def pretraining_text(post: Post) -> str:
    """The pretraining text of one post of the "corpus" split (see the module docstring)."""
    rng = random.Random(f"{SEED_PREFIX}/corpus/{post.id}")
    r = rng.random()
    if r < 0.2:
        return f"SUBREDDIT: r/{post.subreddit}\n\nTITLE: {post.title}\n\nPOST: {post.post}"
    if r < 0.6:
        tldr = post.summary
    elif r < 0.85:
        tldr = complete_summary(post)
    else:
        tldr = perturb(post, rng.choice(("drop_fact", "paraphrase", "filler")), rng)
    return post.query() + " " + tldr
