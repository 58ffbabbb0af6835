"""Tests for plus/world/: the world, its gold judge and its simulated labelers.

Expected values come from elsewhere: a hand-scored summary, plain loops over the
world's tables, a regenerated post in a fresh process, the closed-form labeler
probability, and round trips through the exported files.
"""

import json
import math
import os
import random
import subprocess
import sys

import pytest

from plus import world as W
from plus.world.__main__ import main
from plus.world.perturbations import swap_fact
from plus.world.templates import quantity_text

# A hand-made post, independent of the generator (facts written out, text typed in).
HAND_POST = W.Post(
    id="hand-1",
    subreddit="relationships",
    title="My boyfriend cheated on me",
    post=("My boyfriend (26M) and I (24F) have been together for 3 years. Last week I found out that he "
          "cheated on me with someone from his work. The problem is we just signed a lease together. "
          "I feel so betrayed right now. I work as a nurse at a small clinic. Should I break up with him?"),
    summary="My boyfriend (26M) of 3 years cheated on me. We share a lease.",
    facts={
        "narrator": {"age": 24, "gender": "F"},
        "other": {"relation": "boyfriend", "age": 26, "gender": "M", "name": None},
        "quantity": {"kind": "duration", "value": 3, "unit": "year"},
        "event": "cheated", "complication": "lease", "feeling": "betrayed", "question": "break_up",
    },
)


@pytest.fixture(scope="module")
def posts():
    return W.World(7).posts("test", 200)


@pytest.fixture(scope="module")
def comparisons():
    return W.make_comparisons(W.World(0), "valid", 2000, seed=3)


# ---- the world ------------------------------------------------------------------------
def test_posts_are_deterministic_and_splits_differ():
    a, b = W.make_post(12, "train", seed=0), W.make_post(12, "train", seed=0)
    assert a == b
    assert a.id == "s0-train-000012"
    assert W.post_from_id(a.id) == a
    assert W.World(0).posts("train", 3, start=11)[1] == a
    for other in (W.make_post(12, "train", seed=1), W.make_post(12, "valid", seed=0), W.make_post(13, "train", 0)):
        assert (other.title, other.post) != (a.title, a.post)
    assert a.query() == f"SUBREDDIT: r/{a.subreddit}\n\nTITLE: {a.title}\n\nPOST: {a.post}\n\nTL;DR:"
    json.dumps(a.facts)  # the latent facts are JSON-serializable


def test_posts_do_not_depend_on_the_process_hash_seed():
    code = "from plus.world import make_post; p = make_post(5, 'valid', 2); print(p.post + p.summary)"
    outs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=os.getcwd())
        outs.add(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                check=True).stdout.strip())
    p = W.make_post(5, "valid", 2)
    assert outs == {p.post + p.summary}


def test_world_has_over_a_million_distinct_posts():
    # One (subreddit, relation, event) alone, counted from the tables by hand: intros x
    # (no background + backgrounds) x event sentences x (no detail + details) x
    # complication sentences x feeling sentences x question sentences x 2 orders x
    # ordered choices of 1-4 distractors x (no closer + closers).
    g = W.ROMANCE
    cheated = next(e for e in g.events if e.name == "cheated")
    d = len(W.DISTRACTORS)
    one = (len(g.intros) * (1 + len(g.background)) * len(cheated.post) * (1 + len(cheated.detail))
           * sum(len(c.post) for c in g.complications)
           * sum(len(W.FEELING_FACTS[f].post) for f in g.feelings)
           * sum(len(q.post) for q in g.questions)
           * 2 * (d + d * (d - 1) + d * (d - 1) * (d - 2) + d * (d - 1) * (d - 2) * (d - 3))
           * (1 + len(W.CLOSERS)))
    assert one > 1e6
    assert W.count_post_variants() > 50 * one  # dozens of such combinations
    bodies = [p.post for p in W.World(0).posts("train", 2000)]
    assert len(set(bodies)) == 2000


def test_post_and_reference_lengths():
    posts = W.World(1).posts("train", 300)
    post_words = [len(p.post.split()) for p in posts]
    ref_words = [len(p.summary.split()) for p in posts]
    assert min(post_words) >= 50 and max(post_words) <= 140
    assert 65 <= sum(post_words) / len(posts) <= 100
    assert 15 <= sum(ref_words) / len(posts) <= 30
    assert max(len(W.complete_summary(p).split()) for p in posts) <= 40


def test_judge_reads_exactly_the_facts_the_text_states(posts):
    """The post body states every fact and nothing foreign; the reference states exactly
    the facts its plan kept. Checks the surface forms against the recognizers."""
    for p in posts:
        body = W.gold_breakdown(p, p.title + ". " + p.post)
        assert body["error_list"] == [] and all(body["covered"].values()), p.id
        ref = W.gold_breakdown(p, p.summary)
        expected = {**p.facts["reference"]["keep"], "event": True, "relation": True}
        assert ref["covered"] == expected, (p.id, p.summary)
        assert ref["error_list"] == [] and ref["fluency"] == 1.0 and ref["repeats"] == 0
        complete = W.gold_breakdown(p, W.complete_summary(p))
        assert all(complete["covered"].values()) and complete["error_list"] == []


def test_other_references_are_true_distinct_and_repeatable(posts):
    """Extra TL;DRs of a post by other writers: each states no wrong fact and is fluent, all
    differ from the post's reference and from each other, and the same call gives the same
    texts. Their writers keep the lesser facts about as often as the references' writers."""
    kept, kept_ref = {f: 0 for f in W.LESSER_FACTS}, {f: 0 for f in W.LESSER_FACTS}
    for p in posts:
        others = W.other_references(p, 3)
        assert others == W.other_references(p, 3)
        assert len(set(others + [p.summary])) == 4
        for text in others:
            b = W.gold_breakdown(p, text)
            assert b["error_list"] == [] and b["fluency"] == 1.0 and b["repeats"] == 0, (p.id, text)
            for f in W.LESSER_FACTS:
                kept[f] += b["covered"][f] / 3
        for f in W.LESSER_FACTS:
            kept_ref[f] += W.gold_breakdown(p, p.summary)["covered"][f]
    for f in W.LESSER_FACTS:
        assert abs(kept[f] - kept_ref[f]) / len(posts) < 0.15, (f, kept[f], kept_ref[f])
    with pytest.raises(W.SyntheticWorldError, match="non-negative"):
        W.other_references(posts[0], -1)


def test_swapped_references_get_exactly_the_named_fact_wrong(posts):
    errors = {"narrator": {"tag"}, "other_age": {"tag"}, "quantity": {"duration", "amount", "number"},
              "relation": {"relation"}, "event": {"event"}, "complication": {"complication"},
              "feeling": {"feeling"}, "question": {"question"}}
    seen = set()
    for post in posts[:40]:
        reference = W.gold_breakdown(post, post.summary)
        swaps = W.swapped_references(post, random.Random(post.id))
        stated = [f for f in W.LESSER_FACTS if post.facts["reference"]["keep"][f]] + ["relation", "event"]
        assert [fact for fact, _ in swaps] == [f for f in stated if f in dict(swaps)]  # one each, in order
        for fact, text in swaps:
            seen.add(fact)
            b = W.gold_breakdown(post, text)
            assert text != post.summary and W.gold_preference(post, post.summary, text) == 1.0
            assert {e.split()[0] for e in b["error_list"]} & errors[fact], (fact, text, b["error_list"])
            assert reference["covered"][fact] and not b["covered"][fact], (fact, text)
    assert seen == set(errors)


def test_quantity_forms_by_hand():
    years3, amount = {"kind": "duration", "value": 3, "unit": "year"}, {"kind": "amount", "value": 2500}
    assert quantity_text(years3, {"yrs": False, "word": False}) == "3 years"
    assert quantity_text(years3, {"yrs": True, "word": True}) == "three yrs"
    assert quantity_text({"kind": "duration", "value": 1, "unit": "year"}, {"yrs": True, "word": False}) == "1 yr"
    # A form that does not fit the value falls back to the plain form.
    assert quantity_text({"kind": "duration", "value": 13, "unit": "month"}, {"yrs": True, "word": True}) == "13 months"
    assert quantity_text(amount, {"k": "k"}) == "2.5k"
    assert quantity_text(amount, {"k": "$k"}) == "$2.5k"
    assert quantity_text(amount, {"k": None}) == "$2,500"
    assert quantity_text({"kind": "amount", "value": 750}, {"k": "$k"}) == "$750"


def test_reference_copies_the_posts_quantity_and_a_swap_keeps_its_form(posts):
    """A reference that states the quantity writes it as the post does ("three yrs" stays
    "three yrs"); a swapped value is written in the same form, so the form gives it away
    no more than the true value's form does."""
    n_kept = n_forms = 0
    for p in posts:
        text = quantity_text(p.facts["quantity"], p.facts["quantity"]["form"])
        assert text in p.post, (p.id, text)
        if p.facts["reference"]["keep"]["quantity"]:
            n_kept += 1
            assert text in p.summary, (p.id, p.summary)
            n_forms += text.split()[0].isalpha() or "yr" in text or "k" in text
        swapped = swap_fact(p.facts, dict(p.facts["reference"], keep={f: True for f in W.LESSER_FACTS}), set(),
                            random.Random(p.id))
        assert swapped["quantity"]["form"] == p.facts["quantity"]["form"]
    assert n_kept > 50 and n_forms > 10  # the non-plain forms are exercised


# ---- the gold judge ---------------------------------------------------------------------
def test_hand_scored_summary():
    # "My bf (26M) of 3 years cheated on me (24F). Should I break up with him?": 16 words.
    # Covers event 3 + relation 1 + other's age 0.5 + duration 1 + narrator 0.5 +
    # question 1 = 7.0; no errors; brevity 0.04 * 16 = 0.64; 1.3 * 16 < 48; no repeats.
    good = "My bf (26M) of 3 years cheated on me (24F). Should I break up with him?"
    b = W.gold_breakdown(HAND_POST, good)
    assert b["fluency"] == 1.0 and b["n_words"] == 16
    assert b["score"] == pytest.approx(7.0 - 0.64, abs=1e-9)
    # "My gf (26F) of 4 years cheated on me (24F). I feel angry.": 13 words. Covers the
    # event 3 + narrator 0.5; errors: girlfriend not in the post, a 26F tag not in the
    # post, 4 years not in the post, a feeling (angry) the post does not have: 4 x 2.0.
    bad = "My gf (26F) of 4 years cheated on me (24F). I feel angry."
    b = W.gold_breakdown(HAND_POST, bad)
    assert len(b["error_list"]) == 4
    assert b["n_words"] == 13
    assert b["score"] == pytest.approx(3.5 - 8.0 - 0.04 * 13, abs=1e-9)
    # a tag on the wrong person: 26M is the boyfriend, not the narrator
    swapped = W.gold_breakdown(HAND_POST, "I (26M) found out my bf cheated on me.")
    assert len(swapped["error_list"]) == 1 and not swapped["covered"]["narrator"]


def test_error_analysis_counts_by_hand():
    good = "My boyfriend (26M) of 3 years cheated on me. We share a lease."
    bad = "My boyfriend (29M) of 5 years cheated on me. I feel so angry."  # wrong tag, duration, feeling
    out = W.error_analysis([HAND_POST, HAND_POST], [good, bad])
    assert out["errors"] == {"tag": 50.0, "duration": 50.0, "feeling": 50.0}
    assert out["covered"]["event"] == 100.0 and out["covered"]["relation"] == 100.0
    assert out["covered"]["other_age"] == 50.0 and out["covered"]["quantity"] == 50.0
    assert out["covered"]["complication"] == 50.0 and out["covered"]["feeling"] == 0.0
    with pytest.raises(W.SyntheticWorldError):
        W.error_analysis([HAND_POST], [])


def test_gold_orderings_on_many_posts(posts):
    rng = random.Random(0)
    wins = {"ref>drop": 0, "drop>swap": 0, "ref>invent": 0, "complete>ref": 0, "garbage lowest": 0}
    incomplete = 0
    for p in posts:
        ref = W.gold_score(p, p.summary)
        drop = W.gold_score(p, W.perturb(p, "drop_fact", rng))
        swap = W.gold_score(p, W.perturb(p, "swap_value", rng))
        wins["ref>drop"] += ref > drop
        wins["drop>swap"] += drop > swap
        wins["ref>invent"] += ref > W.gold_score(p, W.perturb(p, "invent_fact", rng))
        if not all(p.facts["reference"]["keep"].values()):
            incomplete += 1
            wins["complete>ref"] += W.gold_score(p, W.complete_summary(p)) > ref
        others = [W.gold_score(p, W.perturb(p, k, rng)) for k in W.PERTURBATIONS if k not in ("salad", "empty")]
        garbage = [W.gold_score(p, W.perturb(p, k, rng)) for k in ("salad", "empty")]
        wins["garbage lowest"] += max(garbage) < min(others + [ref])
    assert incomplete > 150
    for name, count in wins.items():
        assert count >= 0.95 * (incomplete if name == "complete>ref" else len(posts)), name
    assert W.gold_score(p, "") == W.EMPTY_SCORE and W.gold_score(p, " \n ") == W.EMPTY_SCORE


def test_length_repetition_and_word_salad():
    ref = HAND_POST.summary
    long = ref + " I work as a nurse at a small clinic. It has been raining all week here. " \
                 "I have been going to the gym a lot lately. I like hiking and cooking."
    words = len(long.split())
    b = W.gold_breakdown(HAND_POST, long)
    assert b["terms"]["length"] == pytest.approx(-W.LENGTH_PENALTY * (1.3 * words - 48))
    assert b["score"] < W.gold_score(HAND_POST, ref)

    twice = "my bf cheated on me. my bf cheated on me."
    tokens = twice.replace(".", "").split()
    trigrams = [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
    repeats = sum(trigrams[i] in trigrams[:i] for i in range(len(trigrams)))  # plain loop: 3
    b = W.gold_breakdown(HAND_POST, twice)
    assert b["repeats"] == repeats == 3
    assert b["terms"]["repetition"] == -W.REPEAT_PENALTY * 3
    assert b["score"] < W.gold_score(HAND_POST, "my bf cheated on me.")

    salad = "lease share years. (26M) my We cheated a of on 3 me boyfriend"
    nonsense = "zorp quantum blimp glorx frobnicate widget"
    for garbage in (salad, nonsense):
        b = W.gold_breakdown(HAND_POST, garbage)
        assert b["fluency"] < 0.5 and b["score"] < 0
    assert W.gold_breakdown(HAND_POST, nonsense)["oov"] == 1.0


def test_weights_change_the_ordering():
    feeling = "My boyfriend (26M) cheated on me. I feel betrayed."
    complication = "My boyfriend (26M) cheated on me. We just signed a lease together."
    question = "My boyfriend (26M) cheated on me. Should I break up with him?"
    full = "I (24F) found out my boyfriend (26M) of 3 years cheated on me. We share a lease. I feel betrayed. " \
           "Should I break up with him?"
    short = "My boyfriend cheated on me."

    def prefers(a, b, weights=None):
        return W.gold_preference(HAND_POST, a, b, weights) == 1.0

    assert prefers(complication, feeling) and prefers(feeling, complication, {"feelings": 3, "events": 0.5})
    assert prefers(feeling, question) and prefers(question, feeling, {"question": 2})
    assert prefers(full, short) and prefers(short, full, {"brevity": 10})
    casual = "My bf (26M) cheated on me and I'm so betrayed."
    formal = "My boyfriend (26M) cheated on me and I am so betrayed."
    assert W.gold_breakdown(HAND_POST, casual)["style"] == -1.0
    assert W.gold_breakdown(HAND_POST, formal)["style"] == 1.0
    assert prefers(casual, formal)  # neutral by default: only one word shorter
    assert W.gold_score(HAND_POST, casual) - W.gold_score(HAND_POST, formal) == pytest.approx(W.BREVITY_COST)
    assert prefers(formal, casual, {"formality": 1}) and prefers(casual, formal, {"formality": -1})
    with pytest.raises(W.SyntheticWorldError):
        W.gold_score(HAND_POST, casual, {"concision": 1})


# ---- labelers and comparisons -----------------------------------------------------------
def test_labeler_matches_the_bradley_terry_probability():
    labeler = W.Labeler(tau=1.5, seed=4)
    n, gap = 20000, 1.0
    picks_a = sum(labeler.choose_scores(gap, 0.0) == 0 for _ in range(n)) / n
    p = 1 / (1 + math.exp(-gap / 1.5))
    assert abs(picks_a - p) < 4 * math.sqrt(p * (1 - p) / n)
    noiseless = W.Labeler(tau=1e-6)
    good, bad = HAND_POST.summary, "My boyfriend cheated."
    assert all(noiseless.choose(HAND_POST, good, bad) == 0 and noiseless.choose(HAND_POST, bad, good) == 1
               for _ in range(20))


def test_labelers_agree_with_gold_about_75_percent(comparisons):
    assert len(comparisons) == 2000
    agreement = sum(r["choice"] == r["gold_choice"] for r in comparisons) / len(comparisons)
    assert 0.70 <= agreement <= 0.80
    # The constant is calibrated: the expected agreement, recomputed from the gold scores of
    # these pairs (another split and seed than the calibration), is close to 75%.
    expected = 0.0
    for r in comparisons[:600]:
        post = W.post_from_id(r["info"]["id"])
        a, b = (W.gold_score(post, s["text"]) for s in r["summaries"])
        assert r["gold_choice"] == (0 if a > b else 1)
        expected += 1 / (1 + math.exp(-abs(a - b) / W.LABELER_TAU))
    assert abs(expected / 600 - 0.75) < 0.03


def test_comparisons_among_several_summaries_per_post():
    # All pairs among up to 4 distinct summaries of each post, posts 0, 1, 2, ... in turn;
    # each pair labeled on its own, gold choices from the judge, labelers still near 75%.
    records = W.make_comparisons(W.World(0), "valid", 1200, seed=3, summaries_per_post=4)
    assert len(records) == 1200
    by_post: dict[str, list] = {}
    for r in records:
        by_post.setdefault(r["info"]["id"], []).append(r)
    ids = list(by_post)
    assert ids == [W.make_post(i, "valid", 0).id for i in range(len(ids))]
    assert 1200 / 6 <= len(ids) < 1200 / 4  # at most 6 pairs a post, most posts have 6
    for post_id, group in list(by_post.items())[:60]:
        post = W.post_from_id(post_id)
        texts = {s["text"] for r in group for s in r["summaries"]}
        pairs = [frozenset(s["text"] for s in r["summaries"]) for r in group]
        assert len(texts) <= 4 and len(set(pairs)) == len(pairs) <= 6
        for r in group:
            a, b = (W.gold_score(post, s["text"]) for s in r["summaries"])
            assert a != b and r["gold_choice"] == (0 if a > b else 1)
    agreement = sum(r["choice"] == r["gold_choice"] for r in records) / len(records)
    assert 0.70 <= agreement <= 0.80
    with pytest.raises(W.SyntheticWorldError, match="summaries_per_post"):
        W.make_comparisons(W.World(0), "valid", 3, summaries_per_post=1)


def test_comparisons_with_policy_samples():
    posts = W.World(0).posts("train", 3)
    samples = {p.id: [W.complete_summary(p), p.summary + " So yeah.", "my bf cheated"] for p in posts}
    records = W.make_comparisons(W.World(0), "train", 12, seed=1, policy_samples=samples)
    assert [r["info"]["id"] for r in records] == [p.id for p in posts] * 4
    for r in records:
        assert "policy" in [s["policy"] for s in r["summaries"]]
        assert r["summaries"][0]["text"] != r["summaries"][1]["text"]


def test_corpus_is_lazy_deterministic_and_mixed():
    world = W.World(2)
    texts = list(world.corpus(200))
    assert texts == list(W.World(2).corpus(200))
    assert list(world.corpus(5, start=100)) == texts[100:105]
    assert all(t.startswith("SUBREDDIT: r/") and "\n\nPOST: " in t for t in texts)
    with_tldr = [(i, t) for i, t in enumerate(texts) if "\n\nTL;DR: " in t]
    assert 140 < len(with_tldr) < 180  # 80% of 200 carry a TL;DR (binomial sd 5.7)
    # ... and none of those TL;DRs states a wrong fact, by the gold judge.
    for i, t in with_tldr:
        tldr = t.split("\n\nTL;DR: ", 1)[1]
        assert W.gold_breakdown(W.make_post(i, "corpus", 2), tldr)["error_list"] == [], tldr
    post = W.make_post(0, "corpus", 2)
    assert texts[0].startswith(f"SUBREDDIT: r/{post.subreddit}\n\nTITLE: {post.title}\n\nPOST: {post.post}")


def test_bad_input_is_a_clear_error():
    for call in (lambda: W.make_post(0, "dev"), lambda: W.post_from_id("t3_abc"),
                 lambda: W.perturb(HAND_POST, "shout", random.Random(0)), lambda: W.World().posts("train", None),
                 lambda: W.Labeler(tau=0), lambda: W.export("unused", references_per_post=0)):
        with pytest.raises(W.SyntheticWorldError):
            call()


# ---- export -------------------------------------------------------------------------------
def test_export_writes_the_openai_formats(tmp_path, capsys):
    main(["--export", str(tmp_path), "--seed", "5", "--n_train", "4", "--n_valid", "3", "--n_test", "2",
            "--n_comparisons", "8"])
    assert "comparisons_valid.jsonl (2 records)" in capsys.readouterr().out
    # train.jsonl: 4 posts x 4 writers' TL;DRs (W.TRAIN_REFERENCES_PER_POST), as SFT on the world trains
    counts = {"train.jsonl": 16, "valid.jsonl": 3, "test.jsonl": 2, "comparisons_train.jsonl": 8,
              "comparisons_valid.jsonl": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(counts)
    for name, count in counts.items():
        records = [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        assert len(records) == count
        for r in records:
            if name.startswith("comparisons"):
                assert set(r) == {"info", "summaries", "choice", "worker", "batch", "split", "extra", "gold_choice"}
                assert set(r["info"]) == {"id", "post", "title", "subreddit"}
                assert [set(s) for s in r["summaries"]] == [{"text", "policy", "note"}] * 2
                assert r["choice"] in (0, 1) and r["gold_choice"] in (0, 1) and 1 <= r["extra"]["confidence"] <= 9
                assert W.post_from_id(r["info"]["id"]).post == r["info"]["post"]
            else:
                assert set(r) == {"id", "subreddit", "title", "post", "summary"}
                post = W.post_from_id(r["id"])
                assert (post.subreddit, post.title, post.post) == (r["subreddit"], r["title"], r["post"])
                if name != "train.jsonl":
                    assert r["summary"] == post.summary
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert train[0]["id"] == "s5-train-000000"
    for i in range(4):  # each post's own reference, then three by other writers, together
        post = W.post_from_id(train[4 * i]["id"])
        assert [r["id"] for r in train[4 * i: 4 * i + 4]] == [post.id] * 4
        assert [r["summary"] for r in train[4 * i: 4 * i + 4]] == [post.summary] + W.other_references(post, 3)
    main(["--export", str(tmp_path / "one"), "--n_train", "2", "--n_valid", "0", "--n_test", "0",
            "--n_comparisons", "0", "--references_per_post", "1"])
    assert len((tmp_path / "one" / "train.jsonl").read_text().splitlines()) == 2


def test_export_into_a_file_is_refused(tmp_path, capsys):
    """The world is written into a directory: a file at that path is a one-line error, and
    the file is left as it was."""
    path = tmp_path / "users.jsonl"
    path.write_text("mine\n")
    for flag in ("--export", "--export_plus"):
        with pytest.raises(SystemExit):
            main([flag, str(path)])
        assert f"{flag} {path}: a file is there; the world is written into a directory" in capsys.readouterr().err
    assert path.read_text() == "mine\n"
