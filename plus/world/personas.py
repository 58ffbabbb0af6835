"""Personas: what a simulated user wants from a TL;DR, and the words people use to say it.

PLUS (Nam et al. 2025) learns a text summary z of each user's preferences. For that the
world needs users who disagree, and a way to tell whether a z says the right thing.

An **attribute** is one pole of an axis of disagreement. It changes some of the gold
judge's weights (judge.py) and has a canonical sentence that states it:

    axis      pole       weights                                  what it rewards
    length    brief      brevity 8, coverage 1                    every word costs 0.32 points
              thorough   brevity 0.25, coverage 1.5               every fact kept; words nearly free
    content   feelings   feelings 3, question 2, details 0.25     the feeling and the question
              numbers    details 3, feelings 0.25, question 0.5   ages, durations and amounts
    register  formal     formality 2                              "boyfriend", "I am", "$2,000"
              casual     formality -2                             "bf", "I'm", "$2k"

Each axis sets its own weights and no other axis's, so a **persona**, one pole of some of
the axes, has weights DEFAULT_WEIGHTS updated by its attributes' weights in any order,
and its canonical z (what an oracle summarizer writes) is its sentences joined. Axes with
two poles give new combinations for out-of-distribution tests (users.py).

The weights are sized so that each axis matters about as much as the others: two personas
one axis apart prefer different summaries on a fifth to a quarter of the pairs users
compare (users.py: TL;DRs by several writers and perturbations of them).

`summary_attribute_accuracy(z, persona)` is the judge of z: it reads which pole of each
axis a free-text z states, as judge.py reads facts, by recognizing each attribute's key
phrases (KEYS), and it understands the negations people use ("not numbers", "I do not
want long summaries", "feelings do not matter", "feelings over numbers"): a key read in a
negated scope states the opposite pole. `self_descriptions(n, seed)` writes texts in which
people say what they want from a TL;DR in varied words, so that a pretrained model has
words for z; every sentence it writes is one the judge reads as the pole it was written for.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from plus.world.judge import DEFAULT_WEIGHTS
from plus.world.tables import SEED_PREFIX, SyntheticWorldError


@dataclass(frozen=True)
class Attribute:
    """One pole of an axis: how it changes the gold judge, and how people state it."""

    name: str
    axis: str
    weights: tuple[tuple[str, float], ...]  # gold-judge weights it sets (judge.py's DEFAULT_WEIGHTS keys)
    sentence: str  # the canonical statement, part of the oracle's z
    says: tuple[str, ...]  # other ways to state it (the canonical one included), for self-descriptions


AXES = {"length": ("brief", "thorough"), "content": ("feelings", "numbers"), "register": ("formal", "casual")}

ATTRIBUTES = {a.name: a for a in (
    Attribute("brief", "length", (("brevity", 8.0), ("coverage", 1.0)), "I like short summaries.",
              ("I like short summaries.", "Keep it short.", "Brief is best.", "Short and to the point, please.",
               "I do not want long summaries.", "The shorter the better.", "A few words are enough for me.",
               "Concise summaries work best for me.", "Not too long, please.")),
    Attribute("thorough", "length", (("brevity", 0.25), ("coverage", 1.5)),
              "I like complete summaries that keep every fact.",
              ("I like complete summaries that keep every fact.", "Give me the whole story.",
               "I want every fact in the summary.", "Long summaries are fine with me.",
               "A thorough summary is worth the extra words.",
               "I would rather read a long summary than a short one.", "Do not cut it short.",
               "I want the full picture.")),
    Attribute("feelings", "content", (("feelings", 3.0), ("question", 2.0), ("details", 0.25)),
              "I care about how people feel and what they ask, not numbers.",
              ("I care about how people feel and what they ask, not numbers.", "Tell me how they feel.",
               "The feelings matter most to me.", "I want the emotions and the question.",
               "Skip the numbers, tell me the feelings.", "I do not care about ages or amounts.",
               "Feelings over numbers.", "What matters is how people feel and what they ask.")),
    Attribute("numbers", "content", (("details", 3.0), ("feelings", 0.25), ("question", 0.5)),
              "I care about the numbers: ages, durations and amounts, not feelings.",
              ("I care about the numbers: ages, durations and amounts, not feelings.",
               "Give me the ages, durations and amounts.", "The numbers matter most to me.",
               "I want the ages and the money involved.", "Skip the feelings, give me the numbers.",
               "Feelings do not matter to me, numbers do.", "Numbers over emotions.",
               "Ages, durations and amounts are what I look for.")),
    Attribute("formal", "register", (("formality", 2.0),), "I prefer formal wording.",
              ("I prefer formal wording.", "Use proper, polite language.", "Write in full words, no slang.",
               "A professional tone works best for me.", "Formal, please.",
               "I like proper grammar and no abbreviations.", "Keep it formal, not casual.")),
    Attribute("casual", "register", (("formality", -2.0),), "I prefer casual wording.",
              ("I prefer casual wording.", "Write it like a friend would.", "Slang and abbreviations are fine.",
               "Keep the tone relaxed, not formal.", "Casual is best.", "I like a laid back tone.",
               "No need to be formal.")),
)}

# The phrases that state each pole (lowercase words). Longer phrases are matched first, so
# "full words" is the formal register and not the start of something else.
KEYS = {
    "brief": ("short", "shorter", "shortest", "brief", "briefly", "concise", "to the point", "few words",
              "succinct", "compact"),
    "thorough": ("long", "longer", "complete", "thorough", "every fact", "all the facts", "everything",
                 "whole story", "full picture", "nothing left out", "extra words"),
    "feelings": ("feelings", "feeling", "emotions", "emotion", "emotional", "how they feel", "how people feel",
                 "how the poster feels", "the question", "what they ask", "what they are asking"),
    "numbers": ("numbers", "number", "ages", "age", "durations", "duration", "amounts", "amount", "money",
                "figures", "specifics"),
    "formal": ("formal", "formally", "proper", "polite", "full words", "professional", "proper grammar"),
    "casual": ("casual", "casually", "informal", "relaxed", "slang", "abbreviations", "chill", "like a friend",
               "laid back"),
}
# A key after one of these, in the same clause, is negated: "not numbers", "skip the
# feelings", "feelings over numbers", "more than feelings". Clauses end at punctuation and
# at "but", "and I", "while", "though", "yet".
NEGATORS = {"not", "no", "never", "without", "than", "over", "instead", "skip", "hate", "dislike", "avoid",
            "less", "fewer", "nor"}
# "feelings do not matter": a key before a negated "matter" (or "important", ...) is negated.
_NEGATED_PREDICATE = re.compile(r"\b(?:not|never)\s+(?:really\s+)?(?:matter|important|needed|necessary|interest)")
_CLAUSE_BREAK = re.compile(r"[.,;:!?\n()]+|\bbut\b|\band i\b|\bwhile\b|\bthough\b|\byet\b")
# Phrases whose negation word negates nothing: "I do not mind long summaries", "no matter how long".
_NOT_NEGATIONS = ((re.compile(r"\bnot mind\b"), "mind"), (re.compile(r"\bno matter\b"), "whatever"),
                  (re.compile(r"\bnot only\b"), "only"))
_KEYS_LONGEST_FIRST = sorted(((tuple(k.split()), a) for a, keys in KEYS.items() for k in keys),
                             key=lambda ka: -len(ka[0]))
_OPPOSITE = {a: next(b for b in poles if b != a) for poles in AXES.values() for a in poles}


@dataclass(frozen=True)
class Persona:
    """A combination of attributes, at most one pole per axis, in AXES order."""

    attributes: tuple[str, ...]

    def __post_init__(self):
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown or not self.attributes:
            raise SyntheticWorldError(f"a persona needs known attributes, got {list(self.attributes)} "
                                      f"(valid: {', '.join(ATTRIBUTES)})")
        axes = [ATTRIBUTES[a].axis for a in self.attributes]
        if len(set(axes)) != len(axes):
            raise SyntheticWorldError(f"persona {self.attributes}: two poles of one axis")
        order = list(AXES)
        object.__setattr__(self, "attributes", tuple(sorted(self.attributes, key=lambda a: order.index(
            ATTRIBUTES[a].axis))))

    @property
    def name(self) -> str:
        return "+".join(self.attributes)

    @property
    def weights(self) -> dict[str, float]:
        """The gold judge's weights for this persona: the defaults, updated by each attribute."""
        weights = dict(DEFAULT_WEIGHTS)
        for a in self.attributes:
            weights.update(ATTRIBUTES[a].weights)
        return weights

    @property
    def text(self) -> str:
        """The canonical z: the attributes' sentences, joined."""
        return " ".join(ATTRIBUTES[a].sentence for a in self.attributes)

    def pole(self, axis: str) -> str | None:
        return next((a for a in self.attributes if ATTRIBUTES[a].axis == axis), None)


def opposite(persona: Persona) -> Persona:
    """The persona with every pole of `persona` flipped (brief+feelings -> thorough+numbers)."""
    return Persona(tuple(_OPPOSITE[a] for a in persona.attributes))


def flipped(persona: Persona, axis: str) -> Persona:
    """The persona with its pole of `axis` flipped and every other pole kept
    (brief+feelings, "content" -> brief+numbers); a persona without a pole of the axis is
    returned as it is."""
    return Persona(tuple(_OPPOSITE[a] if ATTRIBUTES[a].axis == axis else a for a in persona.attributes))


def _normalize(text: str) -> str:
    text = text.lower().replace("\u2019", "'").replace("-", " ")
    text = re.sub(r"n't\b", " not", text)  # "don't" -> "do not", "can't" -> "ca not"
    for pattern, replacement in _NOT_NEGATIONS:
        text = pattern.sub(replacement, text)
    return text


def stated_attributes(z: str) -> dict[str, set[str]]:
    """axis -> the poles that z states (empty, one, or both when z contradicts itself).

    z is cut into clauses (_CLAUSE_BREAK); in each, keys are matched longest first; a key
    after an odd number of NEGATORS, or before a negated "matter" / "important" ...,
    states the opposite pole of its own."""
    stated: dict[str, set[str]] = {axis: set() for axis in AXES}
    for clause in _CLAUSE_BREAK.split(_normalize(z)):
        words = re.findall(r"[a-z0-9']+", clause)
        i, negations = 0, 0
        while i < len(words):
            match = next(((k, a) for k, a in _KEYS_LONGEST_FIRST if tuple(words[i:i + len(k)]) == k), None)
            if match is None:
                negations += words[i] in NEGATORS
                i += 1
                continue
            key, attribute = match
            i += len(key)
            negated_after = bool(_NEGATED_PREDICATE.search(" ".join(words[i:])))
            if (negations + negated_after) % 2:
                attribute = _OPPOSITE[attribute]
            stated[ATTRIBUTES[attribute].axis].add(attribute)
    return stated


def summary_attribute_accuracy(z: str, persona: Persona) -> dict:
    """Which of the persona's attributes z states correctly, wrongly, or not at all.

    correct: z states the persona's pole of the axis (and not the other one);
    wrong:   z states the opposite pole (alone or beside the right one: a contradiction);
    omitted: z says nothing about the axis;
    extra:   poles z states on axes the persona has no preference on.
    score = (n_correct - n_wrong - n_extra) / n_attributes: 1 for the canonical z, 0 for
    a z that says nothing, negative for one that misleads.
    """
    stated = stated_attributes(z)
    correct, wrong, omitted, extra = [], [], [], []
    for axis, poles in stated.items():
        mine = persona.pole(axis)
        if mine is None:
            extra += sorted(poles)
        elif not poles:
            omitted.append(mine)
        elif poles == {mine}:
            correct.append(mine)
        else:
            wrong.append(mine)
    score = (len(correct) - len(wrong) - len(extra)) / len(persona.attributes)
    return {"correct": correct, "wrong": wrong, "omitted": omitted, "extra": extra,
            "stated": {axis: sorted(poles) for axis, poles in stated.items()}, "score": score}


# Openings of a self-description; none contains a key or a negator.
OPENERS = ("", "What I want from a TL;DR:", "When I read a TL;DR:", "About summaries:", "My TL;DR preferences:",
           "For summaries of posts:")


def describe(attributes: tuple[str, ...] | list[str], rng: random.Random) -> str:
    """A self-description stating each of the given attributes, in words drawn from its
    paraphrases (Attribute.says), in a random order after an optional opener."""
    sentences = [rng.choice(ATTRIBUTES[a].says) for a in attributes]
    rng.shuffle(sentences)
    opener = rng.choice(OPENERS)
    return " ".join(([opener] if opener else []) + sentences)


def self_descriptions(n: int, seed: int = 0) -> list[str]:
    """n texts in which people say what they want from a TL;DR: each states one to three
    attributes (one pole of as many axes). Text i depends on (seed, i) only, so a longer
    list extends a shorter one."""
    if not isinstance(n, int) or n < 0:
        raise SyntheticWorldError(f"number of self-descriptions must be a non-negative integer, got {n!r}")
    out = []
    for i in range(n):
        rng = random.Random(f"{SEED_PREFIX}/self_descriptions/{seed}/{i}")
        axes = rng.sample(list(AXES), rng.randint(1, len(AXES)))
        out.append(describe([rng.choice(AXES[axis]) for axis in axes], rng))
    return out
