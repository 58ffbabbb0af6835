"""The gold judge: the noiseless score of a summary of a post.

`gold_score` knows the post's latent facts and reads a summary by recognizing the surface
forms the world can produce for each fact (reading.py), so it works on a model's
free-form output. It plays the role of Stiennon's researchers: the simulated labelers
(labelers.py) are noisy versions of it, and evaluation measures policies with it.

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
"""

from __future__ import annotations

import functools
import random
import re

from plus.world.groups import GROUPS
from plus.world.perturbations import perturb
from plus.world.posts import Post, make_post
from plus.world.reading import (NAMES_LOWER, RELATION_FORMS, mentioned_relations, phrase_text, post_mentions,
                                tokenize, word_classes)
from plus.world.references import complete_summary
from plus.world.tables import (CLOSERS, DISTRACTORS, FEELING_FACTS, FILLERS, INVENTED, NAME_SENTENCES,
                               OTHER_RELATION_WORDS, RELATIONS, SEED_PREFIX, STATES, SyntheticWorldError)
from plus.world.templates import REGISTER_PAIR, pronouns


# The judge's weights of the important facts (see the module docstring).
FACT_WEIGHTS = {"event": 3.0, "relation": 1.0, "complication": 1.5, "question": 1.0, "feeling": 1.0,
                "quantity": 1.0, "narrator": 0.5, "other_age": 0.5}
# The persona weights (see the module docstring) and their neutral values.
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

# Whose age tag: the word before it, skipping _TAG_SKIP ("I (24F)", "me and my bf (26M)").
_NARRATOR_WORDS = {"i", "me", "i'm", "im", "myself"}
_TAG_SKIP = {"my", "a", "an", "the", "and", "so", "'s", "am", "is", "was"}


def _expand_key(key: str) -> list[str]:
    """Key phrases may name the other party's pronoun ('cut {him} off')."""
    if "{" not in key:
        return [key]
    return [key.format_map(pronouns(g)) for g in "MF"]


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
        for m in REGISTER_PAIR.finditer(s):
            casual.add(phrase_text(tokenize(m.group(1))).strip())
            formal.add(phrase_text(tokenize(m.group(2))).strip())
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
        s = REGISTER_PAIR.sub(lambda m: m.group(1) + " " + m.group(2), re.sub(r"\{[^}]*\}", " ", s))
        vocab.update(c for c in word_classes(tokenize(s)))
    bigrams = set()
    rng = random.Random(f"{SEED_PREFIX}/language")
    for i in range(1500):
        post = make_post(i, "corpus", seed=-1)
        texts = [post.title, post.post, post.summary, complete_summary(post)]
        texts += [perturb(post, kind, rng) for kind in ("paraphrase", "drop_fact", "filler", "invent_fact", "reorder")]
        for text in texts:
            classes = ["|"] + word_classes(tokenize(text)) + ["|"]
            bigrams.update(zip(classes, classes[1:]))
    return frozenset(vocab), frozenset(bigrams)


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
    for relation, forms in RELATION_FORMS.items():
        for form in forms:
            if tuple(v for _, v in tokens[max(0, j - len(form) + 1): j + 1]) == form:
                return "other" if relation == main_relation else relation
    return ""


def resolve_weights(weights: dict | None) -> dict[str, float]:
    if weights is None:
        return DEFAULT_WEIGHTS
    unknown = set(weights) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise SyntheticWorldError(f"unknown gold-judge weight(s) {sorted(unknown)} "
                                  f"(valid: {', '.join(DEFAULT_WEIGHTS)})")
    return {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.items()}}


def read_summary(post: Post, summary: str) -> dict:
    """What the judge reads in `summary`, whatever the weights: the facts it covers, its
    errors, its length, fluency, repetition and register (see the module docstring).
    `weigh` turns a reading into the score of one set of weights, so a summary judged for
    several personas is read once."""
    tokens = tokenize(summary.strip())
    if not any(kind != "|" for kind, _ in tokens):
        return {"empty": True, "covered": {f: False for f in FACT_WEIGHTS}, "error_list": [], "n_words": 0,
                "fluency": 0.0}
    facts = post.facts
    narrator = (facts["narrator"]["age"], facts["narrator"]["gender"])
    other = (facts["other"]["age"], facts["other"]["gender"])
    src = post_mentions(post.title, post.post)
    text = phrase_text(tokens)
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
    mentioned = mentioned_relations(text)
    covered["relation"] = facts["other"]["relation"] in mentioned
    errors += [f"relation {r}" for r in mentioned - src["relations"]]
    errors += [f"name {v}" for v in {v for k, v in tokens if k == "w" and v in NAMES_LOWER} - src["names"]]

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

    # Fluency: is this the world's language?
    vocab, known_bigrams = _language()
    classes = word_classes(tokens)
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

    return {"empty": False, "covered": covered, "error_list": errors, "n_words": n_words, "fluency": fluency,
            "known_bigrams": known, "oov": oov, "repeats": repeats, "over": over, "style": style}


def weigh(reading: dict, weights: dict | None = None) -> dict:
    """The reading of `read_summary` with every term of the gold score under `weights`
    (see the module docstring) and the score itself."""
    w = resolve_weights(weights)
    if reading["empty"]:
        return {"score": EMPTY_SCORE, "empty": True, "terms": {"empty": EMPTY_SCORE},
                **{k: reading[k] for k in ("covered", "error_list", "n_words", "fluency")}}
    covered = reading["covered"]
    mult = {"event": w["events"], "complication": w["events"], "relation": 1.0, "feeling": w["feelings"],
            "question": w["question"], "quantity": w["details"], "narrator": w["details"], "other_age": w["details"]}
    coverage = w["coverage"] * sum(FACT_WEIGHTS[f] * mult[f] for f in FACT_WEIGHTS if covered[f])
    terms = {
        "coverage": reading["fluency"] * coverage,
        "errors": -ERROR_PENALTY * w["accuracy"] * len(reading["error_list"]),
        "brevity": -BREVITY_COST * w["brevity"] * reading["n_words"],
        "length": -LENGTH_PENALTY * reading["over"],
        "repetition": -REPEAT_PENALTY * min(reading["repeats"], MAX_REPEATS),
        "salad": -SALAD_PENALTY * (1.0 - reading["fluency"]),
        "formality": FORMALITY_BONUS * w["formality"] * reading["style"],
    }
    return {"score": sum(terms.values()), "empty": False, "terms": terms,
            **{k: reading[k] for k in ("covered", "error_list", "n_words", "fluency", "known_bigrams", "oov",
                                       "repeats", "style")}}


def gold_breakdown(post: Post, summary: str, weights: dict | None = None) -> dict:
    """Every term of the gold score (see the module docstring), and the score itself."""
    return weigh(read_summary(post, summary), weights)


def gold_score(post: Post, summary: str, weights: dict | None = None) -> float:
    """The gold judge's score of `summary` for `post`: about 0-10 for real summaries,
    negative for garbage, EMPTY_SCORE for nothing. See the module docstring."""
    return gold_breakdown(post, summary, weights)["score"]


def gold_scores(post: Post, summary: str, weights: list[dict | None]) -> list[float]:
    """gold_score of `summary` under each of several weights (personas), read once."""
    reading = read_summary(post, summary)
    return [weigh(reading, w)["score"] for w in weights]


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
