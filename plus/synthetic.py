"""The built-in summarization world: Reddit-style posts, reference TL;DRs, a gold judge
and simulated labelers.

Stiennon et al. 2020 ("Learning to summarize from human feedback") trained on Reddit
TL;DR posts and paid human labelers to compare summaries. To run the whole recipe on a
laptop, and to *measure* it, we replace both with a procedural world:

1. **Posts from latent facts.** Every post is written from a small set of facts: the
   narrator (age, gender), the other party (relation, age, gender), a duration or an
   amount of money, the central event, a complication, a feeling and the question asked,
   plus 1-4 distractor sentences. Each fact has several paraphrases, sentences move
   around, titles vary, and a register (casual or formal) picks between word variants
   such as "bf"/"boyfriend" or "don't"/"do not". The language is small and closed (about
   700 words), so a 4k-token BPE covers it and a 2-5M-parameter model can learn it.
   Posts have 57-110 words (about 95 BPE tokens), references 9-35 words.

2. **Reference TL;DRs written like people write them.** The reference always states the
   central event (and who did it) but keeps each lesser fact only with some probability,
   the way human TL;DRs vary in quality. A model that imitates references inherits their
   gaps; a policy that always states every important fact concisely beats them. That is
   the headroom RLHF is meant to find.

3. **A gold judge.** `gold_score` knows the latent facts and reads a summary by
   recognizing the surface forms the world can produce for each fact, so it works on a
   model's free-form output (see "The gold judge" below).

4. **Simulated labelers.** A labeler prefers summary a over b with probability
   sigmoid((gold(a) - gold(b)) / tau) (a Bradley-Terry labeler), with tau calibrated so
   that labelers agree with the noiseless gold choice about 75% of the time, as
   Stiennon's labelers agreed with researchers 73-77% of the time.

Everything is deterministic: post `index` of `split` under world `seed` is generated
from its own `random.Random` seeded with the string id "s{seed}-{split}-{index:06d}"
(string seeds are hashed with SHA-512 by `random`, so unlike `hash()` they are stable
across processes), so any post can be regenerated alone from its id.

## The gold judge

Words are whitespace-separated pieces of the raw summary. The score is

    score = fluency * coverage
            - ERROR_PENALTY * accuracy * n_errors
            - BREVITY_COST * brevity * n_words
            - LENGTH_PENALTY * max(0, TOKENS_PER_WORD * n_words - MAX_TOKENS)
            - REPEAT_PENALTY * min(n_repeated_trigrams, MAX_REPEATS)
            - SALAD_PENALTY * (1 - fluency)
            + FORMALITY_BONUS * formality * style

* coverage = sum of FACT_WEIGHTS[f] (times the persona multipliers below) over the
  important facts the summary states correctly: the event and the relation (the event
  is recognized by its key phrases, e.g. "cheated"/"cheating"; the relation by any of its
  forms, e.g. "bf"/"boyfriend"), the narrator's age+gender tag ("I (24F)", "24F",
  "24 year old woman"), the other party's tag, the duration ("3 years", "3 yrs",
  "three years") or amount ("$2,000", "$2k", "2000"), the complication, the feeling and
  the question. Perfect coverage is 9.5 with the default weights.
* n_errors counts facts stated wrongly or invented: a number (age tag, duration, amount,
  bare number) that is not in the post, a tag attached to the wrong person ("I (26M)"
  when 26M is the boyfriend), a relation or a name the post never mentions, and an
  event, complication, feeling or question of another post.
* Length: Stiennon's task asks for summaries under 48 tokens. We estimate tokens as
  TOKENS_PER_WORD = 1.3 per whitespace word (the world's BPE gives about that), so the
  penalty starts past 48 / 1.3 = 36.9 words. BREVITY_COST adds a small cost per word so
  that among summaries with the same content the shorter one wins (and ties are rare).
* Repetition: each word trigram that repeats an earlier one (numbers and tags are
  replaced by their class, punctuation ignored).
* Word salad: the summary's words are mapped to classes (numbers, tags, names) and
  compared with the world's language: `known` is the fraction of its bigrams (sentence
  boundaries included) that occur in a fixed sample of world text, `oov` the fraction
  of words outside the world's vocabulary. fluency = clip((known - SALAD_LOW) /
  (SALAD_HIGH - SALAD_LOW), 0, 1) * (1 - oov). A fluent summary has fluency 1; shuffled
  or invented text loses its coverage and pays up to SALAD_PENALTY.
* style in [-1, 1] is (formal - casual) / (formal + casual) over the register markers
  in the summary (the two sides of every "[casual|formal]" pair in the world's tables,
  plus "$2k" / "3 yrs" against "$2,000" / "3 years"); 0 when there are none.
* The empty summary scores EMPTY_SCORE.

`weights` re-weights attributes so that later (personalized) work can give each
simulated user a persona. Keys and defaults:

    coverage  1.0  multiplies all of coverage
    events    1.0  multiplies the event and complication weights
    feelings  1.0  multiplies the feeling weight
    question  1.0  multiplies the question weight
    details   1.0  multiplies the age tags and the duration/amount weights
    brevity   1.0  multiplies the per-word cost (a brevity lover has, say, 10)
    accuracy  1.0  multiplies the penalty for wrong or invented facts
    formality 0.0  > 0 prefers formal wording, < 0 casual; 0 is neutral

## Entry points

`make_post` / `post_from_id` / `World(seed).posts(split, n)` give posts;
`World.corpus` the pretraining texts; `gold_score` / `gold_breakdown` /
`gold_preference` the judge; `complete_summary` the reference with every fact kept;
`perturb` summaries of varying quality; `Labeler` and `make_comparisons` labeled
comparisons; `export` (or `python -m plus.synthetic --export DIR`) the JSONL files;
`python -m plus.synthetic --show 3` prints examples, `--calibrate` recomputes LABELER_TAU.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


class SyntheticWorldError(ValueError):
    """Bad input to the synthetic world (unknown split, malformed id, unknown weight)."""


# ======================================================================================
# The world's tables
# ======================================================================================
# Template mini-language, used by every string below:
#   [casual|formal]  a register variant: casual posts mostly take the left side, formal
#                    posts always the right side; summaries take the side of their register.
#   {he} {him} {his} {He} {His}  the other party's pronouns
#   {rel}            the other party's relation word ("bf" / "boyfriend", ...)
#   {ntag} {otag}    age+gender tags, "(24F)" for the narrator and the other party
#   {qty}            the duration ("3 years") or amount ("$2,000")
# Summary clauses also use {I} ("I (24F)" or "I"), {me}, {them} ("my bf (26M)" or
# "my bf"), {their} ("my bf's (26M)"), and {qty} / {qty|FORMAT} where FORMAT places the
# quantity at "#" (" of #" by default for durations): the quantity clause disappears
# when the summary leaves the quantity out.


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

ROMANCE = Group(
    name="romance",
    subreddits=("relationships", "relationship_advice", "dating_advice"),
    relations=("boyfriend", "girlfriend", "husband", "wife"),
    quantity="duration", quantity_in="intro", summary_qty=" of #",
    intros=(
        "My {rel} {otag} and I {ntag} have been together for {qty}.",
        "I {ntag} have been with my {rel} {otag} for {qty}.",
        "[So I'm|I am] a {nage} year old {ngw} and I have been with my {rel} {otag} for {qty}.",
    ),
    background=(
        "Things were great between us until recently.",
        "We met through friends at a party.",
        "We [don't|do not] usually fight about anything.",
    ),
    events=(
        Fact("cheated", ("cheated", "cheating", "slept with"),
             ("Last week I found out that {he} cheated on me with someone from {his} work.",
              "A few days ago {he} admitted that {he} has been cheating on me.",
              "I just found out {he} slept with someone else at a party."),
             ("{them}{qty} cheated on {me}",
              "{I} found out {them}{qty} has been cheating on me",
              "{I} just learned {them}{qty} slept with someone else"),
             detail=("{He} says it only happened once.", "{He} swears it meant nothing."),
             title=("my {rel} cheated on me", "found out my {rel} was cheating")),
        Fact("texting_ex", ("texting",),
             ("I found out {he} has been secretly texting {his} ex every night.",
              "{He} has been texting {his} ex behind my back for weeks.",
              "I saw that {he} is still texting {his} ex and hiding it from me."),
             ("{I} caught {them}{qty} texting {his} ex",
              "{them}{qty} keeps texting {his} ex and lies to {me} about it"),
             detail=("When I asked about it {he} said they are just friends.",),
             title=("my {rel} keeps texting {his} ex",)),
        Fact("birthday", ("birthday",),
             ("{He} forgot my birthday and went out with {his} friends instead.",
              "On my birthday {he} did not show up and did not even text me."),
             ("{I} spent my birthday alone because {them}{qty} forgot it",
              "{them}{qty} forgot my birthday and {I} spent it alone"),
             detail=("{He} said {he} was just busy.",),
             title=("my {rel} forgot my birthday",)),
        Fact("hometown", ("hometown",),
             ("{He} wants to move back to {his} hometown and expects me to follow {him}.",
              "{He} just told me {he} is moving back to {his} hometown, with or without me."),
             ("{them}{qty} wants {me} to follow {him} to {his} hometown",
              "{them}{qty} is moving to {his} hometown with or without {me}"),
             detail=("I have a good job here and all my friends are here.",),
             title=("my {rel} wants to move to {his} hometown",)),
        Fact("no_kids", ("kids",),
             ("Out of nowhere {he} told me {he} never wants kids.",
              "{He} just said {he} has changed {his} mind and does not want kids."),
             ("{them}{qty} suddenly told {me} {he} never wants kids",
              "{I} just learned {them}{qty} changed {his} mind about having kids"),
             detail=("We talked about this before we got serious.",),
             title=("my {rel} suddenly does not want kids",)),
        Fact("open_relationship", ("open relationship",),
             ("{He} asked me if we could try an open relationship.",
              "Last night {he} told me {he} wants an open relationship."),
             ("{them}{qty} asked {me} for an open relationship",
              "{them}{qty} told {me} {he} wants an open relationship"),
             detail=("{He} says nothing else would change.",),
             title=("my {rel} wants an open relationship",)),
        Fact("read_phone", ("my phone",),
             ("I caught {him} going through my phone while I was asleep.",
              "{He} keeps going through my phone and reading my messages."),
             ("{I} caught {them}{qty} going through my phone",
              "{them}{qty} went through my phone while {I} was asleep"),
             detail=("{He} says {he} just wanted to check something.",),
             title=("caught my {rel} going through my phone",)),
    ),
    complications=(
        Fact("lease", ("lease",),
             ("The problem is we just signed a lease together.",
              "We live together and the lease runs until next summer."),
             ("we just signed a lease together", "we share a lease")),
        Fact("baby", ("baby",),
             ("We have a baby together.", "We have a little baby at home."),
             ("we have a baby together", "we have a baby")),
        Fact("adore", ("adore", "adores"),
             ("My parents adore {him}.", "My whole family adores {him}."),
             ("my parents adore {him}", "my family adores {him}")),
        Fact("depend", ("depend",),
             ("Right now I depend on {him} for money since I lost my job.",),
             ("I depend on {him} for money", "I depend on {him} right now")),
        Fact("engaged", ("engaged",),
             ("We got engaged a few months ago.", "We are engaged and the wedding is already planned."),
             ("[we're|we are] engaged", "we just got engaged")),
        Fact("moved_for", ("across the country",),
             ("I moved across the country to be with {him}.",),
             ("I moved across the country for {him}",)),
    ),
    questions=(
        Fact("break_up", ("break up", "end things"),
             ("Should I break up with {him}?", "Is it time to end things?"),
             ("should I break up with {him}?", "should I end things?")),
        Fact("overreacting", ("overreacting",),
             ("Am I overreacting?", "Am I overreacting or is this a big deal?"),
             ("am I overreacting?", "am I overreacting here?")),
        Fact("trust", ("trust",),
             ("Can I ever trust {him} again?", "How do I learn to trust {him} again?"),
             ("can I ever trust {him} again?", "how do I trust {him} again?")),
        TALK, ADVICE,
    ),
    feelings=("betrayed", "hurt", "angry", "confused", "anxious"),
    titles=DEFAULT_TITLES,
)

KIDS = Group(
    name="kids",
    subreddits=("AskParents", "parenting"),
    relations=("son", "daughter"),
    quantity="duration", quantity_in="event", summary_qty=" for #",
    intros=(
        "I {ntag} need some advice about my {rel} {otag}.",
        "My {rel} {otag} and I {ntag} used to be really close.",
        "I {ntag} am at a loss with my {rel} {otag}.",
    ),
    background=(
        "{He} has always been a sweet kid.",
        "I try to be a fair parent.",
        "{He} is usually a good student.",
    ),
    events=(
        Fact("skipping", ("skipping",),
             ("For the past {qty} {he} has been skipping school.",
              "I just learned that {he} has been skipping class for {qty}.",
              "{He} has been skipping school for {qty} and lying to me about it."),
             ("{I} found out {them} has been skipping school{qty}",
              "{them} has been skipping school{qty} and lying to {me}"),
             detail=("The school called me about it yesterday.",),
             title=("my {rel} has been skipping school",)),
        Fact("vaping", ("vape", "vaping"),
             ("I found a vape in {his} room and {he} admitted {he} has been vaping for {qty}.",
              "{He} has been vaping for {qty} and hiding it from me."),
             ("{I} found out {them} has been vaping{qty}",
              "{I} found a vape in {their} room, {he} has been vaping{qty}"),
             detail=("{He} says all {his} friends do it.",),
             title=("found out my {rel} is vaping",)),
        Fact("stealing", ("stealing", "stole"),
             ("For {qty} {he} has been stealing money from my wallet.",
              "I found out {he} has been stealing money from me for {qty}."),
             ("{them} has been stealing money from {me}{qty}",
              "{I} caught {them} stealing money from my wallet{qty}"),
             detail=("{He} says {he} needed it for snacks.",),
             title=("my {rel} stole money from me",)),
        Fact("grades", ("grades",),
             ("{His} grades have dropped a lot over the past {qty}.",
              "Over the last {qty} {his} grades went from good to failing."),
             ("{them} has had bad grades{qty} and lies to {me} about it",
              "{I} noticed {their} grades dropping{qty}"),
             detail=("{He} used to love school.",),
             title=("my {rel} has failing grades",)),
        Fact("silent", ("spoken", "speaking"),
             ("{He} has barely spoken to me in {qty}.",
              "For {qty} {he} has not been speaking to me at all."),
             ("{them} has barely spoken to {me}{qty}", "{them} stopped speaking to {me}{qty}"),
             detail=("{He} just stays in {his} room.",),
             title=("my {rel} has stopped speaking to me",)),
        Fact("gaming", ("gaming", "video games"),
             ("For the past {qty} {he} has been up all night playing video games.",
              "{He} has been gaming all night for {qty} and sleeps through the day."),
             ("{I} [can't|cannot] get {them} to stop gaming all night{qty}",
              "{them} has been gaming all night{qty} and lies to {me} about it"),
             detail=("{He} is always tired in the morning.",),
             title=("my {rel} is gaming all night",)),
        Fact("bullied", ("bullied",),
             ("{He} finally told me {he} has been bullied at school for {qty}.",
              "I just learned {he} has been bullied by other students for {qty}."),
             ("{them} told {me} {he} has been bullied{qty}",
              "{I} found out {them} has been bullied at school{qty}"),
             detail=("{He} did not want me to call the school.",),
             title=("my {rel} is being bullied",)),
    ),
    complications=(
        Fact("divorce", ("divorce",),
             ("{His} other parent and I are going through a divorce.", "We are in the middle of a divorce right now."),
             ("we are going through a divorce", "there is a divorce going on")),
        Fact("new_job", ("new job",),
             ("I just started a new job and I work late most nights.",),
             ("I just started a new job", "I work late at my new job")),
        Fact("therapist", ("therapist",),
             ("{His} therapist told us to give {him} more space.",),
             ("{his} therapist says to give {him} space",)),
        Fact("too_strict", ("too strict",),
             ("My partner thinks I am being too strict.", "My partner says I am too strict with {him}."),
             ("my partner thinks [I'm|I am] too strict",)),
        Fact("new_town", ("new town",),
             ("We just moved to a new town last month.",),
             ("we just moved to a new town",)),
        Fact("exams", ("exams",),
             ("{He} has big exams coming up soon.",),
             ("{he} has big exams coming up",)),
    ),
    questions=(
        Fact("ground", ("ground", "grounding", "punish"),
             ("Should I ground {him}?", "Would it be fair to ground {him} for this?"),
             ("should I ground {him}?",)),
        Fact("normal", ("normal",),
             ("Is this normal for {his} age?", "Is this normal at {his} age?"),
             ("is this normal?", "is this normal for {his} age?")),
        Fact("help", ("professional help", "counselor"),
             ("Should I get {him} professional help?", "Does {he} need to see a counselor?"),
             ("should I get {him} professional help?", "does {he} need a counselor?")),
        TALK, ADVICE,
    ),
    feelings=("anxious", "hurt", "angry", "confused", "exhausted", "guilty"),
    titles=DEFAULT_TITLES,
)

MONEY = Group(
    name="money",
    subreddits=("personalfinance",),
    relations=("mother", "father", "brother", "sister", "roommate", "best_friend"),
    quantity="amount", quantity_in="event", summary_qty=" #",
    intros=(
        "I {ntag} have always been close with my {rel} {otag}.",
        "My {rel} {otag} and I {ntag} have never really had money problems before.",
        "I {ntag} need some advice about money and my {rel} {otag}.",
    ),
    background=(
        "We grew up without much money.",
        "I have always been careful with money.",
        "{He} has struggled with money before.",
    ),
    events=(
        Fact("lent", ("lent", "paid me back"),
             ("Last year I lent {him} {qty} and {he} still has not paid me back.",
              "A while ago I lent {him} {qty} for {his} car and {he} never paid me back."),
             ("{I} lent {them}{qty} and {he} never paid me back",
              "{them} never paid back the money{qty| (#)} {I} lent {him}"),
             detail=("{He} keeps saying {he} will pay soon.",),
             title=("my {rel} never paid me back",)),
        Fact("cosign", ("cosign",),
             ("{He} wants me to cosign a {qty} car loan for {him}.", "{He} keeps asking me to cosign a {qty} loan."),
             ("{them} wants {me} to cosign a{qty} loan", "{them} keeps asking {me} to cosign a{qty} car loan"),
             detail=("{His} own credit score is really low.",),
             title=("my {rel} wants me to cosign a loan",)),
        Fact("credit_card", ("credit card", "in my name"),
             ("I found out {he} opened a credit card in my name and spent {qty}.",
              "{He} used my info to open a credit card in my name and ran up {qty}."),
             ("{them} opened a credit card in my name and spent{qty| #} without telling {me}",
              "{I} found out {them} opened a credit card in my name{qty| and spent #}"),
             detail=("I only found out when I checked my credit score.",),
             title=("my {rel} opened a credit card in my name",)),
        Fact("borrow", ("borrow",),
             ("{He} keeps asking to borrow {qty} from me.", "Now {he} wants to borrow {qty} again."),
             ("{them} keeps asking to borrow{qty| #} from {me}",
              "{them} wants to borrow money from {me} again{qty| (#)}"),
             detail=("{He} says it is for an emergency.",),
             title=("my {rel} keeps asking for money",)),
        Fact("bills", ("bills",),
             ("{He} owes me {qty} for {his} share of the bills.",
              "{He} has not paid {his} share of the bills, which is now {qty}."),
             ("{them} owes {me}{qty| #} for bills",
              "{them} [won't|will not] pay {his} share of the bills{qty| (#)} so {I} cover it"),
             detail=("I have reminded {him} many times.",),
             title=("my {rel} owes me for bills",)),
        Fact("inheritance", ("inheritance",),
             ("{He} wants me to give {him} {qty} from my inheritance.",
              "After my grandma passed, {he} started asking for {qty} of my inheritance."),
             ("{them} wants {me} to give {him}{qty| #} from my inheritance",
              "{them} keeps asking {me} for part of my inheritance{qty| (#)}"),
             detail=("{He} says it is only fair.",),
             title=("my {rel} wants part of my inheritance",)),
    ),
    complications=(
        Fact("savings", ("savings",),
             ("That money was most of my savings.", "It would wipe out my savings."),
             ("it was most of my savings", "[it's|it is] most of my savings")),
        Fact("student_loans", ("student loans",),
             ("I am still paying off my own student loans.",),
             ("I have my own student loans",)),
        Fact("takes_side", ("side",),
             ("The rest of the family takes {his} side.",),
             ("the family takes {his} side",)),
        Fact("in_writing", ("in writing",),
             ("{He} promised in writing to pay it all back.",),
             ("{he} promised in writing to pay",)),
        Fact("house", ("house",),
             ("I am trying to save for a house.",),
             ("[I'm|I am] saving for a house",)),
        Fact("laid_off", ("laid off",),
             ("I just got laid off.", "I got laid off last month."),
             ("I just got laid off",)),
    ),
    questions=(
        Fact("money_back", ("money back",),
             ("How do I get my money back?", "Is there any way to get my money back?"),
             ("how do I get my money back?",)),
        Fact("say_no", ("say no",),
             ("How do I say no without ruining things?", "How do I say no to {him}?"),
             ("how do I say no?", "how do I say no to {him}?")),
        Fact("cut_off", ("cut {him} off", "cut off"),
             ("Should I just cut {him} off?", "Is it time to cut {him} off?"),
             ("should I cut {him} off?",)),
        Fact("small_claims", ("small claims",),
             ("Can I take {him} to small claims court?",),
             ("can I take {him} to small claims?",)),
        ADVICE,
    ),
    feelings=("angry", "betrayed", "anxious", "guilty", "confused"),
    titles=DEFAULT_TITLES,
)

LEGAL = Group(
    name="legal",
    subreddits=("legaladvice",),
    relations=("landlord", "boss", "neighbor", "roommate"),
    quantity="amount", quantity_in="event", summary_qty=" #",
    intros=(
        "I {ntag} need some legal advice about my {rel} {otag}.",
        "Location is {state}. I {ntag} am having a problem with my {rel} {otag}.",
        "I {ntag} have a situation with my {rel} {otag} in {state}.",
    ),
    background=(
        "I have always paid on time.",
        "I have never been in a situation like this.",
        "I tried to handle this myself first.",
    ),
    events=(
        Fact("deposit", ("deposit",),
             ("I moved out last month and {he} kept my whole {qty} deposit.",
              "{He} is refusing to return my {qty} security deposit."),
             ("{them} kept my{qty} deposit after {I} moved out", "{I} moved out and {them} kept my{qty} deposit"),
             relations=("landlord",),
             detail=("I left the place cleaner than I found it.",),
             title=("my {rel} kept my deposit",)),
        Fact("wages", ("wages",),
             ("{He} still owes me {qty} in unpaid wages.", "{He} has not paid me {qty} in wages from last month."),
             ("{them} owes {me} unpaid wages{qty| of #}", "{them} [hasn't|has not] paid {me} my wages{qty| (#)}"),
             relations=("boss",),
             detail=("{He} keeps saying the check is coming.",),
             title=("my {rel} owes me wages",)),
        Fact("damage", ("damage", "damaged"),
             ("{His} tree fell on my car and did {qty} of damage.",
              "{His} dog tore up my yard and caused {qty} in damage."),
             ("{them} [won't|will not] pay {me} for the damage{qty| (#)}",
              "{them} damaged my property{qty| (#)} and refuses to pay {me}"),
             relations=("neighbor",),
             detail=("{He} says it is not {his} problem.",),
             title=("my {rel} refuses to pay for damage",)),
        Fact("fee", ("fee",),
             ("{He} is charging me a {qty} fee for a window I did not break.",
              "Now {he} wants a {qty} fee for a broken window that was not my fault."),
             ("{them} is charging {me} a{qty} fee for a window I did not break",
              "{them} wants a{qty} fee from {me} for a broken window"),
             relations=("landlord", "roommate"),
             detail=("The window was cracked when I moved in.",),
             title=("my {rel} is charging me a fee",)),
        Fact("unpaid_rent", ("unpaid rent",),
             ("{He} moved out early and left me with {qty} in unpaid rent.",
              "{He} left without notice and stuck me with {qty} of unpaid rent."),
             ("{them} left {me} with unpaid rent{qty| of #}",
              "{them} moved out and stuck {me} with the unpaid rent{qty| (#)}"),
             relations=("roommate",),
             detail=("{He} will not answer my messages now.",),
             title=("my {rel} left me with unpaid rent",)),
        Fact("fired", ("fired",),
             ("{He} fired me and will not pay my final check of {qty}.",
              "After {he} fired me, {he} kept my last {qty} paycheck."),
             ("{them} fired {me} and [won't|will not] pay my final check{qty| of #}",
              "{them} fired {me} and kept my last paycheck{qty| (#)}"),
             relations=("boss",),
             detail=("{He} never gave me a reason.",),
             title=("my {rel} fired me and kept my pay",)),
        Fact("towed", ("towed",),
             ("{He} had my car towed from my own spot and I paid {qty} to get it back.",
              "{He} had my car towed for no reason and it cost me {qty}."),
             ("{them} had my car towed and it cost {me}{qty| #}", "{I} paid{qty| #} after {them} had my car towed"),
             relations=("landlord",),
             detail=("My spot is listed in my rental papers.",),
             title=("my {rel} had my car towed",)),
    ),
    complications=(
        Fact("no_contract", ("contract",),
             ("We never had a written contract.",),
             ("there was no written contract", "we had no contract")),
        Fact("photos", ("photos",),
             ("I have photos of everything.",),
             ("I have photos",)),
        Fact("police", ("police",),
             ("{He} is threatening to call the police on me.",),
             ("{he} threatened to call the police",)),
        Fact("texts", ("texts",),
             ("I have all of our texts saved.",),
             ("I saved all our texts",)),
        Fact("out_of_state", ("out of state",),
             ("I am moving out of state in a few weeks.",),
             ("[I'm|I am] moving out of state soon",)),
        Fact("cash", ("cash",),
             ("I paid everything in cash.",),
             ("I paid in cash",)),
    ),
    questions=(
        Fact("small_claims", ("small claims",),
             ("Can I take {him} to small claims court?", "Is small claims court worth it here?"),
             ("can I take {him} to small claims?", "is small claims worth it?")),
        Fact("lawyer", ("lawyer",),
             ("Do I need a lawyer?", "Is it worth getting a lawyer?"),
             ("do I need a lawyer?",)),
        Fact("options", ("my options",),
             ("What are my options?", "What are my options here?"),
             ("what are my options?",)),
        Fact("trouble", ("trouble",),
             ("Could I get in trouble for this?",),
             ("could I get in trouble?",)),
    ),
    feelings=("angry", "anxious", "confused", "exhausted"),
    titles=DEFAULT_TITLES,
)

WORK = Group(
    name="work",
    subreddits=("careerguidance",),
    relations=("boss", "coworker"),
    quantity="duration", quantity_in="intro", summary_qty=" of #",
    intros=(
        "I {ntag} have worked with my {rel} {otag} for {qty}.",
        "For {qty} I {ntag} have been on the same team as my {rel} {otag}.",
        "I {ntag} have been at my company for {qty}, and my {rel} {otag} and I work closely.",
    ),
    background=(
        "I really like the work I do.",
        "The company is doing well right now.",
        "I have always gotten good feedback.",
    ),
    events=(
        Fact("took_credit", ("took credit", "taking credit", "take credit"),
             ("{He} took credit for my project in front of the whole team.",
              "{He} keeps taking credit for my work in meetings."),
             ("{I} watched {them}{qty} take credit for my project",
              "{them}{qty} keeps taking credit for the work {I} do"),
             detail=("I stayed late for weeks on that project.",),
             title=("my {rel} took credit for my work",)),
        Fact("promotion", ("promotion",),
             ("{He} gave the promotion I was promised to someone else.",
              "I was told the promotion was mine, but {he} gave it to someone else."),
             ("{them}{qty} promised {me} a promotion and gave it to someone else",
              "{I} was passed over for a promotion by {them}{qty}"),
             detail=("The person who got it started after me.",),
             title=("my {rel} gave my promotion away",)),
        Fact("micromanage", ("micromanages", "micromanaging"),
             ("{He} micromanages every single thing I do.",
              "Lately {he} has been micromanaging everything I touch."),
             ("{them}{qty} micromanages everything {I} do", "{them}{qty} keeps micromanaging {me}"),
             detail=("I used to enjoy this job.",),
             title=("my {rel} micromanages everything",)),
        Fact("yelled", ("yelled", "yelling"),
             ("Yesterday {he} yelled at me in front of a client.",
              "{He} lost it and yelled at me in a meeting with a client."),
             ("{them}{qty} yelled at {me} in front of a client",
              "{I} got yelled at by {them}{qty} in front of a client"),
             detail=("Everyone in the room went quiet.",),
             title=("my {rel} yelled at me in front of a client",)),
        Fact("startup", ("startup",),
             ("{He} is leaving to start a startup and wants me to join {him}.",
              "{He} told me about {his} new startup and asked me to come with {him}."),
             ("{them}{qty} wants {me} to join {his} startup",
              "{them}{qty} is leaving and asked {me} to join {his} startup"),
             detail=("The pay would be lower at first.",),
             title=("my {rel} wants me to join {his} startup",)),
        Fact("job_offer", ("job offer",),
             ("I just got a job offer from another company that pays more.",
              "Another company made me a job offer, and {he} [doesn't|does not] know yet."),
             ("{I} got a better job offer and {them}{qty} [doesn't|does not] know",
              "{I} got a job offer and have not told {them}{qty}"),
             detail=("They want an answer by next week.",),
             title=("got a job offer and my {rel} does not know",)),
    ),
    complications=(
        Fact("first_job", ("first real job",),
             ("This is my first real job out of college.",),
             ("[it's|it is] my first real job",)),
        Fact("mortgage", ("mortgage",),
             ("We just took on a mortgage.",),
             ("we just got a mortgage",)),
        Fact("owner", ("owner",),
             ("{He} is very close with the owner.",),
             ("{he} is close with the owner",)),
        Fact("review", ("review",),
             ("My yearly review is coming up soon.",),
             ("my review is coming up",)),
        Fact("visa", ("visa",),
             ("I am here on a work visa.",),
             ("[I'm|I am] on a work visa",)),
        Fact("small_team", ("small team",),
             ("We are a small team of five people.",),
             ("[we're|we are] a small team",)),
    ),
    questions=(
        Fact("quit", ("quit",),
             ("Should I just quit?", "Is it time to quit?"),
             ("should I quit?",)),
        Fact("report", ("report",),
             ("Should I report {him} to HR?", "Is it worth it to report {him}?"),
             ("should I report {him}?",)),
        Fact("raise", ("raise",),
             ("How do I ask for a raise after this?",),
             ("how do I ask for a raise?",)),
        TALK, ADVICE,
    ),
    feelings=("angry", "anxious", "confused", "exhausted", "hurt"),
    titles=DEFAULT_TITLES,
)

TIFU = Group(
    name="tifu",
    subreddits=("tifu",),
    relations=("boss", "coworker", "mother", "roommate", "girlfriend", "boyfriend", "brother"),
    quantity="amount", quantity_in="event", summary_qty=" #",
    intros=(
        "So I {ntag} was helping my {rel} {otag} with a few things this week.",
        "This happened yesterday with my {rel} {otag}, and I {ntag} still feel awful.",
        "I {ntag} was staying with my {rel} {otag} for the weekend.",
    ),
    background=(
        "I am usually a careful person.",
        "Of course this had to happen to me.",
        "Let me explain how this happened.",
    ),
    events=(
        Fact("laptop", ("laptop",),
             ("I spilled coffee all over {his} laptop and the repair will cost {qty}.",
              "I knocked my coffee onto {his} laptop and now it needs a {qty} repair."),
             ("{I} spilled coffee on {their} laptop{qty| and the repair is #}",
              "{I} ruined {their} laptop with coffee{qty| (#)}"),
             detail=("It had all of {his} work on it.",),
             title=("spilling coffee on my {rel}'s laptop",)),
        Fact("car_dent", ("backed into",),
             ("I backed into {his} car in the lot and the dent will cost {qty} to fix.",
              "While parking I backed into {his} car and left a {qty} dent."),
             ("{I} backed into {their} car{qty| and the fix is #}", "{I} backed into {their} car and left a{qty} dent"),
             detail=("{He} had just bought it.",),
             title=("backing into my {rel}'s car",)),
        Fact("tv", ("tv",),
             ("I knocked {his} new TV off the wall and it will cost {qty} to replace.",
              "I broke {his} TV while cleaning, and a new one is {qty}."),
             ("{I} broke {their} TV{qty| (#)}", "{I} knocked {their} TV off the wall{qty| and it is #}"),
             detail=("{He} had just put it up.",),
             title=("breaking my {rel}'s TV",)),
        Fact("ring", ("ring",),
             ("I lost the {qty} ring {he} asked me to hold for a day.",
              "{He} trusted me with a {qty} ring and I lost it."),
             ("{I} lost {their}{qty} ring", "{I} lost a{qty} ring that belongs to {them}"),
             detail=("I have looked everywhere for it.",),
             title=("losing my {rel}'s ring",)),
        Fact("flood", ("flooded",),
             ("I left the bath running and flooded {his} apartment, and the repairs are {qty}.",
              "I flooded {his} place by leaving the tap on, and fixing it will cost {qty}."),
             ("{I} flooded {their} apartment{qty| and the repairs are #}", "{I} flooded {their} place{qty| (#)}"),
             detail=("I fell asleep watching a movie.",),
             title=("flooding my {rel}'s apartment",)),
        Fact("tickets", ("tickets",),
             ("I bought {qty} worth of concert tickets for {him} on the wrong date.",
              "I spent {qty} on concert tickets for {him} and picked the wrong date."),
             ("{I} bought {them}{qty| #} concert tickets for the wrong date",
              "{I} got the wrong date on concert tickets for {them}{qty| (#)}"),
             detail=("It was {his} favorite band.",),
             title=("buying concert tickets for the wrong date",)),
    ),
    complications=(
        Fact("insurance", ("insurance",),
             ("I do not have insurance for any of this.",),
             ("I have no insurance",)),
        Fact("first_week", ("first week",),
             ("It all happened during my first week.",),
             ("it was my first week",)),
        Fact("something_else", ("something else",),
             ("{He} was already upset with me about something else.",),
             ("{he} was already upset about something else",)),
        Fact("payday", ("payday",),
             ("I am broke until payday.",),
             ("[I'm|I am] broke until payday",)),
        Fact("gift", ("gift",),
             ("It was supposed to be a gift.",),
             ("it was supposed to be a gift",)),
        Fact("sentimental", ("sentimental",),
             ("It had a lot of sentimental value to {him}.",),
             ("it had sentimental value",)),
    ),
    questions=(
        Fact("make_up", ("make it up",),
             ("How do I make it up to {him}?", "What can I do to make it up to {him}?"),
             ("how do I make it up to {him}?",)),
        Fact("truth", ("truth",),
             ("Should I tell {him} the whole truth?", "Do I tell {him} the truth?"),
             ("should I tell {him} the truth?",)),
        Fact("pay_all", ("pay for all",),
             ("Do I have to pay for all of it?", "Is it on me to pay for all of it?"),
             ("do I have to pay for all of it?",)),
        ADVICE,
    ),
    feelings=("embarrassed", "guilty", "anxious"),
    titles=("TIFU by {event_title}", "TIFU by {event_title} {ntag}"),
)

FAMILY = Group(
    name="family",
    subreddits=("offmychest",),
    relations=("mother", "father", "brother", "sister", "best_friend"),
    quantity="duration", quantity_in="event", summary_qty=" for #",
    intros=(
        "I {ntag} need to get something off my chest about my {rel} {otag}.",
        "I {ntag} have never said this out loud about my {rel} {otag}.",
        "This is about my {rel} {otag}, and I {ntag} just need to vent.",
    ),
    background=(
        "We have always had a complicated relationship.",
        "Growing up, things were hard at home.",
        "I love {him}, but this is a lot.",
    ),
    events=(
        Fact("sick", ("doctor",),
             ("{He} has been sick for {qty} and refuses to see a doctor.",
              "For {qty} {he} has been sick, and {he} will not go to a doctor."),
             ("{I} found out {them} has been sick{qty} and [won't|will not] see a doctor",
              "{I} [can't|cannot] get {them} to see a doctor after being sick{qty}"),
             detail=("{He} says {he} is fine.",),
             title=("my {rel} will not see a doctor",)),
        Fact("relapsed", ("relapsed", "sober"),
             ("{He} relapsed after staying sober for {qty}.", "After {qty} sober, {he} relapsed last weekend."),
             ("{them} relapsed{qty| after # sober} and lied to {me}",
              "{I} found out {them} relapsed{qty| after # sober}"),
             detail=("I found out from someone else.",),
             title=("my {rel} relapsed",)),
        Fact("gambling", ("gambling",),
             ("{He} has been gambling for {qty} and keeps asking me to cover for {him}.",
              "I found out {he} has been gambling in secret for {qty}."),
             ("{them} has been gambling{qty} and asks {me} to cover for {him}",
              "{I} found out {them} has been gambling{qty}"),
             detail=("{He} says {he} can stop any time.",),
             title=("my {rel} has been gambling",)),
        Fact("ignoring", ("ignored", "ignoring", "calls"),
             ("{He} has ignored my calls for {qty}.", "For {qty} {he} has been ignoring me completely."),
             ("{them} has ignored {me}{qty}", "{I} keep calling but {them} has been ignoring me{qty}"),
             detail=("I do not know what I did.",),
             title=("my {rel} has been ignoring me",)),
        Fact("couch", ("couch",),
             ("{He} has been living on my couch for {qty} without paying anything.",
              "For {qty} {he} has slept on my couch and never helps out."),
             ("{I} have had {them} living on my couch{qty}",
              "{them} has been on my couch{qty} and never helps {me}"),
             detail=("{He} says {he} is looking for work.",),
             title=("my {rel} will not leave my couch",)),
        Fact("never_proud", ("proud",),
             ("For {qty} I have worked hard to make {him} proud, and {he} has never once said it.",
              "I have spent {qty} trying to make {him} proud."),
             ("{I} have tried{qty} to make {them} proud and {he} never says it",
              "{I} have worked hard{qty} and {them} has never said {he} is proud"),
             detail=("{He} always finds something to criticize.",),
             title=("my {rel} has never been proud of me",)),
    ),
    complications=(
        Fact("only_family", ("only family", "no other family"),
             ("{He} is the only family I have left.", "Besides {him} I have no other family."),
             ("{he} is the only family I have", "{he} is my only family")),
        Fact("therapy", ("therapy",),
             ("I just started therapy for myself.", "I have been in therapy because of all this."),
             ("I just started therapy", "[I'm|I am] in therapy")),
        Fact("holidays", ("holidays",),
             ("The holidays are coming up and everyone expects me to be nice.",),
             ("the holidays are coming up",)),
        Fact("take_care", ("take care", "takes care"),
             ("I am the one who has to take care of {him}.",),
             ("I take care of {him}",)),
        Fact("move_in", ("move in",),
             ("Now {he} wants to move in with me.",),
             ("{he} wants to move in with me",)),
    ),
    questions=(
        Fact("wrong", ("am i wrong",),
             ("Am I wrong for feeling this way?", "Am I wrong to be upset?"),
             ("am I wrong for feeling this way?", "am I wrong?")),
        Fact("better", ("get better",),
             ("Does it ever get better?", "Will this ever get better?"),
             ("does it get better?", "will it get better?")),
        Fact("say_something", ("say something",),
             ("Should I say something to {him}?", "Should I finally say something?"),
             ("should I say something?", "should I say something to {him}?")),
        TALK, ADVICE,
    ),
    feelings=("hurt", "angry", "exhausted", "guilty", "anxious", "betrayed"),
    titles=DEFAULT_TITLES,
)

GROUPS: tuple[Group, ...] = (ROMANCE, KIDS, MONEY, LEGAL, WORK, TIFU, FAMILY)
GROUP_OF: dict[str, Group] = {sub: g for g in GROUPS for sub in g.subreddits}
GROUP_BY_NAME: dict[str, Group] = {g.name: g for g in GROUPS}
SUBREDDITS: tuple[str, ...] = tuple(sub for g in GROUPS for sub in g.subreddits)
# dating_advice is about dating, not marriage.
SUBREDDIT_RELATIONS = {"dating_advice": ("boyfriend", "girlfriend")}

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

# The judge's weights of the important facts (see the module docstring).
FACT_WEIGHTS = {"event": 3.0, "relation": 1.0, "complication": 1.5, "question": 1.0, "feeling": 1.0,
                "quantity": 1.0, "narrator": 0.5, "other_age": 0.5}
# Facts a reference may leave out, with the probability that it keeps each.
LESSER_FACTS = ("narrator", "other_age", "quantity", "complication", "feeling", "question")
KEEP_PROB = {"narrator": 0.55, "other_age": 0.55, "quantity": 0.6, "complication": 0.65, "feeling": 0.55,
             "question": 0.6}
DEFAULT_WEIGHTS = {"coverage": 1.0, "events": 1.0, "feelings": 1.0, "question": 1.0, "details": 1.0,
                   "brevity": 1.0, "accuracy": 1.0, "formality": 0.0}
ERROR_PENALTY = 2.0  # per wrong or invented fact; larger than any single fact's weight but the event's
BREVITY_COST = 0.04  # per word: breaks ties in favor of the shorter summary
MAX_TOKENS = 48  # Stiennon's length budget
TOKENS_PER_WORD = 1.3  # token estimate per whitespace word
LENGTH_PENALTY = 0.15  # per estimated token past MAX_TOKENS
REPEAT_PENALTY = 0.5  # per repeated word trigram ...
MAX_REPEATS = 6  # ... counting at most this many (loops are also long, and pay for length)
SALAD_LOW, SALAD_HIGH = 0.5, 0.85  # known-bigram fractions where fluency goes from 0 to 1
SALAD_PENALTY = 8.0
FORMALITY_BONUS = 1.0
EMPTY_SCORE = -10.0

MIN_POST_WORDS = 60  # optional sentences are kept when a post would be shorter
SPLITS = ("train", "valid", "test", "corpus")  # disjoint streams; "corpus" feeds pretraining
QUERY_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"

# ======================================================================================
# Realizing templates
# ======================================================================================
_PAIR = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")
_QTY_SLOT = re.compile(r"\{qty(?:\|([^}]*))?\}")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve")
AMOUNTS = (300, 400, 500, 600, 800, 900, 1000, 1200, 1500, 1800, 2000, 2500, 3000, 3500, 4000, 5000, 6000,
           7500, 8000, 10000, 12000, 15000)


def _registered(text: str, casual: bool, rng: random.Random | None = None) -> str:
    """Resolve every [casual|formal] pair. Summaries (rng None) use their register's side
    only; casual posts (rng given) mix in the formal side 20% of the time, as people do."""
    def pick(m: re.Match) -> str:
        use_casual = casual and (rng is None or rng.random() < 0.8)
        return m.group(1) if use_casual else m.group(2)

    return _PAIR.sub(pick, text)


def _pronouns(gender: str) -> dict[str, str]:
    he, him, his = ("he", "him", "his") if gender == "M" else ("she", "her", "her")
    return {"he": he, "him": him, "his": his, "He": he.capitalize(), "His": his.capitalize()}


def _tag(age: int, gender: str) -> str:
    return f"({age}{gender})"


def _quantity_form(q: dict, casual: bool, rng: random.Random) -> dict:
    """How one post writes its quantity: '3 years' / '3 yrs' / 'three years', or
    '$2,000' / '$2k' / '2k'. Drawn once per post and kept in its facts: the reference
    TL;DR copies the post's form, as people copy the numbers they read."""
    v = q["value"]
    if q["kind"] == "amount":
        short = casual and v >= 1000 and v % 500 == 0
        return {"k": ("k" if rng.random() < 0.3 else "$k") if short else None}
    return {"yrs": casual and q["unit"] == "year" and rng.random() < 0.6,
            "word": v <= 12 and rng.random() < 0.25}


def _quantity_text(q: dict, form: dict) -> str:
    """The quantity `q` written in `form` (see _quantity_form); a form that does not fit
    the value (a word for 13, '2k' for $750) falls back to the plain form."""
    v = q["value"]
    if q["kind"] == "amount":
        if form.get("k") and v >= 1000 and v % 500 == 0:
            return ("$" if form["k"] == "$k" else "") + f"{v / 1000:g}k"
        return f"${v:,}"
    unit = q["unit"] + ("" if v == 1 else "s")
    if form.get("yrs") and q["unit"] == "year":
        unit = "yr" if v == 1 else "yrs"
    number = _NUMBER_WORDS[v] if form.get("word") and v <= 12 else str(v)
    return f"{number} {unit}"


def _post_slots(facts: dict) -> dict[str, str]:
    """Slots shared by every sentence of one post (pronouns, tags); the relation word and
    the quantity are added by the caller because their form depends on the register."""
    n, o = facts["narrator"], facts["other"]
    return {**_pronouns(o["gender"]), "ntag": _tag(n["age"], n["gender"]), "otag": _tag(o["age"], o["gender"]),
            "nage": str(n["age"]), "ngw": "woman" if n["gender"] == "F" else "guy", "name": o["name"] or "",
            "state": facts["state"]}


def _fill(template: str, slots: dict[str, str], casual: bool, rng: random.Random | None = None) -> str:
    return _registered(template, casual, rng).format_map(slots)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ======================================================================================
# Posts
# ======================================================================================
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


def _fact(group: Group, kind: str, name: str) -> Fact:
    if kind == "feeling":
        return FEELING_FACTS[name]
    facts = {"event": group.events, "complication": group.complications, "question": group.questions}[kind]
    for f in facts:
        if f.name == name:
            return f
    raise SyntheticWorldError(f"unknown {kind} {name!r} for group {group.name!r}")


def _write_post(facts: dict, rng: random.Random) -> tuple[str, str, list[int]]:
    """Title and body for the facts; returns (title, body, distractor indices)."""
    group = GROUP_BY_NAME[facts["group"]]
    casual = facts["register"] == "casual"
    slots = _post_slots(facts)
    slots["rel"] = _registered(RELATIONS[facts["other"]["relation"]][1], casual, rng)  # one form per post
    facts["quantity"]["form"] = _quantity_form(facts["quantity"], casual, rng)
    slots["qty"] = _quantity_text(facts["quantity"], facts["quantity"]["form"])
    event = _fact(group, "event", facts["event"])

    def say(template: str) -> str:
        return _fill(template, slots, casual, rng)

    # (sentence, kept) pairs: optional sentences are left out by chance, unless the post
    # would be shorter than MIN_POST_WORDS without them.
    opening = [(say(rng.choice(group.intros)), True)]
    if facts["other"]["name"]:
        opening.append((say(rng.choice(NAME_SENTENCES)), True))
    opening.append((say(rng.choice(group.background)), rng.random() < 0.7))
    middle = [(say(rng.choice(event.post)), True), (say(rng.choice(event.detail)), rng.random() < 0.75)]
    rest = [(say(rng.choice(_fact(group, "complication", facts["complication"]).post)), True),
            (say(rng.choice(FEELING_FACTS[facts["feeling"]].post)), True)]
    rng.shuffle(rest)
    middle += rest
    distractors = rng.sample(range(len(DISTRACTORS)), rng.randint(1, 4))
    for d in distractors:  # anywhere after the intro
        middle.insert(rng.randint(0, len(middle)), (say(DISTRACTORS[d]), True))
    ending = [(say(rng.choice(_fact(group, "question", facts["question"]).post)), True),
              (say(rng.choice(CLOSERS)), rng.random() < 0.6)]
    sentences = opening + middle + ending
    body = " ".join(text for text, kept in sentences if kept)
    if len(body.split()) < MIN_POST_WORDS:
        body = " ".join(text for text, _ in sentences)

    question = _fill(rng.choice(_fact(group, "question", facts["question"]).summary), slots, casual, rng)
    title_slots = dict(slots, event_title=say(rng.choice(event.title)), question=question)
    title = _cap(_fill(rng.choice(group.titles), title_slots, casual, rng))
    return title, body, distractors


def _reference_plan(rng: random.Random, register: str | None = None) -> dict:
    """How a human writes this post's TL;DR: which lesser facts it keeps, which
    paraphrase of each clause, the order of the middle clauses and how they are joined."""
    keep = {f: rng.random() < KEEP_PROB[f] for f in LESSER_FACTS}
    while sum(keep.values()) < 2:  # even a lazy TL;DR says a little more than the event
        keep[rng.choice(LESSER_FACTS)] = True
    return {"register": register or ("casual" if rng.random() < 0.5 else "formal"), "keep": keep,
            **_style(rng)}


def _writer_register(facts: dict, rng: random.Random) -> str:
    """A TL;DR writer is usually, not always, in the post's register."""
    same = rng.random() < 0.6
    return facts["register"] if same else ("formal" if facts["register"] == "casual" else "casual")


def _style(rng: random.Random) -> dict:
    """The wording choices of a TL;DR plan (everything but the register and the facts kept)."""
    order = ["complication", "feeling"]
    rng.shuffle(order)
    return {"variants": {k: rng.randrange(1000) for k in ("event", "complication", "feeling", "question")},
            "order": order, "join": rng.randrange(3), "lowercase": rng.random() < 0.5}


def make_post(index: int, split: str = "train", seed: int = 0) -> Post:
    """Post `index` of `split` in the world of `seed`. Splits are disjoint streams."""
    post_id = _post_id(index, split, seed)
    rng = random.Random(f"plus.synthetic/{post_id}")
    facts = _sample_facts(rng)
    title, body, distractors = _write_post(facts, rng)
    facts["distractors"] = distractors
    facts["reference"] = _reference_plan(rng, _writer_register(facts, rng))
    summary = _render_summary(facts, facts["reference"])
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


# ======================================================================================
# Reference TL;DRs
# ======================================================================================
def _summary_clauses(facts: dict, plan: dict) -> list[str]:
    """The clauses of a TL;DR: the event (with who did it) first, then the kept
    complication and feeling in the plan's order, then the question."""
    group = GROUP_BY_NAME[facts["group"]]
    casual = plan["register"] == "casual"
    keep, variants = plan["keep"], plan["variants"]
    n, o = facts["narrator"], facts["other"]
    rel = _registered(RELATIONS[o["relation"]][1], casual)
    otag = " " + _tag(o["age"], o["gender"]) if keep["other_age"] else ""
    ntag = " " + _tag(n["age"], n["gender"]) if keep["narrator"] else ""
    qty = _quantity_text(facts["quantity"], facts["quantity"]["form"])  # the post's own form
    slots = {**_pronouns(o["gender"]), "I": "I" + ntag, "me": "me" + ntag, "them": f"my {rel}{otag}",
             "their": f"my {rel}'s{otag}"}

    def qty_slot(m: re.Match) -> str:
        return (m.group(1) or group.summary_qty).replace("#", qty) if keep["quantity"] else ""

    def clause(kind: str) -> str:
        paraphrases = _fact(group, kind, facts[kind]).summary
        template = paraphrases[variants[kind] % len(paraphrases)]
        return _fill(_QTY_SLOT.sub(qty_slot, template), slots, casual)

    clauses = [clause("event")] + [clause(k) for k in plan["order"] if keep[k]]
    if keep["question"]:
        clauses.append(clause("question"))
    return clauses


def _join(clauses: list[str], plan: dict) -> str:
    """Join clauses as sentences (join 0), as one sentence plus the question (join 1), or
    as a casual run-on (join 2). Casual writers may skip capitals."""
    question = clauses[-1] if clauses[-1].endswith("?") else None
    body = clauses[:-1] if question else clauses
    cap = (lambda s: s) if plan["register"] == "casual" and plan["lowercase"] else _cap
    if plan["join"] == 0 or len(body) == 1:
        sentences = [cap(c) + "." for c in body]
    elif plan["join"] == 1:
        sentences = [cap(", ".join(body[:-1]) + " and " + body[-1]) + "."]
    else:
        sentences = [cap(", ".join(body)) + ("," if question else ".")]
    if question:
        sentences.append(cap(question) if plan["join"] != 2 else question)
    return " ".join(sentences)


def _render_summary(facts: dict, plan: dict) -> str:
    return _join(_summary_clauses(facts, plan), plan)


def other_references(post: Post, n: int) -> list[str]:
    """n more human TL;DRs of the post, each by another writer (as the post's own: a plan
    of which lesser facts to keep and how to word them; the register usually the post's),
    all different from the post's reference and from each other. For SFT on several
    references per post (`plus.data.load_sft_examples`): the prompt is computed once for
    all of them, so each extra reference costs only its own tokens."""
    if not isinstance(n, int) or n < 0:
        raise SyntheticWorldError(f"number of references must be a non-negative integer, got {n!r}")
    rng = random.Random(f"plus.synthetic/references/{post.id}")
    seen, out = {post.summary}, []
    for _ in range(20 * n):
        if len(out) == n:
            break
        text = _render_summary(post.facts, _reference_plan(rng, _writer_register(post.facts, rng)))
        if text not in seen:
            seen.add(text)
            out.append(text)
    if len(out) < n:
        raise SyntheticWorldError(f"{post.id}: only {len(out)} distinct references in {20 * n} draws, asked for {n}")
    return out


def complete_summary(post: Post) -> str:
    """The post's reference rewritten to keep every important fact (same wording)."""
    plan = dict(post.facts["reference"], keep={f: True for f in LESSER_FACTS})
    return _render_summary(post.facts, plan)


# ======================================================================================
# The gold judge
# ======================================================================================
_TOKEN = re.compile(
    r"(?P<yo>\b\d{1,2}[ -]years?[ -]old[ ]+(?:woman|girl|lady|man|guy)\b)"
    r"|(?P<tag>\(\s*\d{1,2}\s*[mf]\s*\)|\b\d{1,2}[mf]\b)"
    r"|(?P<money>\$\s?\d[\d,]*(?:\.\d+)?\s?k?\b|\b\d+(?:\.\d+)?k\b)"
    r"|(?P<dur>\b(?:\d+|" + "|".join(_NUMBER_WORDS) + r")\s*(?:years?|yrs?|months?|weeks?|days?)\b)"
    r"|(?P<num>\b\d[\d,]*(?:\.\d+)?\b)"
    r"|(?P<word>[a-z]+(?:'[a-z]+)?)"
    r"|(?P<punct>[^\sa-z0-9]+)"
)
_DUR_PARTS = re.compile(r"(\d+|" + "|".join(_NUMBER_WORDS) + r")\s*([ymwd])")
_UNIT = {"y": "year", "m": "month", "w": "week", "d": "day"}
_NAMES_LOWER = {n.lower() for names in NAMES.values() for n in names}
# relation -> its forms as word tuples, main relations and the others
_RELATION_FORMS: dict[str, tuple[tuple[str, ...], ...]] = {
    **{r: tuple(tuple(form.split()) for form in _PAIR.sub(lambda m: m.group(1) + "|" + m.group(2), s).split("|"))
       for r, (_, s) in RELATIONS.items()},
    **{r: tuple(tuple(f.split()) for f in forms) for r, forms in OTHER_RELATION_WORDS.items()},
}
_FORMS_LONGEST_FIRST = sorted(((" ".join(f), r) for r, forms in _RELATION_FORMS.items() for f in forms),
                              key=lambda x: -len(x[0].split()))
_RELATION_WORDS = {w for forms in _RELATION_FORMS.values() for form in forms for w in form}
_NARRATOR_WORDS = {"i", "me", "i'm", "im", "myself"}
_TAG_SKIP = {"my", "a", "an", "the", "and", "so", "'s", "am", "is", "was"}


def _mentioned_relations(text: str) -> set[str]:
    """Relations named in a phrase text, longest forms first so that 'best friend' is
    the best friend and not also a friend."""
    found = set()
    for words, relation in _FORMS_LONGEST_FIRST:
        phrase = f" {words} "
        if phrase in text:
            found.add(relation)
            text = text.replace(phrase, " _ ")
    return found


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _tokenize(text: str) -> list[tuple[str, object]]:
    """Typed tokens: ("w", word), ("tag", (age, gender)), ("money", dollars),
    ("dur", (n, unit)), ("num", value), ("|", None) for punctuation. Possessives of
    relations and names are split off ("boss's" -> "boss", "'s")."""
    tokens: list[tuple[str, object]] = []
    for m in _TOKEN.finditer(text.lower().replace("\u2019", "'")):
        kind, s = m.lastgroup, m.group()
        if kind == "yo":
            age = int(re.match(r"\d+", s).group())
            tokens.append(("tag", (age, "F" if re.search(r"woman|girl|lady", s) else "M")))
        elif kind == "tag":
            digits = re.search(r"(\d+)\s*([mf])", s)
            tokens.append(("tag", (int(digits.group(1)), digits.group(2).upper())))
        elif kind == "money":
            value = _number(re.search(r"\d[\d,]*(?:\.\d+)?", s).group())
            tokens.append(("money", value * 1000 if s.rstrip().endswith("k") else value))
        elif kind == "dur":
            number, unit = _DUR_PARTS.match(s).groups()
            value = int(number) if number.isdigit() else _NUMBER_WORDS.index(number)
            tokens.append(("dur", (value, _UNIT[unit])))
        elif kind == "num":
            tokens.append(("num", _number(s)))
        elif kind == "word":
            if s.endswith("'s") and (s[:-2] in _RELATION_WORDS or s[:-2] in _NAMES_LOWER):
                tokens += [("w", s[:-2]), ("w", "'s")]
            else:
                tokens.append(("w", s))
        elif not tokens or tokens[-1][0] != "|":
            tokens.append(("|", None))
    return tokens


def _classes(tokens: list[tuple[str, object]]) -> list[str]:
    """Tokens as the judge's language model sees them: words, with names, numbers and
    tags replaced by their class and punctuation by '|'."""
    out = []
    for kind, value in tokens:
        if kind == "w":
            out.append("<name>" if value in _NAMES_LOWER else value)
        else:
            out.append({"|": "|", "tag": "<tag>", "money": "<money>", "dur": "<dur>", "num": "<num>"}[kind])
    return out


def _phrase_text(tokens: list[tuple[str, object]]) -> str:
    """' word word | <money> word ' for phrase matching; tags are left out so that
    'paid me (24F) back' still says 'paid me back'."""
    return " " + " ".join(c for c, (kind, _) in zip(_classes(tokens), tokens) if kind != "tag") + " "


def _expand_key(key: str) -> list[str]:
    """Key phrases may name the other party's pronoun ('cut {him} off')."""
    if "{" not in key:
        return [key]
    return [key.format_map(_pronouns(g)) for g in "MF"]


def _all_facts() -> list[tuple[str, str, str]]:
    """(kind, name, key phrase) for every categorical fact of the world."""
    out = set()
    for g in GROUPS:
        for kind, facts in (("event", g.events), ("complication", g.complications), ("question", g.questions)):
            for f in facts:
                out.update((kind, f.name, k) for key in f.keys for k in _expand_key(key))
    for f in FEELING_FACTS.values():
        out.update(("feeling", f.name, k) for k in f.keys)
    return sorted(out)


_FACT_KEYS = _all_facts()


def _table_strings() -> list[str]:
    """Every string the world writes from (before slots are filled)."""
    strings = [*DISTRACTORS, *CLOSERS, *NAME_SENTENCES, *FILLERS, *INVENTED.values(), *STATES,
               *(s for _, s in RELATIONS.values()), *(f for fs in OTHER_RELATION_WORDS.values() for f in fs),
               "woman guy my of for i me"]
    for g in GROUPS:
        strings += [*g.intros, *g.background, *g.titles, g.summary_qty]
        for facts in (g.events, g.complications, g.questions):
            for f in facts:
                strings += [*f.post, *f.summary, *f.detail, *f.title]
    for f in FEELING_FACTS.values():
        strings += [*f.post, *f.summary]
    return strings


def _markers() -> tuple[set[str], set[str]]:
    """The casual and formal sides of every register pair, as phrases."""
    casual, formal = set(), set()
    for s in _table_strings():
        for m in _PAIR.finditer(s):
            casual.add(_phrase_text(_tokenize(m.group(1))).strip())
            formal.add(_phrase_text(_tokenize(m.group(2))).strip())
    return casual - formal, formal - casual


CASUAL_MARKERS, FORMAL_MARKERS = _markers()
# Numbers have registers too: "$2k", "3 yrs" against "$2,000", "3 years".
_CASUAL_NUMBERS = re.compile(r"\d(?:\.\d+)?k\b|\d\s*yrs?\b")
_FORMAL_NUMBERS = re.compile(r"\d,\d{3}\b|\d\s*years?\b")


@functools.lru_cache(maxsize=1)
def _language() -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The world's vocabulary (every word of every table string, pronouns and unit words
    included) and its known bigrams (those of a fixed sample of 1500 posts with their
    references, complete summaries and mild perturbations). Built once per process."""
    vocab = {"he", "she", "him", "her", "his", "hers", "'s", "<name>", "<tag>", "<money>", "<dur>", "<num>", "|"}
    for s in _table_strings():
        s = _PAIR.sub(lambda m: m.group(1) + " " + m.group(2), re.sub(r"\{[^}]*\}", " ", s))
        vocab.update(c for c in _classes(_tokenize(s)))
    bigrams = set()
    rng = random.Random("plus.synthetic/language")
    for i in range(1500):
        post = make_post(i, "corpus", seed=-1)
        texts = [post.title, post.post, post.summary, complete_summary(post)]
        texts += [perturb(post, kind, rng) for kind in ("paraphrase", "drop_fact", "filler", "invent_fact", "reorder")]
        for text in texts:
            classes = ["|"] + _classes(_tokenize(text)) + ["|"]
            bigrams.update(zip(classes, classes[1:]))
    return frozenset(vocab), frozenset(bigrams)


@functools.lru_cache(maxsize=4096)
def _source(title: str, body: str) -> dict:
    """What the post itself mentions: tags, numbers, relations, names, fact keys."""
    tokens = _tokenize(title + " . " + body)
    text = _phrase_text(tokens)
    return {
        "text": text,
        "tags": {v for k, v in tokens if k == "tag"},
        "durs": {v for k, v in tokens if k == "dur"},
        "money": {v for k, v in tokens if k == "money"},
        "numbers": ({v for k, v in tokens if k in ("num", "money")}
                    | {float(v[0]) for k, v in tokens if k in ("tag", "dur")}),
        "relations": _mentioned_relations(text),
        "names": {v for k, v in tokens if k == "w" and v in _NAMES_LOWER},
    }


def _tag_owner(tokens: list[tuple[str, object]], i: int, main_relation: str, name: str | None) -> str:
    """Whose tag is tokens[i]: 'narrator', 'other' (the main relation or its name), another
    relation's name, or '' when the words before it do not say."""
    j = i - 1
    while j >= 0 and tokens[j][0] == "w" and tokens[j][1] in _TAG_SKIP:
        j -= 1
    if j < 0 or tokens[j][0] != "w":
        return ""
    word = tokens[j][1]
    if word in _NARRATOR_WORDS:
        return "narrator"
    if name and word == name.lower():
        return "other"
    for relation, forms in _RELATION_FORMS.items():
        for form in forms:
            if tuple(v for _, v in tokens[max(0, j - len(form) + 1): j + 1]) == form:
                return "other" if relation == main_relation else relation
    return ""


def _resolve_weights(weights: dict | None) -> dict[str, float]:
    if weights is None:
        return DEFAULT_WEIGHTS
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise SyntheticWorldError(f"unknown gold-judge weight(s) {sorted(unknown)} "
                                  f"(valid: {', '.join(DEFAULT_WEIGHTS)})")
    return {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.items()}}


def gold_breakdown(post: Post, summary: str, weights: dict | None = None) -> dict:
    """Every term of the gold score (see the module docstring), and the score itself."""
    w = _resolve_weights(weights)
    tokens = _tokenize(summary.strip())
    if not any(kind != "|" for kind, _ in tokens):
        return {"score": EMPTY_SCORE, "empty": True, "terms": {"empty": EMPTY_SCORE},
                "covered": {f: False for f in FACT_WEIGHTS}, "error_list": [], "n_words": 0, "fluency": 0.0}
    facts = post.facts
    narrator = (facts["narrator"]["age"], facts["narrator"]["gender"])
    other = (facts["other"]["age"], facts["other"]["gender"])
    src = _source(post.title, post.post)
    text = _phrase_text(tokens)
    errors: list[str] = []

    # Age tags: covered when the right tag is attached to the right person (or to no one).
    covered = {"narrator": False, "other_age": False}
    for i, (kind, value) in enumerate(tokens):
        if kind != "tag":
            continue
        owner = _tag_owner(tokens, i, facts["other"]["relation"], facts["other"]["name"])
        if owner in ("narrator", "") and value == narrator:
            covered["narrator"] = True
        elif owner in ("other", "") and value == other:
            covered["other_age"] = True
        elif owner in ("narrator", "other") or value not in src["tags"]:
            errors.append(f"tag {value[0]}{value[1]} ({owner or 'unattached'})")

    # Numbers: each must be in the post; the latent quantity must be among them.
    q = facts["quantity"]
    durs = [v for k, v in tokens if k == "dur"]
    money = [v for k, v in tokens if k == "money"]
    nums = [v for k, v in tokens if k == "num"]
    errors += [f"duration {n} {u}" for n, u in durs if (n, u) not in src["durs"]]
    errors += [f"amount {v:g}" for v in money if v not in src["money"] and v not in src["numbers"]]
    errors += [f"number {v:g}" for v in nums if v not in src["numbers"]]
    if q["kind"] == "duration":
        covered["quantity"] = (q["value"], q["unit"]) in durs
    else:
        covered["quantity"] = q["value"] in money or q["value"] in nums

    # Relations and names the post never mentions.
    mentioned = _mentioned_relations(text)
    covered["relation"] = facts["other"]["relation"] in mentioned
    errors += [f"relation {r}" for r in mentioned - src["relations"]]
    errors += [f"name {v}" for v in {v for k, v in tokens if k == "w" and v in _NAMES_LOWER} - src["names"]]

    # Categorical facts: the post's own are coverage; anyone else's is an invention.
    for kind in ("event", "complication", "feeling", "question"):
        covered[kind] = False
    for kind, name, key in _FACT_KEYS:
        if f" {key} " in text:
            if facts[kind] == name:
                covered[kind] = True
            elif f" {key} " not in src["text"]:
                errors.append(f"{kind} {name}")
    errors = sorted(set(errors))

    mult = {"event": w["events"], "complication": w["events"], "relation": 1.0, "feeling": w["feelings"],
            "question": w["question"], "quantity": w["details"], "narrator": w["details"], "other_age": w["details"]}
    coverage = w["coverage"] * sum(FACT_WEIGHTS[f] * mult[f] for f in FACT_WEIGHTS if covered[f])

    # Fluency: is this the world's language?
    vocab, known_bigrams = _language()
    classes = _classes(tokens)
    words = [c for c in classes if c != "|"]
    oov = sum(c not in vocab for c in words) / len(words)
    seq = ["|"] + classes + ["|"]
    pairs = list(zip(seq, seq[1:]))
    known = sum(p in known_bigrams for p in pairs) / len(pairs)
    fluency = min(1.0, max(0.0, (known - SALAD_LOW) / (SALAD_HIGH - SALAD_LOW))) * (1.0 - oov)

    trigrams = list(zip(words, words[1:], words[2:]))
    repeats = len(trigrams) - len(set(trigrams))
    n_words = len(summary.split())
    over = max(0.0, TOKENS_PER_WORD * n_words - MAX_TOKENS)

    lowered = summary.lower()
    n_casual = sum(text.count(f" {m} ") for m in CASUAL_MARKERS) + len(_CASUAL_NUMBERS.findall(lowered))
    n_formal = sum(text.count(f" {m} ") for m in FORMAL_MARKERS) + len(_FORMAL_NUMBERS.findall(lowered))
    style = (n_formal - n_casual) / (n_formal + n_casual) if n_formal + n_casual else 0.0

    terms = {
        "coverage": fluency * coverage,
        "errors": -ERROR_PENALTY * w["accuracy"] * len(errors),
        "brevity": -BREVITY_COST * w["brevity"] * n_words,
        "length": -LENGTH_PENALTY * over,
        "repetition": -REPEAT_PENALTY * min(repeats, MAX_REPEATS),
        "salad": -SALAD_PENALTY * (1.0 - fluency),
        "formality": FORMALITY_BONUS * w["formality"] * style,
    }
    return {"score": sum(terms.values()), "empty": False, "terms": terms, "covered": covered,
            "error_list": errors, "n_words": n_words, "fluency": fluency, "known_bigrams": known, "oov": oov,
            "repeats": repeats, "style": style}


def gold_score(post: Post, summary: str, weights: dict | None = None) -> float:
    """The gold judge's score of `summary` for `post`: about 0-10 for real summaries,
    negative for garbage, EMPTY_SCORE for nothing. See the module docstring."""
    return gold_breakdown(post, summary, weights)["score"]


def error_analysis(posts: list[Post], summaries: list[str], weights: dict | None = None) -> dict:
    """Where a policy's points go, over many posts: the share of summaries that state each
    fact correctly ("covered", in %), and the wrong or invented facts per 100 summaries by
    kind ("errors": tag, duration, amount, number, relation, name, event, complication,
    feeling, question), from gold_breakdown. eval.py prints it next to the references'."""
    n = len(summaries)
    if n == 0 or n != len(posts):
        raise SyntheticWorldError(f"error_analysis needs one summary per post, got {n} for {len(posts)} posts")
    covered = {f: 0.0 for f in FACT_WEIGHTS}
    errors: dict[str, float] = {}
    for post, summary in zip(posts, summaries):
        b = gold_breakdown(post, summary, weights)
        for f in covered:
            covered[f] += 100.0 * b["covered"][f] / n
        for e in b["error_list"]:
            kind = e.split()[0]
            errors[kind] = errors.get(kind, 0.0) + 100.0 / n
    return {"covered": covered, "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1]))}


def gold_preference(post: Post, a: str, b: str, weights: dict | None = None) -> float:
    """1.0 if the gold judge prefers a, 0.0 if b, 0.5 for a tie."""
    sa, sb = gold_score(post, a, weights), gold_score(post, b, weights)
    return 0.5 if abs(sa - sb) < 1e-9 else float(sa > sb)


# ======================================================================================
# Perturbations: summaries of varying quality around the reference
# ======================================================================================
PERTURBATIONS: tuple[str, ...] = ("drop_fact", "add_fact", "swap_value", "invent_fact", "paraphrase", "reorder",
                                  "filler", "truncate", "repeat", "salad", "empty")


def _stated_facts(plan: dict) -> list[str]:
    """The facts a summary written with `plan` states, each of which a swap can get wrong."""
    return [f for f in LESSER_FACTS if plan["keep"][f]] + ["relation", "event"]


def _swap(facts: dict, plan: dict, mentioned: set[str], rng: random.Random, what: str | None = None) -> dict:
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
    mentioned = _source(post.title, post.post)["relations"]
    swapped = [(what, _render_summary(_swap(facts, plan, mentioned, rng, what), plan)) for what in _stated_facts(plan)]
    return [(what, text) for what, text in swapped if text != post.summary]


def _invented_clause(post: Post, rng: random.Random) -> str:
    """A clause stating something the post does not say."""
    facts = post.facts
    group = GROUP_BY_NAME[facts["group"]]
    casual = facts["reference"]["register"] == "casual"
    src = _source(post.title, post.post)
    kind = rng.choice(("name", "relation", "number", "complication"))
    o = facts["other"]
    if kind == "name":
        name = rng.choice([n for n in NAMES[o["gender"]] if n.lower() not in src["names"]])
        return _fill(INVENTED["name"], {**_pronouns(o["gender"]), "name": name}, casual)
    if kind == "relation":
        rel = rng.choice([r for r in RELATIONS if r not in src["relations"]])
        return _fill(INVENTED["relation"], {"rel": _registered(RELATIONS[rel][1], casual)}, casual)
    if kind == "number":
        return _fill(INVENTED["number"], {"n": str(rng.randint(2, 20))}, casual)
    other = rng.choice([c for c in group.complications if c.name != facts["complication"]])
    return _fill(rng.choice(other.summary), _pronouns(o["gender"]), casual)


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
        return _render_summary(facts, dict(plan, keep=dict(plan["keep"], **{rng.choice(kept): False})))
    if kind == "add_fact" and missing:
        return _render_summary(facts, dict(plan, keep=dict(plan["keep"], **{rng.choice(missing): True})))
    if kind in ("paraphrase", "add_fact"):  # add_fact on a complete reference: say it another way
        return _render_summary(facts, dict(plan, **_style(rng)))
    if kind == "swap_value":
        return _render_summary(_swap(facts, plan, _source(post.title, post.post)["relations"], rng), plan)
    if kind == "truncate":
        words = post.summary.split()
        return " ".join(words[: max(1, int(len(words) * rng.uniform(0.35, 0.75)))])
    if kind == "salad":
        words = post.summary.split()
        while len(set(words)) > 1 and " ".join(words) == post.summary:
            rng.shuffle(words)
        return " ".join(words)
    clauses = _summary_clauses(facts, plan)
    casual = plan["register"] == "casual"
    if kind == "reorder":
        if len(clauses) < 2:
            return _render_summary(facts, dict(plan, **_style(rng)))
        original = list(clauses)
        while clauses == original:
            rng.shuffle(clauses)
    elif kind == "repeat":
        i = rng.randrange(len(clauses))
        clauses[i + 1: i + 1] = [clauses[i]] * rng.randint(1, 2)
    elif kind == "filler":
        pool = [_registered(f, casual) for f in FILLERS]
        pool += [_fill(DISTRACTORS[d], {}, casual).rstrip(".") for d in facts["distractors"]]
        for extra in rng.sample(pool, rng.randint(1, 3)):
            clauses.insert(rng.randint(0, len(clauses) - (clauses[-1].endswith("?"))), extra)
    elif kind == "invent_fact":
        clauses.insert(rng.randint(1, len(clauses) - (clauses[-1].endswith("?"))), _invented_clause(post, rng))
    if not clauses[-1].endswith("?"):  # a moved question reads as a statement mid-text
        clauses = [c.rstrip("?") for c in clauses]
    return _join(clauses, plan)


# ======================================================================================
# Simulated labelers
# ======================================================================================
# Calibrated with calibrate_labeler_tau() (python -m plus.synthetic --calibrate): the tau
# at which the expected agreement with the gold choice over make_comparisons' pairs of
# World(0) "train" (4000 pairs) is 75%.
LABELER_TAU: float = 1.24


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class Labeler:
    """A noisy Bradley-Terry labeler: prefers a over b with probability
    sigmoid((gold(a) - gold(b)) / tau). `weights` gives it a persona (see gold_score)."""

    def __init__(self, tau: float = LABELER_TAU, seed: int = 0, weights: dict | None = None):
        if tau <= 0:
            raise SyntheticWorldError(f"labeler tau must be positive, got {tau}")
        self.tau = tau
        self.weights = _resolve_weights(weights)
        self.rng = random.Random(f"plus.synthetic/labeler/{seed}")

    def prob_a(self, score_a: float, score_b: float) -> float:
        """P(this labeler picks a) given the two gold scores."""
        return _sigmoid((score_a - score_b) / self.tau)

    def choose_scores(self, score_a: float, score_b: float) -> int:
        """0 picks a, 1 picks b (OpenAI's `choice` convention), given the gold scores."""
        return 0 if self.rng.random() < self.prob_a(score_a, score_b) else 1

    def choose(self, post: Post, a: str, b: str) -> int:
        """0 picks a, 1 picks b (OpenAI's `choice` convention)."""
        return self.choose_scores(gold_score(post, a, self.weights), gold_score(post, b, self.weights))


# ======================================================================================
# Comparisons
# ======================================================================================
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
# SFT on the world trains on this many TL;DRs of each training post, by different writers
# (the post's own reference first, then `other_references`); --export writes as many.
TRAIN_REFERENCES_PER_POST = 4


def _candidate(post: Post, kind: str, rng: random.Random) -> tuple[str, str, str]:
    """(text, policy, note) of one summary of the given kind."""
    if kind == "reference":
        return post.summary, "ref", "reference"
    return perturb(post, kind, rng), "ref_perturbed", kind


def _distinct(a: str, b: str) -> bool:
    """Whether two summaries differ within their first 30 words (what a 48-token model sees)."""
    return a.split()[:30] != b.split()[:30]


def _comparison_groups(world: "World", split: str, n: int, seed: int,
                       summaries_per_post: int) -> Iterator[tuple[Post, tuple, tuple, float, float]]:
    """n pairs as `_comparison_pairs` gives them, but `summaries_per_post` candidates
    (PAIR_KINDS) are drawn for each post in turn and every untied, distinct pair of them is
    compared: up to k(k-1)/2 comparisons of one post, as labelers who rank several
    summaries of a post give (Ouyang et al. 2022 train on all pairs of such a ranking)."""
    rng = random.Random(f"plus.synthetic/groups/{world.seed}/{split}/{seed}/{summaries_per_post}")
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


def _comparison_pairs(world: "World", split: str, n: int, seed: int,
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
    rng = random.Random(f"plus.synthetic/pairs/{world.seed}/{split}/{seed}")
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


def make_comparisons(world: "World", split: str, n: int, seed: int = 0,
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
        return sum(_sigmoid(g / tau) for g in gaps) / len(gaps)

    lo, hi = 1e-3, 1e3
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if agreement(mid) > target_agreement else (lo, mid)
    return math.sqrt(lo * hi)


# ======================================================================================
# The world as a whole: splits, pretraining corpus, export
# ======================================================================================
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
        """Pretraining texts from the "corpus" split, generated lazily: a fifth are posts
        alone (the query format without the TL;DR line), the rest are queries followed by
        a TL;DR that is *true* but of varying completeness (the reference, the complete
        summary, a dropped fact, a paraphrase or filler). No TL;DR here states a wrong
        fact: a corpus whose summaries invent numbers teaches a small model that a
        summary's numbers are guesses, and it then never learns to copy them from the post."""
        for post in (make_post(i, "corpus", self.seed) for i in range(start, start + n)):
            rng = random.Random(f"plus.synthetic/corpus/{post.id}")
            r = rng.random()
            if r < 0.2:
                yield f"SUBREDDIT: r/{post.subreddit}\n\nTITLE: {post.title}\n\nPOST: {post.post}"
                continue
            if r < 0.6:
                tldr = post.summary
            elif r < 0.85:
                tldr = complete_summary(post)
            else:
                tldr = perturb(post, rng.choice(("drop_fact", "paraphrase", "filler")), rng)
            yield post.query() + " " + tldr


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def export(out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_valid: int = 200, n_test: int = 200,
           n_comparisons: int = 2000, summaries_per_post: int = TRAIN_SUMMARIES_PER_POST,
           references_per_post: int = TRAIN_REFERENCES_PER_POST) -> dict[str, int]:
    """Write the world in the OpenAI formats: train/valid/test.jsonl (filtered TL;DR:
    id, subreddit, title, post, summary; train.jsonl has up to `references_per_post`
    records of each post (`other_references` may find fewer writers), one per writer, the
    post's own reference first, as SFT on the world trains;
    valid and test one, the post's own) and comparisons_train.jsonl (n_comparisons, all
    pairs among `summaries_per_post` summaries of each post) / comparisons_valid.jsonl
    (n_comparisons // 4, one per post). Returns {file name: records}."""
    if references_per_post < 1:
        raise SyntheticWorldError(f"references_per_post must be >= 1, got {references_per_post}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = World(seed)
    written = {}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        k = references_per_post if split == "train" else 1
        records = [{"id": p.id, "subreddit": p.subreddit, "title": p.title, "post": p.post, "summary": summary}
                   for p in world.posts(split, n) for summary in [p.summary] + other_references(p, k - 1)]
        _write_jsonl(out / f"{split}.jsonl", records)
        written[f"{split}.jsonl"] = len(records)
    for split, n, per_post in (("train", n_comparisons, summaries_per_post), ("valid", n_comparisons // 4, 2)):
        records = make_comparisons(world, split, n, seed=seed, summaries_per_post=per_post)
        _write_jsonl(out / f"comparisons_{split}.jsonl", records)
        written[f"comparisons_{split}.jsonl"] = len(records)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plus.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--export", metavar="DIR", help="write the world's JSONL files to DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_valid", type=int, default=200)
    parser.add_argument("--n_test", type=int, default=200)
    parser.add_argument("--n_comparisons", type=int, default=2000)
    parser.add_argument("--summaries_per_post", type=int, default=TRAIN_SUMMARIES_PER_POST,
                        help="training comparisons: all pairs among this many summaries of each post")
    parser.add_argument("--references_per_post", type=int, default=TRAIN_REFERENCES_PER_POST,
                        help="train.jsonl: this many TL;DRs of each post, by different writers")
    parser.add_argument("--show", type=int, metavar="N", help="print N example posts with their references")
    parser.add_argument("--calibrate", action="store_true", help="recompute LABELER_TAU")
    args = parser.parse_args(argv)
    if not (args.export or args.show or args.calibrate):
        parser.error("nothing to do: give --export DIR, --show N or --calibrate")
    for name in ("n_train", "n_valid", "n_test", "n_comparisons"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.summaries_per_post < 2:
        parser.error("--summaries_per_post must be >= 2")
    if args.references_per_post < 1:
        parser.error("--references_per_post must be >= 1")
    if args.show:
        for post in World(args.seed).posts("train", args.show):
            print(post.query(), post.summary)
            print(f"[gold {gold_score(post, post.summary):.2f}; complete: {complete_summary(post)}]\n")
    if args.calibrate:
        print(f"LABELER_TAU = {calibrate_labeler_tau(seed=args.seed):.4f}")
    if args.export:
        written = export(args.export, args.seed, args.n_train, args.n_valid, args.n_test, args.n_comparisons,
                         args.summaries_per_post, args.references_per_post)
        for name, count in written.items():
            print(f"wrote {Path(args.export) / name} ({count} records)")


if __name__ == "__main__":
    main()
