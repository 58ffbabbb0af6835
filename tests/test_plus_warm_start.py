"""The self-description corpus (plus/world/users.py), the summarizer's warm start on it and
the reward model's grounding on it (plus/plus_trainer.py): documents checked against the
gold judge and the judge of z, the warm start's loss against log-probabilities computed by
hand from the logits, the grounding's pairs against the documents' text and its loss
against rewards computed one sequence at a time."""

import math

import torch

from plus import plus_trainer
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer
from plus.world import ATTRIBUTES, AXES, SUMMARY_MARKER, gold_score, stated_attributes
from plus.world.labelers import LABELER_TAU
from plus.world.personas import opposite
from plus.world.users import pole_document, self_description_document, self_description_documents


def test_documents_state_every_pole_of_the_persona_after_telling_choices():
    sizes = set()
    for i in range(12):
        doc = self_description_document(i, seed=3)
        assert doc == self_description_document(i, seed=3)  # regenerates from (seed, index)
        sizes.add(len(doc.persona.attributes))
        context, words = doc.text.rsplit(SUMMARY_MARKER, 1)
        # the words are the attributes' own sentences in AXES order, and the judge of z
        # reads exactly the persona's poles in them, nothing else
        assert words.strip() == " ".join(ATTRIBUTES[a].sentence for a in doc.persona.attributes)
        assert stated_attributes(words) == {axis: {p for p in doc.persona.attributes if p in poles}
                                            for axis, poles in AXES.items()}
        assert 2 <= len(doc.context) <= 4 and context.endswith("What I want from a TL;DR: ")
        for c in doc.context:
            mine = [gold_score(c.post, s, doc.persona.weights) for s in c.summaries]
            flipped = [gold_score(c.post, s, opposite(doc.persona).weights) for s in c.summaries]
            assert (mine[0] > mine[1]) != (flipped[0] > flipped[1])  # contested with the flipped persona
            assert c.gold_choice == (0 if mine[0] > mine[1] else 1)
            assert f"I chose: {c.summaries[c.choice]}\nOver: {c.summaries[1 - c.choice]}" in context
            assert c.post.id.split("-")[1] == "corpus"
    assert sizes == {1, 2, 3}  # one to three poles
    assert self_description_documents(3, start=2, seed=3) == [self_description_document(i, 3).text for i in (2, 3, 4)]


def test_pole_documents_hold_one_pole_and_one_choice_of_the_wanted_class():
    """A contested pole document's pair is ranked one way by the pole's gold judge and the
    other way by the opposite pole's; a shared one's alike by both; recomputed here from
    the judge."""
    seen = set()
    for axis in AXES:
        for contested in (True, False):
            for i in range(6):
                doc = pole_document(i, axis, contested, seed=3)
                assert doc == pole_document(i, axis, contested, seed=3)  # regenerates from its coordinates
                (pole,) = doc.persona.attributes
                seen.add(pole)
                assert pole in AXES[axis] and len(doc.context) == 1
                (c,) = doc.context
                mine = [gold_score(c.post, s, doc.persona.weights) for s in c.summaries]
                other = [gold_score(c.post, s, opposite(doc.persona).weights) for s in c.summaries]
                assert ((mine[0] > mine[1]) != (other[0] > other[1])) is contested and c.contested is contested
                assert c.gold_choice == (0 if mine[0] > mine[1] else 1)
                assert doc.text.endswith(f"{SUMMARY_MARKER} {ATTRIBUTES[pole].sentence}")
                assert f"I chose: {c.summaries[c.choice]}\nOver: {c.summaries[1 - c.choice]}" in doc.text
                assert c.post.id.split("-")[1] == "corpus"
    assert seen == {p for poles in AXES.values() for p in poles}  # both poles of every axis occur
    assert pole_document(0, "content", True) != pole_document(0, "content", False)


def test_mixed_grounding_takes_its_sources_in_turn():
    """The schedule ("corpus", content contested, "corpus", length shared) over 7 pairs:
    corpus comparisons 0, 1, 2 from document 4 on (a document gives 2-4), content pole
    documents 0 and 1, length shared pole documents 0 and 1, in that order."""
    tokenizer = grounding_tokenizer()
    schedule = ("corpus", ("content", True), "corpus", ("length", False))
    pairs, next_document = plus_trainer.mixed_grounding_pairs(tokenizer, schedule, 7, first_document=4, seed=0,
                                                              prompt_max_len=200, response_max_len=48)

    def of(docs):
        return plus_trainer.grounding_pairs(tokenizer, docs, 200, 48)

    corpus = of([self_description_document(4), self_description_document(5)])
    expected = [corpus[0], of([pole_document(0, "content", True)])[0], corpus[1],
                of([pole_document(0, "length", False)])[0], corpus[2], of([pole_document(1, "content", True)])[0],
                corpus[3]]
    assert pairs == expected
    assert next_document == (5 if len(self_description_document(4).context) >= 4 else 6)


def test_a_mixed_draw_from_a_position_continues_with_new_one_pole_people():
    """From position 6 of the same schedule, 5 pairs: the schedule's turn goes on at its
    position 6 (content contested, corpus, length shared, ...), the one-pole people go on
    where 6 positions left them (content and length shared pole documents 2 and 1 next),
    the corpus from first_document."""
    tokenizer = grounding_tokenizer()
    schedule = ("corpus", ("content", True), "corpus", ("length", False))

    def of(docs):
        return plus_trainer.grounding_pairs(tokenizer, docs, 200, 48)

    pairs, _ = plus_trainer.mixed_grounding_pairs(tokenizer, schedule, 5, first_document=9, seed=0,
                                                  prompt_max_len=200, response_max_len=48, start=6)
    corpus = of([self_description_document(9), self_description_document(10)])
    # positions 6..10: corpus, length shared, corpus, content contested, corpus
    assert pairs == [corpus[0], of([pole_document(1, "length", False)])[0], corpus[1],
                     of([pole_document(2, "content", True)])[0], corpus[2]]


def test_interleaved_minibatches_by_hand():
    assert plus_trainer.interleave_minibatches([1, 2, 3, 4, 5], ["a", "b", "c"], 2) == [1, 2, "a", "b", 3, 4, "c", 5]
    assert plus_trainer.interleave_minibatches([1, 2], ["a", "b", "c", "d", "e"], 2) == [1, 2, "a", "b", "c", "d", "e"]
    assert plus_trainer.interleave_minibatches([1, 2, 3], [], 2) == [1, 2, 3]


def test_opposite_flips_every_pole():
    from plus.world import Persona
    assert opposite(Persona(("brief", "numbers", "casual"))).attributes == ("thorough", "feelings", "formal")
    assert opposite(Persona(("formal",))).attributes == ("casual",)


def test_flipped_flips_one_axis_and_keeps_the_others():
    from plus.world import Persona, flipped
    assert flipped(Persona(("brief", "feelings", "formal")), "content").attributes == ("brief", "numbers", "formal")
    assert flipped(Persona(("thorough", "casual")), "length").attributes == ("brief", "casual")
    assert flipped(Persona(("feelings",)), "register").attributes == ("feelings",)  # no pole of that axis


def test_labelers_of_documents_choose_at_the_persona_rate():
    """The choices follow the persona's labeler: over many documents, the share that agree
    with the gold choice matches the mean of sigmoid(|gap| / tau) within 4 standard errors."""
    docs = [self_description_document(i) for i in range(60)]
    pairs = [c for d in docs for c in d.context]
    agree = sum(c.choice == c.gold_choice for c in pairs)
    expected = sum(1 / (1 + math.exp(-abs(c.scores[0] - c.scores[1]) / LABELER_TAU)) for c in pairs)
    var = sum(p * (1 - p) for p in (1 / (1 + math.exp(-abs(c.scores[0] - c.scores[1]) / LABELER_TAU))
                                    for c in pairs))
    assert abs(agree - expected) <= 4 * math.sqrt(var)


def test_warm_start_loss_is_the_mean_log_loss_of_the_words_after_the_marker():
    texts = ["I chose: short one\nOver: a much longer one\n\nWhat I want: ##Summary Keep it short.",
             "I chose: 3 years\n\nWhat I want: ##Summary Give me the numbers."]
    tokenizer = Tokenizer.train(texts * 20, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=16))
    # by hand: -log p of " words" + EOS given the text up to the marker, over both documents
    total, count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            cut = t.rindex(SUMMARY_MARKER) + len(SUMMARY_MARKER)
            prompt, target = tokenizer.encode(t[:cut]), tokenizer.encode(" " + t[cut:].strip()) + [tokenizer.eos_id]
            ids = torch.tensor([prompt + target])
            logp = torch.log_softmax(model.logits(model(ids))[0].double(), -1)
            for j, tok in enumerate(target):
                total -= float(logp[len(prompt) - 1 + j, tok])
                count += 1
    out = plus_trainer.warm_start(model, tokenizer, texts, steps=1, batch_size=2, learning_rate=0.0,
                                  prompt_max_len=80, response_max_len=16, device="cpu")
    # float32 forward over ~40 positions: per-token log-probs agree to ~1e-6 relative
    assert math.isclose(out["warm_start_loss"], total / count, rel_tol=1e-5, abs_tol=1e-5)
    assert out["warm_start_documents"] == 2


# ---- the reward model's grounding on the same corpus --------------------------------------------
def grounding_tokenizer():
    docs = [self_description_document(i).text for i in range(40)]
    return Tokenizer.train(docs + [plus_trainer.PREFERENCE_CUE.format(z="x")], vocab_size=600, min_frequency=1)


def test_grounding_pairs_read_each_recorded_choice_with_its_choosers_own_words():
    tokenizer = grounding_tokenizer()
    docs = [self_description_document(i) for i in range(5)]
    pairs = plus_trainer.grounding_pairs(tokenizer, docs, prompt_max_len=10_000, response_max_len=10_000)
    assert len(pairs) == sum(len(d.context) for d in docs)
    at = 0
    for doc in docs:
        words = doc.text.rsplit(SUMMARY_MARKER, 1)[1].strip()  # what the writer says they want
        for c in doc.context:
            pair = pairs[at]
            at += 1
            prompt = tokenizer.decode(pair.prompt)
            assert prompt.startswith(plus_trainer.PREFERENCE_CUE.format(z=words)) and prompt.endswith(c.post.query())
            chosen, rejected = (tokenizer.decode([t for t in ids if t != tokenizer.eos_id]).strip()
                                for ids in (pair.chosen, pair.rejected))
            # the choice the document shows its reader, as the document renders it
            assert f"I chose: {chosen}\nOver: {rejected}" in doc.text
    assert at == len(pairs)


def test_grounding_reports_the_mean_bradley_terry_loss_and_accuracy_by_hand():
    """At learning rate 0 the model does not move, so the pass's loss is the mean of
    -log sigma(r_chosen - r_rejected) over the pairs it used (whole minibatches: 4 of 2),
    each reward computed here from its own unpadded sequence."""
    from plus.reward_head import RewardModel

    tokenizer = grounding_tokenizer()
    torch.manual_seed(0)
    model = RewardModel.from_gpt(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2,
                                               n_embd=16)))
    pairs = plus_trainer.grounding_pairs(tokenizer, [self_description_document(i) for i in range(3)], 200, 48)
    assert len(pairs) >= 9
    out = plus_trainer.ground_reward_model(model, pairs[:9], pad_id=tokenizer.pad_id, batch_size=2,
                                           learning_rate=0.0, max_grad_norm=1.0, device="cpu")
    losses, hits = [], []
    with torch.no_grad():
        for p in pairs[:8]:  # the ninth is a minibatch's remainder, never used
            r_chosen, r_rejected = (float(model(torch.tensor([p.prompt + ids]), torch.ones(1, len(p.prompt + ids)))[0])
                                    for ids in (p.chosen, p.rejected))
            losses.append(-math.log(1 / (1 + math.exp(-(r_chosen - r_rejected)))))
            hits.append(1.0 if r_chosen > r_rejected else 0.0)
    assert out["grounding_pairs"] == 8
    # float32 forwards of ~250 positions, packed (prompt once) against unpadded: rewards
    # agree to ~1e-6, the loss likewise
    assert math.isclose(out["grounding_loss"], sum(losses) / 8, rel_tol=1e-5, abs_tol=1e-5)
    assert out["grounding_accuracy"] == sum(hits) / 8
