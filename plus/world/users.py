"""Users who disagree: populations of personas, users with a context of past choices, and
the context rendered for a summarizer (PLUS, Nam et al. 2025).

**Populations** follow the paper's benchmarks (taken from VPL, Poddar et al. 2024), with
personas (personas.py) in place of pet lovers and UltraFeedback attributes:

    pets  2 personas, one axis apart (feelings | numbers); half the comparisons are
          shared (both personas' gold judges prefer the same summary), half contested
    p2    2 personas, two axes apart; contested comparisons only
    p4    4 personas, every pole twice and every pair of poles once; contested only
    ood   the 4 other combinations of three poles, used by no other population; contested
          only. A model trained on p4's users is tested on ood's: every pair of poles
          is one it has seen, every combination of three is new

A comparison is **contested** when the population's personas' gold judges do not all
prefer the same summary. Pairs come from the world's own generators: on a post, two
summaries are drawn independently, each a TL;DR by the post's own writer or, half the
time, by another writer (references.py, as `other_references` draws writers), kept as it
is or perturbed, the kind drawn from comparisons.py's PAIR_KINDS. Other writers are what
makes the register differ within a pair: a writer keeps the post's register three times
in five. A pair is kept when its texts differ in their first 30 words, no persona of the
population scores them equal, and it is of the wanted class (contested, or shared); a
post that gives no such pair in DRAWS_PER_POST draws is replaced by another. So a
population's comparisons are the world's pairs conditioned on being contested (or
shared), never pairs chosen for being easy.

A **user** is (population, index, split): persona `index % len(population)`, a context
of 2-4 past comparisons labeled by the persona's noisy labeler (labelers.py's Labeler with
the persona's weights and the world's LABELER_TAU), and HELD_OUT_PER_USER held-out
comparisons with the persona's noiseless gold choice (and the labeler's, for training).
Context comparisons are on even-numbered posts of the user's split, held-out ones on
odd-numbered posts, so no held-out post is in any context of that split. Seen users are
the "train" split; new users ("valid", "test") have new contexts on posts of splits no
seen user reads. Everything regenerates from the user's id ("s0-p2-train-000012"),
seeded like the world's posts (SEED_PREFIX and the id).

`context_messages` renders a context as chat messages ending with "Start your response
with ##Summary", as the authors' data does; `context_text` as plain text for this
project's small models (each chosen summary, then the one it was chosen over, without the
posts), ending with the marker; `parse_summary` takes z back out.

**Self-description documents** are the corpus's texts in which a person shows a few of
their past choices and then says what they want from a TL;DR: the words a summarizer
needs for z, and the link between choices and words. The person is any combination of
one to three poles (the populations' personas, the ood ones and partial ones alike); the
choices are their labeler's, on pairs that a person with every pole flipped would have
chosen the other way (the choices a person explains are the telling ones); and they state
every pole they hold, each in its attribute's own sentence, in AXES order (the persona's
`text`). Paraphrased or partial statements (`describe`, a random subset of the poles)
teach the demo decoder the words and none of the reading: with a dozen ways to say each
pole, the choices decide too small a part of the words' loss (BENCHMARKS.md, "PLUS on the
world: a corpus the demo model learns to read from"). Their posts are the "corpus"
split's, which no user reads. **Pole documents** are the same with one choice of a
one-pole person, on a pair that the pole alone decides (or that both poles rank alike):
the comparisons that teach a reward model to read each sentence of z apart.

**The Bayes reader** (`persona_posterior`) knows every persona's gold judge and the
labelers' noise and reads a context as evidence; its prediction on held-out pairs
(`ceiling_hits`) is the most any method that reads the context can score on new users
(a seen user's own training pairs tell a method that learned them more than the context).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace

from plus.world.comparisons import PAIR_KINDS
from plus.world.judge import gold_scores
from plus.world.labelers import LABELER_TAU, Labeler, sigmoid
from plus.world.perturbations import perturb
from plus.world.personas import AXES, Persona, opposite
from plus.world.posts import Post, make_post
from plus.world.references import reference_plan, render_summary, writer_register
from plus.world.tables import SEED_PREFIX, SyntheticWorldError


def _personas(*names: str) -> tuple[Persona, ...]:
    return tuple(Persona(tuple(name.split("+"))) for name in names)


POPULATIONS: dict[str, tuple[Persona, ...]] = {
    "pets": _personas("feelings", "numbers"),
    "p2": _personas("brief+feelings+formal", "thorough+numbers+formal"),
    "p4": _personas("brief+feelings+formal", "brief+numbers+casual", "thorough+feelings+casual",
                    "thorough+numbers+formal"),
    "ood": _personas("thorough+feelings+formal", "brief+numbers+formal", "brief+feelings+casual",
                     "thorough+numbers+casual"),
}
SHARED_FRACTION = {"pets": 0.5}  # populations with shared comparisons; the others are contested only
USER_SPLITS = ("train", "valid", "test")  # train: seen users; valid, test: new users on new posts
OTHER_WRITER = 0.5  # the share of candidates written from another writer's TL;DR
CONTEXT_SIZES = (2, 4)  # a context holds 2-4 past comparisons, as in the paper
HELD_OUT_PER_USER = 4
DRAWS_PER_POST = 20
POSTS_PER_ROLE = 50_000  # context posts 0, 2, ..., held-out posts 1, 3, ... below 2 * POSTS_PER_ROLE
MAX_POSTS = 200
SUMMARY_MARKER = "##Summary"
INSTRUCTION = ("Based on the choices I made above, describe in a few sentences what I want from a TL;DR. "
               "Start your response with " + SUMMARY_MARKER)


@dataclass(frozen=True)
class UserComparison:
    """Two summaries of one post, as one user saw them."""

    post: Post
    summaries: tuple[str, str]
    notes: tuple[str, str]  # how each summary was made: "own reference", "other drop_fact", ...
    scores: tuple[float, float]  # the user's persona's gold scores
    contested: bool  # whether the population's personas' gold judges disagree on the pair
    choice: int  # the user's labeler's choice: 0 = first summary
    gold_choice: int  # the persona's gold judge's choice


@dataclass(frozen=True)
class User:
    population: str
    index: int
    split: str
    seed: int
    persona: Persona
    context: tuple[UserComparison, ...]  # past comparisons, labeled by the user (`choice`)
    held_out: tuple[UserComparison, ...]  # comparisons on new posts, for evaluation (`gold_choice`)

    @property
    def id(self) -> str:
        return user_id(self.population, self.index, self.split, self.seed)

    @property
    def training_comparisons(self) -> tuple[UserComparison, ...]:
        """The first half of `held_out`: the pairs a method trains on (the labeler's choice)."""
        return self.held_out[:HELD_OUT_PER_USER // 2]

    @property
    def evaluation_comparisons(self) -> tuple[UserComparison, ...]:
        """The second half of `held_out`: the pairs a method is scored on (the gold choice)."""
        return self.held_out[HELD_OUT_PER_USER // 2:]

    def labeler(self) -> Labeler:
        """A fresh copy of this user's labeler (it labels the context, then the held-out
        comparisons, in that order)."""
        return user_labeler(self.id, self.persona)


def user_id(population: str, index: int, split: str, seed: int = 0) -> str:
    if population not in POPULATIONS:
        raise SyntheticWorldError(f"unknown population {population!r} (valid: {', '.join(POPULATIONS)})")
    if split not in USER_SPLITS:
        raise SyntheticWorldError(f"unknown user split {split!r} (valid: {', '.join(USER_SPLITS)})")
    if not isinstance(index, int) or index < 0:
        raise SyntheticWorldError(f"user index must be a non-negative integer, got {index!r}")
    return f"s{seed}-{population}-{split}-{index:06d}"


def user_labeler(uid: str, persona: Persona) -> Labeler:
    """The user's noisy labeler: the persona's weights, the world's tau, seeded by the id."""
    seed = random.Random(f"{SEED_PREFIX}/users/labeler/{uid}").randrange(2**31)
    return Labeler(LABELER_TAU, seed=seed, weights=persona.weights)


def candidate(post: Post, kind: str, rng: random.Random) -> tuple[str, str]:
    """(text, note) of one summary of the post: a TL;DR by the post's own writer or, with
    probability OTHER_WRITER, by another writer (a plan drawn as `other_references` draws
    them), as it is (kind "reference") or perturbed (any other kind of PAIR_KINDS). The
    note says which: "own drop_fact", "other reference", ..."""
    writer = "own"
    if rng.random() < OTHER_WRITER:
        writer, plan = "other", reference_plan(rng, writer_register(post.facts, rng))
        post = replace(post, summary=render_summary(post.facts, plan), facts={**post.facts, "reference": plan})
    text = post.summary if kind == "reference" else perturb(post, kind, rng)
    return text, f"{writer} {kind}"


def score_pair(post: Post, a: str, b: str, personas: tuple[Persona, ...]) -> list[tuple[float, float]]:
    """Each persona's gold scores of the two summaries."""
    weights = [p.weights for p in personas]
    return list(zip(gold_scores(post, a, weights), gold_scores(post, b, weights)))


def is_contested(scores: list[tuple[float, float]]) -> bool:
    """Whether the personas' gold judges disagree on which summary is better."""
    prefers_a = {sa > sb for sa, sb in scores}
    return len(prefers_a) == 2


def _draw_pair(personas: tuple[Persona, ...], split: str, seed: int, role: int, contested: bool | None,
               rng: random.Random) -> tuple[Post, tuple, tuple, list[tuple[float, float]]]:
    """A pair of the wanted class (see the module docstring; None: either) on a post of the
    given role (0: even posts, for contexts; 1: odd posts, held out)."""
    kinds, kind_weights = list(PAIR_KINDS), list(PAIR_KINDS.values())
    for _ in range(MAX_POSTS):
        post = make_post(2 * rng.randrange(POSTS_PER_ROLE) + role, split, seed)
        for _ in range(DRAWS_PER_POST):
            ka, kb = rng.choices(kinds, kind_weights, k=2)
            (a, note_a), (b, note_b) = candidate(post, ka, rng), candidate(post, kb, rng)
            if a.split()[:30] == b.split()[:30]:  # what a 48-token model sees, as comparisons.py
                continue
            scores = score_pair(post, a, b, personas)
            if all(abs(sa - sb) > 1e-9 for sa, sb in scores) and contested in (None, is_contested(scores)):
                return post, (a, b), (note_a, note_b), scores
    raise SyntheticWorldError(f"no {'contested' if contested else 'shared'} pair in {MAX_POSTS} posts")


def _classes(population: str, n: int, rng: random.Random) -> list[bool]:
    """Which of n comparisons are contested: all, or (pets) half of them, shuffled; an odd n
    gives the extra one to either class with equal chance."""
    shared = SHARED_FRACTION.get(population, 0.0)
    if not shared:
        return [True] * n
    n_shared = int(n * shared) + (rng.random() < n * shared % 1)
    classes = [False] * n_shared + [True] * (n - n_shared)
    rng.shuffle(classes)
    return classes


def make_user(population: str, index: int, split: str = "train", seed: int = 0) -> User:
    """User `index` of `population` in `split` under world `seed` (see the module docstring)."""
    uid = user_id(population, index, split, seed)
    rng = random.Random(f"{SEED_PREFIX}/users/{uid}")
    personas = POPULATIONS[population]
    persona = personas[index % len(personas)]
    n_context = rng.randint(*CONTEXT_SIZES)
    roles = [0] * n_context + [1] * HELD_OUT_PER_USER
    classes = _classes(population, n_context, rng) + _classes(population, HELD_OUT_PER_USER, rng)
    labeler = user_labeler(uid, persona)
    comparisons = []
    for role, contested in zip(roles, classes):
        post, texts, notes, scores = _draw_pair(personas, split, seed, role, contested, rng)
        sa, sb = scores[personas.index(persona)]
        comparisons.append(UserComparison(post, texts, notes, (sa, sb), contested,
                                          choice=labeler.choose_scores(sa, sb), gold_choice=0 if sa > sb else 1))
    return User(population, index, split, seed, persona, tuple(comparisons[:n_context]),
                tuple(comparisons[n_context:]))


_ID = re.compile(r"^s(-?\d+)-([a-z0-9]+)-([a-z]+)-(\d+)$")


def user_from_id(uid: str) -> User:
    """Regenerate a user from its id ("s0-p2-train-000012")."""
    m = _ID.match(uid)
    if not m:
        raise SyntheticWorldError(f"not a user id: {uid!r} (expected like 's0-p2-train-000012')")
    return make_user(m.group(2), int(m.group(4)), m.group(3), int(m.group(1)))


def make_users(population: str, split: str, n: int, start: int = 0, seed: int = 0) -> list[User]:
    """Users start .. start+n-1 of a population and split."""
    return [make_user(population, i, split, seed) for i in range(start, start + n)]


# ---- the context, rendered ------------------------------------------------------------------
# ---- what a context can tell: the Bayes reader ------------------------------------------------
def persona_posterior(context: tuple[UserComparison, ...] | list[UserComparison],
                      personas: tuple[Persona, ...], tau: float = LABELER_TAU) -> list[float]:
    """P(persona | the context's choices), a uniform prior over `personas`. Under persona p
    a labeler picks the first summary of a pair with probability sigmoid((g_p(a) - g_p(b)) /
    tau) (labelers.py), each choice independent of the others, so

        P(p | c) = prod_i P(choice_i | p) / sum_q prod_i P(choice_i | q).

    This reader knows every persona's gold judge and the labelers' noise: no summarizer
    can name the user's persona more often than it does (computed in log space)."""
    log_likelihood = [0.0] * len(personas)
    for c in context:
        for k, (sa, sb) in enumerate(score_pair(c.post, c.summaries[0], c.summaries[1], personas)):
            p_first = sigmoid((sa - sb) / tau)
            log_likelihood[k] += math.log(max(p_first if c.choice == 0 else 1.0 - p_first, 1e-300))
    top = max(log_likelihood)
    weights = [math.exp(x - top) for x in log_likelihood]
    return [w / sum(weights) for w in weights]


def ceiling_hits(user: User) -> list[float]:
    """On each of the user's `evaluation_comparisons`, whether the Bayes-optimal prediction from the context
    matches the user's own gold choice: it picks the summary that the posterior's personas
    prefer with more weight, P(a) = sum_p P(p | c) [g_p(a) > g_p(b)]; 1, 0, or 0.5 on a tie.
    Their mean over users is the information ceiling: the most any method that reads the
    context can score on the population's new users (BENCHMARKS.md, "what the contexts
    allow"); on seen users, whose training pairs a method may have learned, a reference."""
    personas = POPULATIONS[user.population]
    posterior = persona_posterior(user.context, personas)
    hits = []
    for c in user.evaluation_comparisons:
        scores = score_pair(c.post, c.summaries[0], c.summaries[1], personas)
        p_first = sum(w for w, (sa, sb) in zip(posterior, scores) if sa > sb)
        hits.append(0.5 if abs(p_first - 0.5) < 1e-9 else float((p_first > 0.5) == (c.gold_choice == 0)))
    return hits


def _choice_letter(comparison: UserComparison) -> str:
    return "AB"[comparison.choice]


def context_messages(context: tuple[UserComparison, ...] | list[UserComparison]) -> list[dict[str, str]]:
    """The context as past conversations: the user asks for a TL;DR of a post, the assistant
    offers two, the user says which it prefers (at the start of its next message); the
    last user message asks for the summary of preferences and ends with "Start your
    response with ##Summary". Roles alternate user / assistant, as chat templates expect."""
    messages, choice = [], ""
    for c in context:
        messages.append({"role": "user", "content": choice + "Write a TL;DR of this post.\n\n" + c.post.query()})
        messages.append({"role": "assistant",
                         "content": f"Summary A: {c.summaries[0]}\n\nSummary B: {c.summaries[1]}"})
        choice = f"I prefer Summary {_choice_letter(c)}.\n\n"
    messages.append({"role": "user", "content": choice + INSTRUCTION})
    return messages


def context_text(context: tuple[UserComparison, ...] | list[UserComparison]) -> str:
    """The context as plain text, for this project's small models: per past comparison

        I chose: <the summary the user chose>
        Over: <the other one>

    then "What I want from a TL;DR: ##Summary", after which the model writes z.

    The chosen summary comes first, whichever was shown first: a reader then learns what
    the user likes from the text after "I chose:" directly, where "Summary A: <a> Summary
    B: <b> I chose B." asks it to look back and bind the letter to one of two texts before
    it can read either (a step the demo decoder learns far more slowly: BENCHMARKS.md,
    "PLUS on the world"). The posts are left out: a choice between two summaries of one
    post says what the user wants from a summary (length, feelings or numbers, register)
    without the post, and 2-4 posts of ~125 tokens each do not fit the demo decoder's 256
    positions beside z, while 2-4 pairs of summaries (~60 tokens a pair) do.
    `context_messages` keeps the posts and the order shown, as the authors' data does."""
    blocks = [f"I chose: {c.summaries[c.choice]}\nOver: {c.summaries[1 - c.choice]}" for c in context]
    return "\n\n".join(blocks + [f"What I want from a TL;DR: {SUMMARY_MARKER}"])


def parse_summary(text: str) -> str:
    """z: the text after the last "##Summary" marker, stripped (with a leading ':'). Without
    a marker, the whole text: splitting on the marker and keeping the last piece, as the
    authors delimit z, keeps everything when there is nothing to split on. A completion of
    `context_text`, which ends with the marker, is therefore z as it is."""
    z = text.split(SUMMARY_MARKER)[-1].strip()
    return z[1:].strip() if z.startswith(":") else z


# ---- self-description documents ---------------------------------------------------------------
@dataclass(frozen=True)
class SelfDescription:
    """A corpus document: a person's past choices, and what they say they want."""

    persona: Persona
    context: tuple[UserComparison, ...]
    text: str  # context_text(context) + " " + persona.text


def self_description_document(index: int, seed: int = 0) -> SelfDescription:
    """Document `index` of the self-description corpus (see the module docstring)."""
    rng = random.Random(f"{SEED_PREFIX}/users/self_description/{seed}/{index}")
    axes = rng.sample(list(AXES), rng.randint(1, len(AXES)))
    persona = Persona(tuple(rng.choice(AXES[axis]) for axis in axes))
    labeler = Labeler(LABELER_TAU, seed=rng.randrange(2**31), weights=persona.weights)
    context = [_corpus_choice(persona, labeler, True, seed, rng) for _ in range(rng.randint(*CONTEXT_SIZES))]
    return SelfDescription(persona, tuple(context), context_text(context) + " " + persona.text)


def _corpus_choice(persona: Persona, labeler: Labeler, contested: bool, seed: int,
                   rng: random.Random) -> UserComparison:
    """One past choice of a corpus document's person: a pair on the corpus's posts that
    the person and their opposite rank apart (contested) or alike, labeled by the
    person's labeler."""
    post, texts, notes, scores = _draw_pair((persona, opposite(persona)), "corpus", seed, 0, contested, rng)
    sa, sb = scores[0]
    return UserComparison(post, texts, notes, (sa, sb), contested, choice=labeler.choose_scores(sa, sb),
                          gold_choice=0 if sa > sb else 1)


def pole_document(index: int, axis: str, contested: bool, seed: int = 0) -> SelfDescription:
    """Document `index` of a one-pole person on `axis`: one past choice and the pole's
    sentence. The pole is either of the axis's two with equal chance; the pair is drawn as
    users' pairs are, contested between the two poles' gold judges (or, `contested` False,
    shared by them), on the corpus's posts, and labeled by the person's labeler. Contested,
    it is a choice that the pole's sentence alone decides; shared, one that every reader
    of any z should make alike."""
    rng = random.Random(f"{SEED_PREFIX}/users/pole/{seed}/{axis}/{int(contested)}/{index}")
    poles = AXES[axis]
    persona = Persona((rng.choice(poles),))
    labeler = Labeler(LABELER_TAU, seed=rng.randrange(2**31), weights=persona.weights)
    context = (_corpus_choice(persona, labeler, contested, seed, rng),)
    return SelfDescription(persona, context, context_text(context) + " " + persona.text)


def self_description_documents(n: int, start: int = 0, seed: int = 0) -> list[str]:
    """The texts of documents start .. start+n-1 of the self-description corpus."""
    return [self_description_document(i, seed).text for i in range(start, start + n)]
