"""Posts (`Post`, `make_post`, `post_from_id`) and `World`, the streams of posts of one seed.

A post is written from latent facts (`_sample_facts`; the package docstring lists them):
the intro (and the other party's name, when they have one) and optional background; then
the event with an optional detail, the complication and the feeling in either order, and
1-4 distractors placed anywhere among these; then the question and an optional closer.
Optional sentences are kept anyway when the post would be shorter than MIN_POST_WORDS.

Everything is deterministic: post `index` of `split` under world `seed` is generated
from its own `random.Random` seeded with the string id "s{seed}-{split}-{index:06d}"
(string seeds are hashed with SHA-512 by `random`, so unlike `hash()` they are stable
across processes), so any post can be regenerated alone from its id (`post_from_id`).
The same generator then draws the post's reference TL;DR (references.py).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Iterator

from plus.data import QUERY_FORMAT
from plus.world.corpus import pretraining_text
from plus.world.groups import GROUP_BY_NAME, GROUP_OF, KIDS, ROMANCE, SUBREDDIT_RELATIONS, SUBREDDITS, group_fact
from plus.world.references import reference_plan, render_summary, writer_register
from plus.world.tables import (AMOUNTS, CLOSERS, DISTRACTORS, FEELING_FACTS, NAME_SENTENCES, NAMES, RELATIONS,
                               SEED_PREFIX, STATES, SyntheticWorldError)
from plus.world.templates import age_tag, capitalize_first, fill, pronouns, quantity_form, quantity_text, registered


MIN_POST_WORDS = 60  # optional sentences are kept when a post would be shorter
SPLITS = ("train", "valid", "test", "corpus")  # disjoint streams; "corpus" feeds pretraining


@dataclass(frozen=True)
class Post:
    """One post of the world, with its reference TL;DR and the latent facts behind both."""

    id: str  # "s{seed}-{split}-{index:06d}"; post_from_id() regenerates the post
    subreddit: str
    title: str
    post: str  # the body
    summary: str  # the reference TL;DR (no leading space)
    facts: dict = field(repr=False, hash=False)  # the latent facts and the reference's plan (JSON)

    def query(self) -> str:
        """The post in Stiennon's query format, ending with 'TL;DR:'."""
        return QUERY_FORMAT.format(subreddit=self.subreddit, title=self.title, post=self.post)


def _post_id(index: int, split: str, seed: int) -> str:
    if split not in SPLITS:
        raise SyntheticWorldError(f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    if not isinstance(index, int) or index < 0:
        raise SyntheticWorldError(f"post index must be a non-negative integer, got {index!r}")
    return f"s{seed}-{split}-{index:06d}"


def _other_age(relation: str, nage: int, rng: random.Random) -> int:
    """A plausible age for the other party given the narrator's."""
    if relation in ("son", "daughter"):
        return rng.randint(6, min(17, nage - 18))
    if relation in ("mother", "father"):
        return nage + rng.randint(20, 32)
    if relation in ("brother", "sister"):
        return max(14, nage + rng.choice((-1, 1)) * rng.randint(1, 8))
    if relation == "boss":
        return min(65, nage + rng.randint(2, 20))
    if relation in ("landlord", "neighbor"):
        return rng.randint(30, 70)
    return max(18, nage + rng.randint(-3, 5))


def _sample_facts(rng: random.Random) -> dict:
    """Draw the latent facts of one post."""
    subreddit = rng.choice(SUBREDDITS)
    group = GROUP_OF[subreddit]
    relation = rng.choice(SUBREDDIT_RELATIONS.get(subreddit, group.relations))
    event = rng.choice([e for e in group.events if not e.relations or relation in e.relations])
    other_gender = RELATIONS[relation][0] or rng.choice("MF")
    if group is ROMANCE:  # mostly straight couples, not only
        narrator_gender = ("F" if other_gender == "M" else "M") if rng.random() < 0.85 else other_gender
    else:
        narrator_gender = rng.choice("MF")
    nage = rng.randint(32, 52) if group is KIDS else rng.randint(19, 38)
    if group is KIDS and event.name in ("vaping", "gaming"):
        oage = rng.randint(13, 17)
    else:
        oage = _other_age(relation, nage, rng)
    if group.quantity == "amount":
        quantity = {"kind": "amount", "value": rng.choice(AMOUNTS)}
    elif rng.random() < 0.5:
        quantity = {"kind": "duration", "value": rng.randint(2, 11), "unit": "month"}
    else:
        quantity = {"kind": "duration", "value": rng.randint(1, min(12, max(1, nage - 18))), "unit": "year"}
    if group is KIDS and quantity.get("unit") == "year":  # a kid's habit lasts weeks or months
        quantity = {"kind": "duration", "value": rng.randint(2, 8), "unit": "week"}
    name = rng.choice(NAMES[other_gender]) if rng.random() < 0.3 else None
    return {
        "group": group.name, "subreddit": subreddit,
        "register": "casual" if rng.random() < 0.5 else "formal",
        "narrator": {"age": nage, "gender": narrator_gender},
        "other": {"relation": relation, "age": oage, "gender": other_gender, "name": name},
        "quantity": quantity, "state": rng.choice(STATES),
        "event": event.name,
        "complication": rng.choice(group.complications).name,
        "feeling": rng.choice(group.feelings),
        "question": rng.choice(group.questions).name,
    }


def _post_slots(facts: dict) -> dict[str, str]:
    """Slots shared by every sentence of one post (pronouns, tags); the relation word and
    the quantity are added by the caller because their form depends on the register."""
    n, o = facts["narrator"], facts["other"]
    return {**pronouns(o["gender"]), "ntag": age_tag(n["age"], n["gender"]), "otag": age_tag(o["age"], o["gender"]),
            "nage": str(n["age"]), "ngw": "woman" if n["gender"] == "F" else "guy", "name": o["name"] or "",
            "state": facts["state"]}


def _write_post(facts: dict, rng: random.Random) -> tuple[str, str, list[int]]:
    """Title and body for the facts; returns (title, body, distractor indices)."""
    group = GROUP_BY_NAME[facts["group"]]
    casual = facts["register"] == "casual"
    slots = _post_slots(facts)
    slots["rel"] = registered(RELATIONS[facts["other"]["relation"]][1], casual, rng)  # one form per post
    facts["quantity"]["form"] = quantity_form(facts["quantity"], casual, rng)
    slots["qty"] = quantity_text(facts["quantity"], facts["quantity"]["form"])
    event = group_fact(group, "event", facts["event"])

    def say(template: str) -> str:
        return fill(template, slots, casual, rng)

    # (sentence, kept) pairs: optional sentences are left out by chance, unless the post
    # would be shorter than MIN_POST_WORDS without them.
    opening = [(say(rng.choice(group.intros)), True)]
    if facts["other"]["name"]:
        opening.append((say(rng.choice(NAME_SENTENCES)), True))
    opening.append((say(rng.choice(group.background)), rng.random() < 0.7))
    middle = [(say(rng.choice(event.post)), True), (say(rng.choice(event.detail)), rng.random() < 0.75)]
    rest = [(say(rng.choice(group_fact(group, "complication", facts["complication"]).post)), True),
            (say(rng.choice(FEELING_FACTS[facts["feeling"]].post)), True)]
    rng.shuffle(rest)
    middle += rest
    distractors = rng.sample(range(len(DISTRACTORS)), rng.randint(1, 4))
    for d in distractors:  # anywhere after the intro
        middle.insert(rng.randint(0, len(middle)), (say(DISTRACTORS[d]), True))
    ending = [(say(rng.choice(group_fact(group, "question", facts["question"]).post)), True),
              (say(rng.choice(CLOSERS)), rng.random() < 0.6)]
    sentences = opening + middle + ending
    body = " ".join(text for text, kept in sentences if kept)
    if len(body.split()) < MIN_POST_WORDS:
        body = " ".join(text for text, _ in sentences)

    question = fill(rng.choice(group_fact(group, "question", facts["question"]).summary), slots, casual, rng)
    title_slots = dict(slots, event_title=say(rng.choice(event.title)), question=question)
    title = capitalize_first(fill(rng.choice(group.titles), title_slots, casual, rng))
    return title, body, distractors


def make_post(index: int, split: str = "train", seed: int = 0) -> Post:
    """Post `index` of `split` in the world of `seed`. Splits are disjoint streams."""
    post_id = _post_id(index, split, seed)
    rng = random.Random(f"{SEED_PREFIX}/{post_id}")
    facts = _sample_facts(rng)
    title, body, distractors = _write_post(facts, rng)
    facts["distractors"] = distractors
    facts["reference"] = reference_plan(rng, writer_register(facts, rng))
    summary = render_summary(facts, facts["reference"])
    return Post(post_id, facts["subreddit"], title, body, summary, facts)


_ID = re.compile(r"^s(-?\d+)-([a-z]+)-(\d+)$")


def post_from_id(post_id: str) -> Post:
    """Regenerate a post from its id ("s0-train-000123")."""
    m = _ID.match(post_id)
    if not m or m.group(2) not in SPLITS:
        raise SyntheticWorldError(f"not a synthetic post id: {post_id!r} (expected like 's0-train-000123')")
    return make_post(int(m.group(3)), m.group(2), int(m.group(1)))


def count_post_variants() -> int:
    """How many distinct post bodies the templates alone can write: a lower bound that
    ignores ages, amounts, names, registers and where distractors are placed. For each
    (subreddit, relation, event): intros x (no background + backgrounds) x event
    sentences x (no detail + details) x complication sentences x feeling sentences x
    question sentences x 2 orders of the complication and feeling x ordered choices of
    1-4 distractors x (no closer + closers)."""
    distractor_ways = sum(math.perm(len(DISTRACTORS), k) for k in range(1, 5))
    total = 0
    for sub in SUBREDDITS:
        g = GROUP_OF[sub]
        for rel in SUBREDDIT_RELATIONS.get(sub, g.relations):
            for ev in g.events:
                if ev.relations and rel not in ev.relations:
                    continue
                total += (len(g.intros) * (1 + len(g.background)) * len(ev.post) * (1 + len(ev.detail))
                          * sum(len(c.post) for c in g.complications)
                          * sum(len(FEELING_FACTS[f].post) for f in g.feelings)
                          * sum(len(q.post) for q in g.questions)
                          * 2 * distractor_ways * (1 + len(CLOSERS)))
    return total


class World:
    """The world of one seed: infinite, deterministic streams of posts per split."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def posts(self, split: str, n: int, start: int = 0) -> list[Post]:
        """Posts start .. start+n-1 of `split`."""
        if not isinstance(n, int) or n < 0:
            raise SyntheticWorldError(f"number of posts must be a non-negative integer, got {n!r}")
        return [make_post(i, split, self.seed) for i in range(start, start + n)]

    def corpus(self, n: int, start: int = 0) -> Iterator[str]:
        """Pretraining texts of posts start .. start+n-1 of the "corpus" split, generated
        lazily (corpus.py says what they hold)."""
        for i in range(start, start + n):
            yield pretraining_text(make_post(i, "corpus", self.seed))
