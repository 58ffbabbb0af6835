"""Users who disagree (plus/world/personas.py, plus/world/users.py): persona weights by hand,
every comparison's class recomputed with the gold judge, users regenerated from their ids,
the judge of z on hand-written texts, and the labelers' agreement against its formula."""

import functools
import hashlib
import itertools
import json
import math
import random

import pytest

from plus import world
from plus.world.labelers import LABELER_TAU, Labeler, sigmoid
from plus.world.personas import ATTRIBUTES, AXES, describe, stated_attributes
from plus.world.users import (CONTEXT_SIZES, HELD_OUT_PER_USER, POSTS_PER_ROLE, ceiling_hits, context_messages,
                              context_text, parse_summary, persona_posterior)

Persona = world.Persona


@functools.lru_cache(maxsize=None)
def population_users(population: str) -> tuple:
    """Six seen users and two new users of a population (built once per test run)."""
    return tuple(world.make_users(population, "train", 6) + world.make_users(population, "test", 2))


def comparisons(user):
    return user.context + user.held_out


# ---- personas --------------------------------------------------------------------------------
def test_persona_weights_by_hand():
    p = Persona(("casual", "brief", "numbers"))  # given in any order, kept in AXES order
    assert p.attributes == ("brief", "numbers", "casual") and p.name == "brief+numbers+casual"
    assert p.weights == {"coverage": 1.0, "events": 1.0, "feelings": 0.25, "question": 0.5, "details": 3.0,
                         "brevity": 8.0, "accuracy": 1.0, "formality": -2.0}
    assert Persona(("thorough", "feelings", "formal")).weights == {
        "coverage": 1.5, "events": 1.0, "feelings": 3.0, "question": 2.0, "details": 0.25, "brevity": 0.25,
        "accuracy": 1.0, "formality": 2.0}
    assert Persona(("feelings",)).weights == dict(world.DEFAULT_WEIGHTS, feelings=3.0, question=2.0, details=0.25)
    # the two poles of an axis set the same weights, and no other axis's
    keys = {axis: {k for k, _ in ATTRIBUTES[poles[0]].weights} for axis, poles in AXES.items()}
    for axis, poles in AXES.items():
        assert {k for k, _ in ATTRIBUTES[poles[1]].weights} == keys[axis]
        assert all(not keys[axis] & keys[other] for other in AXES if other != axis)
    with pytest.raises(world.SyntheticWorldError):
        Persona(("brief", "thorough"))
    with pytest.raises(world.SyntheticWorldError):
        Persona(("dogs",))


def test_canonical_z_joins_the_sentences():
    assert Persona(("numbers", "brief")).text == ("I like short summaries. I care about the numbers: ages, "
                                                  "durations and amounts, not feelings.")
    assert Persona(("casual",)).text == "I prefer casual wording."


def test_populations_combine_poles_as_designed():
    full = {tuple(c) for c in itertools.product(*AXES.values())}
    p4 = {p.attributes for p in world.POPULATIONS["p4"]}
    ood = {p.attributes for p in world.POPULATIONS["ood"]}
    seen = {p.attributes for name in ("pets", "p2", "p4") for p in world.POPULATIONS[name]}
    assert p4 | ood == full and not ood & seen
    assert {p.attributes for p in world.POPULATIONS["p2"]} <= p4
    assert [p.attributes for p in world.POPULATIONS["pets"]] == [("feelings",), ("numbers",)]
    for population in (p4, ood):  # every pole twice, every pair of poles of two axes once
        for pole in ATTRIBUTES:
            assert sum(pole in p for p in population) == 2
        for a, b in itertools.combinations(ATTRIBUTES, 2):
            if ATTRIBUTES[a].axis != ATTRIBUTES[b].axis:
                assert sum(a in p and b in p for p in population) == 1


# ---- users and their comparisons ---------------------------------------------------------------
@pytest.mark.parametrize("population", list(world.POPULATIONS))
def test_comparisons_are_contested_or_shared_by_gold_score(population):
    personas = world.POPULATIONS[population]
    for user in population_users(population):
        assert user.persona == personas[user.index % len(personas)]
        for c in comparisons(user):
            a, b = c.summaries
            diffs = [world.gold_score(c.post, a, p.weights) - world.gold_score(c.post, b, p.weights)
                     for p in personas]
            assert all(abs(d) > 1e-9 for d in diffs) and a.split()[:30] != b.split()[:30]
            assert c.contested == (min(diffs) < 0 < max(diffs))
            if len(personas) == 2:
                assert (diffs[0] * diffs[1] < 0) == c.contested  # opposite signs exactly when contested
            if population != "pets":
                assert c.contested
            sa, sb = c.scores
            assert sa == world.gold_score(c.post, a, user.persona.weights)
            assert sb == world.gold_score(c.post, b, user.persona.weights)
            assert c.gold_choice == (0 if sa > sb else 1)


def test_pets_has_half_contested_comparisons():
    contested, total = 0, 0
    for user in population_users("pets"):
        assert sum(c.contested for c in user.held_out) == world.HELD_OUT_PER_USER // 2
        n = len(user.context)
        assert sum(c.contested for c in user.context) in (n // 2, (n + 1) // 2)
        contested += sum(c.contested for c in comparisons(user))
        total += len(comparisons(user))
    odd_contexts = sum(len(u.context) % 2 for u in population_users("pets"))
    assert abs(contested - total / 2) <= odd_contexts / 2


def test_contexts_and_held_out_posts():
    for population in world.POPULATIONS:
        for user in population_users(population):
            assert CONTEXT_SIZES[0] <= len(user.context) <= CONTEXT_SIZES[1]
            assert len(user.held_out) == world.HELD_OUT_PER_USER
            for role, group in ((0, user.context), (1, user.held_out)):
                for c in group:
                    seed, split, index = c.post.id.split("-")
                    assert (seed, split) == (f"s{user.seed}", user.split)
                    assert int(index) % 2 == role and int(index) < 2 * POSTS_PER_ROLE


def user_digest(user) -> str:
    rows = [[c.post.id, list(c.summaries), list(c.notes), list(c.scores), c.contested, c.choice, c.gold_choice]
            for c in comparisons(user)]
    return hashlib.sha256(json.dumps([user.id, user.persona.name, rows]).encode()).hexdigest()


def test_users_regenerate_from_their_ids():
    for population in world.POPULATIONS:
        for user in population_users(population)[::3]:
            assert world.user_from_id(user.id) == user
    # pinned: the same ids give the same users in any process, on any machine
    assert {uid: user_digest(world.user_from_id(uid)) for uid in PINNED_USERS} == PINNED_USERS
    assert world.make_user("p2", 12, "valid", seed=3).id == "s3-p2-valid-000012"
    for bad in ("s0-p3-train-000001", "s0-p2-corpus-000001", "p2-train-1", "s0-train-000001"):
        with pytest.raises(world.SyntheticWorldError):
            world.user_from_id(bad)


PINNED_USERS = {
    "s0-p2-train-000000": "7602f27fcc4fd9fdcaa94bdad422ae029559b52fc04f148d90a1535de3fcd1ab",
    "s0-pets-test-000003": "eef047023fb90e073b3eeb0c79226572f05e2054da0534b9fa10c3360c47a1ce",
    "s1-ood-valid-000002": "c6b2ff8bbfe5077d07517585b1d2677bfd031233b419abcb68f815a191fae16f",
}


# ---- labelers ----------------------------------------------------------------------------------
def test_context_choices_are_the_users_labeler():
    for user in population_users("p4")[:4]:
        labeler = user.labeler()
        assert [labeler.choose(c.post, *c.summaries) for c in comparisons(user)] == [
            c.choice for c in comparisons(user)]


def test_labeler_agreement_matches_its_formula():
    """A labeler picks the gold choice with probability sigmoid(|gold(a) - gold(b)| / tau):
    over many labels of the contested pairs, agreement is the mean of that. The personas'
    score gaps are larger than the default judge's, so their labelers (the world's tau)
    agree more often than the world's calibrated 75%."""
    for population in ("p2", "ood"):
        gaps, agree, n = [], 0, 0
        for user in population_users(population):
            labeler = Labeler(LABELER_TAU, seed=user.index, weights=user.persona.weights)
            for c in comparisons(user):
                sa, sb = c.scores
                gaps.append(abs(sa - sb))
                for _ in range(100):
                    agree += labeler.choose_scores(sa, sb) == c.gold_choice
                    n += 1
        expected = sum(sigmoid(g / LABELER_TAU) for g in gaps) / len(gaps)
        assert abs(agree / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
        assert 0.72 < expected < 0.92


# ---- the judge of z ------------------------------------------------------------------------------
def test_summary_attribute_accuracy_on_hand_written_z():
    judge = world.summary_attribute_accuracy
    p = Persona(("brief", "feelings", "formal"))
    assert judge(p.text, p) == {"correct": ["brief", "feelings", "formal"], "wrong": [], "omitted": [],
                                "extra": [], "stated": {"length": ["brief"], "content": ["feelings"],
                                                        "register": ["formal"]}, "score": 1.0}
    r = judge("I like long summaries with every fact. I care about feelings.", p)  # a wrong pole
    assert (r["correct"], r["wrong"], r["omitted"], r["score"]) == (["feelings"], ["brief"], ["formal"], 0.0)
    r = judge("", p)
    assert (r["omitted"], r["score"]) == (["brief", "feelings", "formal"], 0.0)
    r = judge("Concise, please. Numbers do not matter to me. No slang.", p)  # paraphrases and negations
    assert (r["correct"], r["score"]) == (["brief", "feelings", "formal"], 1.0)
    r = judge("I would rather read a short TL;DR than a long one; keep it informal.", p)
    assert (r["correct"], r["wrong"], r["score"]) == (["brief"], ["formal"], 0.0)
    r = judge("I like short summaries and long ones.", p)  # a contradiction is wrong
    assert r["wrong"] == ["brief"] and r["stated"]["length"] == ["brief", "thorough"]
    r = judge("I like short summaries. Feelings over numbers.", Persona(("feelings",)))  # an axis left open
    assert (r["correct"], r["extra"], r["score"]) == (["feelings"], ["brief"], 0.0)
    r = judge("##Summary The user wants every fact and the ages, and does not mind slang.", p)
    assert (r["wrong"], r["score"]) == (["brief", "feelings", "formal"], -1.0)


def test_negations():
    cases = {"I don't want long summaries.": {"length": {"brief"}},
             "I do not mind long summaries.": {"length": {"thorough"}},
             "Skip the numbers, tell me the feelings.": {"content": {"feelings"}},
             "I care more about the numbers than the feelings.": {"content": {"numbers"}},
             "Emotions are not important, amounts are.": {"content": {"numbers"}},
             "Not casual, not too short.": {"register": {"formal"}, "length": {"thorough"}}}
    for z, expected in cases.items():
        assert stated_attributes(z) == {axis: expected.get(axis, set()) for axis in AXES}, z


def test_every_description_is_read_as_written():
    for attribute in ATTRIBUTES.values():
        assert attribute.sentence in attribute.says
        for sentence in attribute.says:
            assert stated_attributes(sentence) == {axis: {attribute.name} if axis == attribute.axis else set()
                                                   for axis in AXES}, sentence
    rng = random.Random(0)
    for _ in range(300):
        axes = rng.sample(list(AXES), rng.randint(1, 3))
        poles = [rng.choice(AXES[axis]) for axis in axes]
        text = describe(poles, rng)
        assert world.summary_attribute_accuracy(text, Persona(tuple(poles)))["score"] == 1.0, text
    for population in world.POPULATIONS.values():
        for persona in population:
            assert world.summary_attribute_accuracy(persona.text, persona)["score"] == 1.0


def test_self_descriptions_are_deterministic_and_varied():
    texts = world.self_descriptions(200, seed=0)
    assert texts[:50] == world.self_descriptions(50, seed=0) and texts != world.self_descriptions(200, seed=1)
    assert len(set(texts)) > 150
    for text in texts:
        stated = stated_attributes(text)
        assert 1 <= sum(len(p) for p in stated.values()) <= 3 and all(len(p) <= 1 for p in stated.values())
    # every paraphrase of every attribute appears
    sentences = {s for a in ATTRIBUTES.values() for s in a.says}
    assert sum(any(s in t for t in world.self_descriptions(500)) for s in sentences) == len(sentences)


# ---- rendering -------------------------------------------------------------------------------------
def hand_context():
    post = world.make_post(0)
    first = world.UserComparison(post, ("Short one.", "A longer one."), ("own reference", "own drop_fact"),
                                 (2.0, 1.0), True, 1, 0)
    second = world.UserComparison(post, ("Third.", "Fourth."), ("own reference", "other reference"),
                                  (0.5, 1.5), True, 0, 1)
    return post, [first, second]


@pytest.mark.parametrize("population", ["pets", "p2", "p4"])
def test_persona_posterior_is_the_product_of_the_labelers_probabilities(population):
    """Each persona's likelihood is the product, over the context, of the probability its
    labeler makes the recorded choice (labelers.py's formula, from gold_score here),
    normalized over the population's personas."""
    personas = world.POPULATIONS[population]
    for user in population_users(population):
        likelihood = []
        for p in personas:
            product = 1.0
            for c in user.context:
                a, b = (world.gold_score(c.post, text, p.weights) for text in c.summaries)
                first = 1 / (1 + math.exp(-(a - b) / LABELER_TAU))
                product *= first if c.choice == 0 else 1 - first
            likelihood.append(product)
        expected = [x / sum(likelihood) for x in likelihood]
        assert persona_posterior(user.context, personas) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ceiling_with_no_context_and_with_a_telling_one():
    """With no past choices every persona is equally likely: on a pair the two p2 personas
    rank apart the Bayes prediction is a tie (0.5 each); on pets' shared pairs both rank
    alike and it is right. With one choice, by hand: under the two personas the labeler
    picks the first summary with probabilities s1 = sigmoid(d1 / tau), s2 = sigmoid(d2 /
    tau), so after choosing it P(persona 1) = s1 / (s1 + s2)."""
    import dataclasses

    for population in ("p2", "pets"):
        for user in population_users(population):
            blank = dataclasses.replace(user, context=())
            assert persona_posterior((), world.POPULATIONS[population]) == [0.5, 0.5]
            for c, hit in zip(user.held_out[HELD_OUT_PER_USER // 2:], ceiling_hits(blank)):
                assert hit == (0.5 if c.contested else 1.0)
    user = population_users("p2")[0]
    c = user.context[0]
    s = [sigmoid((world.gold_score(c.post, c.summaries[0], p.weights) - world.gold_score(c.post, c.summaries[1],
                                                                                          p.weights)) / LABELER_TAU)
         for p in world.POPULATIONS["p2"]]
    chose_first = dataclasses.replace(c, choice=0)
    assert persona_posterior((chose_first,), world.POPULATIONS["p2"])[0] == pytest.approx(s[0] / (s[0] + s[1]))


def test_context_text():
    post, context = hand_context()
    assert context_text(context) == (
        "I chose: A longer one.\nOver: Short one.\n\n"  # the chosen one first, whichever was shown first
        "I chose: Third.\nOver: Fourth.\n\n"
        "What I want from a TL;DR: ##Summary")
    assert parse_summary(context_text(context) + " I like short summaries.") == "I like short summaries."


def test_context_messages():
    post, context = hand_context()
    messages = context_messages(context)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == "Write a TL;DR of this post.\n\n" + post.query()
    assert messages[1]["content"] == "Summary A: Short one.\n\nSummary B: A longer one."
    assert messages[2]["content"].startswith("I prefer Summary B.\n\nWrite a TL;DR")
    assert messages[4]["content"].startswith("I prefer Summary A.\n\n")
    assert messages[-1]["content"].endswith("Start your response with ##Summary")


def test_parse_summary():
    assert parse_summary("##Summary I like short summaries.") == "I like short summaries."
    assert parse_summary("##Summary:\n I prefer formal wording. ") == "I prefer formal wording."
    assert parse_summary("Sure! ##Summary Keep it brief.") == "Keep it brief."
    assert parse_summary("##Summary draft ##Summary final") == "final"  # the last marker
    assert parse_summary("I like short summaries.") == "I like short summaries."  # no marker: the whole text
    assert parse_summary("") == "" and parse_summary("##Summary") == ""
