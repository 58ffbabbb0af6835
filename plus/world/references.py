"""Reference TL;DRs, written the way people write them.

A reference always states the central event (and who did it); each lesser fact it keeps
only with probability KEEP_PROB, so references vary in quality as human TL;DRs do, and
a policy that states every important fact concisely beats them.

A writer's plan says which lesser facts the TL;DR keeps, which paraphrase of each clause
it takes, the order of the middle clauses, how they are joined, and the register. The
post's own reference is one plan, drawn with the post (posts.py); `other_references`
draws other writers' plans; `complete_summary` keeps every fact.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

from plus.world.groups import GROUP_BY_NAME, group_fact
from plus.world.tables import RELATIONS, SEED_PREFIX, SyntheticWorldError
from plus.world.templates import QTY_SLOT, age_tag, capitalize_first, fill, pronouns, quantity_text, registered

if TYPE_CHECKING:
    from plus.world.posts import Post


# Facts a reference may leave out, with the probability that it keeps each.
LESSER_FACTS = ("narrator", "other_age", "quantity", "complication", "feeling", "question")
KEEP_PROB = {"narrator": 0.55, "other_age": 0.55, "quantity": 0.6, "complication": 0.65, "feeling": 0.55,
             "question": 0.6}
# SFT on the world trains on this many TL;DRs of each training post, by different writers
# (the post's own reference first, then `other_references`); --export writes as many.
TRAIN_REFERENCES_PER_POST = 4


def reference_plan(rng: random.Random, register: str | None = None) -> dict:
    """How a human writes this post's TL;DR: which lesser facts it keeps, which
    paraphrase of each clause, the order of the middle clauses and how they are joined."""
    keep = {f: rng.random() < KEEP_PROB[f] for f in LESSER_FACTS}
    while sum(keep.values()) < 2:  # even a lazy TL;DR says a little more than the event
        keep[rng.choice(LESSER_FACTS)] = True
    return {"register": register or ("casual" if rng.random() < 0.5 else "formal"), "keep": keep,
            **wording_choices(rng)}


def writer_register(facts: dict, rng: random.Random) -> str:
    """A TL;DR writer is usually, not always, in the post's register."""
    same = rng.random() < 0.6
    return facts["register"] if same else ("formal" if facts["register"] == "casual" else "casual")


def wording_choices(rng: random.Random) -> dict:
    """The wording choices of a TL;DR plan (everything but the register and the facts kept)."""
    order = ["complication", "feeling"]
    rng.shuffle(order)
    return {"variants": {k: rng.randrange(1000) for k in ("event", "complication", "feeling", "question")},
            "order": order, "join": rng.randrange(3), "lowercase": rng.random() < 0.5}


def summary_clauses(facts: dict, plan: dict) -> list[str]:
    """The clauses of a TL;DR: the event (with who did it) first, then the kept
    complication and feeling in the plan's order, then the question."""
    group = GROUP_BY_NAME[facts["group"]]
    casual = plan["register"] == "casual"
    keep, variants = plan["keep"], plan["variants"]
    n, o = facts["narrator"], facts["other"]
    rel = registered(RELATIONS[o["relation"]][1], casual)
    otag = " " + age_tag(o["age"], o["gender"]) if keep["other_age"] else ""
    ntag = " " + age_tag(n["age"], n["gender"]) if keep["narrator"] else ""
    qty = quantity_text(facts["quantity"], facts["quantity"]["form"])  # the post's own form
    slots = {**pronouns(o["gender"]), "I": "I" + ntag, "me": "me" + ntag, "them": f"my {rel}{otag}",
             "their": f"my {rel}'s{otag}"}

    def qty_slot(m: re.Match) -> str:
        return (m.group(1) or group.summary_qty).replace("#", qty) if keep["quantity"] else ""

    def clause(kind: str) -> str:
        paraphrases = group_fact(group, kind, facts[kind]).summary
        template = paraphrases[variants[kind] % len(paraphrases)]
        return fill(QTY_SLOT.sub(qty_slot, template), slots, casual)

    clauses = [clause("event")] + [clause(k) for k in plan["order"] if keep[k]]
    if keep["question"]:
        clauses.append(clause("question"))
    return clauses


def join_clauses(clauses: list[str], plan: dict) -> str:
    """Join clauses as sentences (join 0), as one sentence plus the question (join 1), or
    as a casual run-on (join 2). Casual writers may skip capitals."""
    question = clauses[-1] if clauses[-1].endswith("?") else None
    body = clauses[:-1] if question else clauses
    cap = (lambda s: s) if plan["register"] == "casual" and plan["lowercase"] else capitalize_first
    if plan["join"] == 0 or len(body) == 1:
        sentences = [cap(c) + "." for c in body]
    elif plan["join"] == 1:
        sentences = [cap(", ".join(body[:-1]) + " and " + body[-1]) + "."]
    else:
        sentences = [cap(", ".join(body)) + ("," if question else ".")]
    if question:
        sentences.append(cap(question) if plan["join"] != 2 else question)
    return " ".join(sentences)


def render_summary(facts: dict, plan: dict) -> str:
    return join_clauses(summary_clauses(facts, plan), plan)


def other_references(post: Post, n: int) -> list[str]:
    """n more human TL;DRs of the post, each by another writer (as the post's own: a plan
    of which lesser facts to keep and how to word them; the register usually the post's),
    all different from the post's reference and from each other. For SFT on several
    references per post (`plus.data.load_sft_examples`): the prompt is computed once for
    all of them, so each extra reference costs only its own tokens."""
    if not isinstance(n, int) or n < 0:
        raise SyntheticWorldError(f"number of references must be a non-negative integer, got {n!r}")
    rng = random.Random(f"{SEED_PREFIX}/references/{post.id}")
    seen, out = {post.summary}, []
    for _ in range(20 * n):
        if len(out) == n:
            break
        text = render_summary(post.facts, reference_plan(rng, writer_register(post.facts, rng)))
        if text not in seen:
            seen.add(text)
            out.append(text)
    if len(out) < n:
        raise SyntheticWorldError(f"{post.id}: only {len(out)} distinct references in {20 * n} draws, asked for {n}")
    return out


def complete_summary(post: Post) -> str:
    """The post's reference rewritten to keep every important fact (same wording)."""
    plan = dict(post.facts["reference"], keep={f: True for f in LESSER_FACTS})
    return render_summary(post.facts, plan)
