"""Perturbations: summaries of varying quality around a post's reference, for comparisons
(comparisons.py), the pretraining corpus (corpus.py) and the gold judge's sample of the
world's language (judge.py). `swapped_references` gives minimal pairs: the reference
with one stated fact given a wrong value.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING

from plus.world.groups import GROUP_BY_NAME
from plus.world.reading import post_mentions
from plus.world.references import LESSER_FACTS, join_clauses, render_summary, summary_clauses, wording_choices
from plus.world.tables import (AMOUNTS, DISTRACTORS, FEELING_FACTS, FEELINGS, FILLERS, INVENTED, NAMES, RELATIONS,
                               SyntheticWorldError)
from plus.world.templates import fill, pronouns, registered

if TYPE_CHECKING:
    from plus.world.posts import Post


PERTURBATIONS: tuple[str, ...] = ("drop_fact", "add_fact", "swap_value", "invent_fact", "paraphrase", "reorder",
                                  "filler", "truncate", "repeat", "salad", "empty")


def _stated_facts(plan: dict) -> list[str]:
    """The facts a summary written with `plan` states, each of which a swap can get wrong."""
    return [f for f in LESSER_FACTS if plan["keep"][f]] + ["relation", "event"]


def swap_fact(facts: dict, plan: dict, mentioned: set[str], rng: random.Random, what: str | None = None) -> dict:
    """A copy of the facts with one fact the reference states (`what`, else one at random)
    given a wrong value (a relation is swapped for one the post does not mention)."""
    group = GROUP_BY_NAME[facts["group"]]
    facts = json.loads(json.dumps(facts))
    if what is None:
        what = rng.choice(_stated_facts(plan))
    if what in ("narrator", "other_age"):
        person = facts["narrator" if what == "narrator" else "other"]
        if rng.random() < 0.3:
            person["gender"] = "M" if person["gender"] == "F" else "F"
        else:
            person["age"] = max(10, person["age"] + rng.choice((-1, 1)) * rng.randint(2, 6))
    elif what == "quantity":
        q = facts["quantity"]
        if q["kind"] == "amount":
            q["value"] = rng.choice([a for a in AMOUNTS if a != q["value"]])
        else:
            q["value"] = rng.choice([v for v in range(1, 13) if v != q["value"]])
    elif what == "relation":
        o = facts["other"]
        o["relation"] = rng.choice([r for r in RELATIONS if r not in mentioned])
        o["gender"] = RELATIONS[o["relation"]][0] or o["gender"]
    else:
        pool = {"event": group.events, "complication": group.complications, "question": group.questions,
                "feeling": [FEELING_FACTS[f] for f in FEELINGS]}[what]
        facts[what] = rng.choice([f.name for f in pool if f.name != facts[what]])
    return facts


def swapped_references(post: Post, rng: random.Random) -> list[tuple[str, str]]:
    """(fact, text) for every fact the post's reference states: the reference with that one
    fact given a wrong value (a person's age or gender, the duration or amount, the
    relation, event, complication, feeling or question), all else equal. Minimal pairs:
    the gold judge always prefers the reference, and only the post says which is right.
    A swap that happens to read like the reference is left out."""
    facts, plan = post.facts, post.facts["reference"]
    mentioned = post_mentions(post.title, post.post)["relations"]
    swapped = [(what, render_summary(swap_fact(facts, plan, mentioned, rng, what), plan))
               for what in _stated_facts(plan)]
    return [(what, text) for what, text in swapped if text != post.summary]


def _invented_clause(post: Post, rng: random.Random) -> str:
    """A clause stating something the post does not say."""
    facts = post.facts
    group = GROUP_BY_NAME[facts["group"]]
    casual = facts["reference"]["register"] == "casual"
    src = post_mentions(post.title, post.post)
    kind = rng.choice(("name", "relation", "number", "complication"))
    o = facts["other"]
    if kind == "name":
        name = rng.choice([n for n in NAMES[o["gender"]] if n.lower() not in src["names"]])
        return fill(INVENTED["name"], {**pronouns(o["gender"]), "name": name}, casual)
    if kind == "relation":
        rel = rng.choice([r for r in RELATIONS if r not in src["relations"]])
        return fill(INVENTED["relation"], {"rel": registered(RELATIONS[rel][1], casual)}, casual)
    if kind == "number":
        return fill(INVENTED["number"], {"n": str(rng.randint(2, 20))}, casual)
    other = rng.choice([c for c in group.complications if c.name != facts["complication"]])
    return fill(rng.choice(other.summary), pronouns(o["gender"]), casual)


def perturb(post: Post, kind: str, rng: random.Random) -> str:
    """A variant of the post's reference TL;DR, for comparisons and the pretraining corpus.

    drop_fact    leaves out one lesser fact the reference states (worse)
    add_fact     adds one lesser fact the reference left out (better)
    swap_value   gives one stated fact a wrong value: age, amount, relation, event... (worse)
    invent_fact  adds a name, relation, number or complication not in the post (worse)
    paraphrase   same facts, new wording
    reorder      same clauses in another order
    filler       adds filler clauses ("long story short", a distractor)
    truncate     cuts the text after 35-75% of its words
    repeat       repeats one clause
    salad        shuffles the words
    empty        nothing
    """
    if kind not in PERTURBATIONS:
        raise SyntheticWorldError(f"unknown perturbation {kind!r} (valid: {', '.join(PERTURBATIONS)})")
    facts, plan = post.facts, post.facts["reference"]
    kept = [f for f in LESSER_FACTS if plan["keep"][f]]
    missing = [f for f in LESSER_FACTS if not plan["keep"][f]]
    if kind == "empty":
        return ""
    if kind == "drop_fact":
        return render_summary(facts, dict(plan, keep=dict(plan["keep"], **{rng.choice(kept): False})))
    if kind == "add_fact" and missing:
        return render_summary(facts, dict(plan, keep=dict(plan["keep"], **{rng.choice(missing): True})))
    if kind in ("paraphrase", "add_fact"):  # add_fact on a complete reference: say it another way
        return render_summary(facts, dict(plan, **wording_choices(rng)))
    if kind == "swap_value":
        return render_summary(swap_fact(facts, plan, post_mentions(post.title, post.post)["relations"], rng), plan)
    if kind == "truncate":
        words = post.summary.split()
        return " ".join(words[: max(1, int(len(words) * rng.uniform(0.35, 0.75)))])
    if kind == "salad":
        words = post.summary.split()
        while len(set(words)) > 1 and " ".join(words) == post.summary:
            rng.shuffle(words)
        return " ".join(words)
    clauses = summary_clauses(facts, plan)
    casual = plan["register"] == "casual"
    if kind == "reorder":
        if len(clauses) < 2:
            return render_summary(facts, dict(plan, **wording_choices(rng)))
        original = list(clauses)
        while clauses == original:
            rng.shuffle(clauses)
    elif kind == "repeat":
        i = rng.randrange(len(clauses))
        clauses[i + 1: i + 1] = [clauses[i]] * rng.randint(1, 2)
    elif kind == "filler":
        pool = [registered(f, casual) for f in FILLERS]
        pool += [fill(DISTRACTORS[d], {}, casual).rstrip(".") for d in facts["distractors"]]
        for extra in rng.sample(pool, rng.randint(1, 3)):
            clauses.insert(rng.randint(0, len(clauses) - (clauses[-1].endswith("?"))), extra)
    elif kind == "invent_fact":
        clauses.insert(rng.randint(1, len(clauses) - (clauses[-1].endswith("?"))), _invented_clause(post, rng))
    if not clauses[-1].endswith("?"):  # a moved question reads as a statement mid-text
        clauses = [c.rstrip("?") for c in clauses]
    return join_clauses(clauses, plan)
