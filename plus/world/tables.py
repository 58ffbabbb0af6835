"""The world's tables, part one: the records they are made of (`Fact`, `Group`) and what
every subreddit shares: relations, names, feelings, common questions, distractor sentences,
closers, fillers, amounts. The seven subreddit families are in groups.py.

Every string is a template: "[casual|formal]" register pairs and "{slot}"s, realized by
templates.py.
"""

from __future__ import annotations

from dataclasses import dataclass


class SyntheticWorldError(ValueError):
    """Bad input to the synthetic world (unknown split, malformed id, unknown weight)."""


# The prefix of every random stream's seed string (posts, references, labelers, pairs,
# corpus). It is part of the world's definition: another prefix is another world.
SEED_PREFIX = "plus.synthetic"


@dataclass(frozen=True)
class Fact:
    """One categorical fact (an event, complication, feeling or question).

    keys: the word sequences the judge recognizes as stating this fact; every sentence
    and clause of the fact contains one, and nothing else in the world contains any.
    """

    name: str
    keys: tuple[str, ...]
    post: tuple[str, ...]  # sentence paraphrases for posts
    summary: tuple[str, ...]  # clause paraphrases for TL;DRs
    relations: tuple[str, ...] = ()  # events only: the relations it fits (empty = all of the group)
    detail: tuple[str, ...] = ()  # events only: optional follow-up sentences
    title: tuple[str, ...] = ()  # events only: title phrases


@dataclass(frozen=True)
class Group:
    """A family of subreddits sharing relations, events, complications and questions."""

    name: str
    subreddits: tuple[str, ...]
    relations: tuple[str, ...]
    quantity: str  # "duration" or "amount"
    quantity_in: str  # which post sentence carries {qty}: "intro" or "event"
    summary_qty: str  # default summary format of {qty}, "#" is the quantity
    intros: tuple[str, ...]
    background: tuple[str, ...]  # optional context sentences, no facts in them
    events: tuple[Fact, ...]
    complications: tuple[Fact, ...]
    questions: tuple[Fact, ...]
    feelings: tuple[str, ...]
    titles: tuple[str, ...]


# relation -> (gender or "" if either, surface with register variants)
RELATIONS: dict[str, tuple[str, str]] = {
    "boyfriend": ("M", "[bf|boyfriend]"),
    "girlfriend": ("F", "[gf|girlfriend]"),
    "husband": ("M", "[hubby|husband]"),
    "wife": ("F", "wife"),
    "son": ("M", "son"),
    "daughter": ("F", "daughter"),
    "mother": ("F", "[mom|mother]"),
    "father": ("M", "[dad|father]"),
    "brother": ("M", "[bro|brother]"),
    "sister": ("F", "[sis|sister]"),
    "roommate": ("", "[roomie|roommate]"),
    "best_friend": ("", "[bff|best friend]"),
    "boss": ("", "[boss|manager]"),
    "coworker": ("", "coworker"),
    "landlord": ("", "landlord"),
    "neighbor": ("", "neighbor"),
}
# Other people a post or a model may mention; a summary naming one the post does not
# mention has invented a relation.
OTHER_RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "ex": ("ex",),
    "partner": ("partner",),
    "friend": ("friend",),
    "cousin": ("cousin",),
    "grandma": ("grandma",),
    "uncle": ("uncle",),
    "aunt": ("aunt",),
}

NAMES = {
    "M": ("Jake", "Tyler", "Ryan", "Kyle", "Derek", "Nate", "Josh", "Brandon", "Ethan", "Mason"),
    "F": ("Emma", "Chloe", "Megan", "Hannah", "Olivia", "Sophie", "Lauren", "Kayla", "Jess", "Amber"),
}
STATES = ("Ohio", "Texas", "Florida", "Oregon", "Georgia", "Arizona")

FEELINGS: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (surface, keys)
    "betrayed": ("betrayed", ("betrayed",)),
    "hurt": ("[crushed|hurt]", ("crushed", "hurt")),
    "angry": ("[pissed|angry]", ("pissed", "angry")),
    "confused": ("confused", ("confused",)),
    "anxious": ("[stressed|anxious]", ("stressed", "anxious")),
    "guilty": ("guilty", ("guilty",)),
    "embarrassed": ("embarrassed", ("embarrassed",)),
    "exhausted": ("[drained|exhausted]", ("drained", "exhausted")),
}
FEELING_POST = (
    "I feel so {feel} right now.",
    "[Tbh|Honestly] I am just {feel}.",
    "I have been feeling really {feel} about it.",
    "[I'm|I am] {feel} and I [can't|cannot] sleep.",
)
FEELING_SUMMARY = ("I feel {feel}", "feeling {feel}", "[I'm|I am] so {feel}")


def _feeling(name: str) -> Fact:
    surface, keys = FEELINGS[name]
    return Fact(name, keys, tuple(t.replace("{feel}", surface) for t in FEELING_POST),
                tuple(t.replace("{feel}", surface) for t in FEELING_SUMMARY))


FEELING_FACTS = {name: _feeling(name) for name in FEELINGS}

# Questions several groups share.
TALK = Fact("talk", ("talk to",),
            ("How do I talk to {him} about this?", "What is the best way to talk to {him} about it?"),
            ("how do I talk to {him}?", "how should I talk to {him}?"))
ADVICE = Fact("advice", ("what should i do", "what do i do"),
              ("What should I do?", "What do I do now?"),
              ("what should I do?", "what do I do?"))

DEFAULT_TITLES = (
    "{event_title}",
    "{event_title}, {question}",
    "{event_title} {ntag}",
    "Need advice: {event_title}",
    "Me {ntag} and my {rel} {otag}, need advice",
)


# Sentences unrelated to the facts; every post has 1-4 of them.
DISTRACTORS = (
    "I work as a nurse at a small clinic.",
    "For context, I live in a small town.",
    "Sorry for the formatting, [I'm|I am] on mobile.",
    "English is not my first language.",
    "I made a throwaway for this.",
    "It has been raining all week here.",
    "I have been going to the gym a lot lately.",
    "I usually just lurk here.",
    "I have a dog who follows me everywhere.",
    "My sleep schedule is a mess [rn|right now].",
    "I have been trying to eat healthier.",
    "I play guitar with some friends on weekends.",
    "I know this is long, sorry.",
    "I just got back from visiting my grandparents.",
    "Work has been [super|very] busy lately.",
    "[I'm|I am] in my last year of college.",
    "My car broke down last month, so money is tight.",
    "I have been reading a lot of posts here.",
    "I like hiking and cooking.",
    "I [don't|do not] really have anyone else to ask.",
    "[Tbh|Honestly] [I'm|I am] not great at this stuff.",
    "My friends say I am too nice.",
    "I have never posted here before.",
    "It is a long story but I will keep it short.",
    "This has been on my mind for a while.",
    "[I'm|I am] [kinda|somewhat] new to this sub.",
)
CLOSERS = ("Any advice is appreciated.", "Thanks for reading.", "[Thx|Thank you] in advance.", "Please help.")
NAME_SENTENCES = ("I will call {him} {name} here.", "Let's call {him} {name}.")
# Clauses the perturbations add to a TL;DR: filler, and facts the post never states.
FILLERS = ("long story short", "so yeah", "[idk|I do not know] what to think", "it is a long story",
           "thanks for reading", "any advice helps", "this is my first post")
INVENTED = {
    "name": "{his} name is {name}",
    "relation": "my {rel} agrees with me",
    "number": "it has been {n} days",
}
# The amounts of money (dollars) a post may name.
AMOUNTS = (300, 400, 500, 600, 800, 900, 1000, 1200, 1500, 1800, 2000, 2500, 3000, 3500, 4000, 5000, 6000,
           7500, 8000, 10000, 12000, 15000)
