import json
import re

import pytest

from plus.data import DataError, PreferencePair, collate_shared_prompts, group_by_prompt
from plus.preferences import load_preference_pairs, render_chat
from plus.tokenizer import Tokenizer

CORPUS = ["SUBREDDIT: r/cats TITLE: my cat POST: she sleeps all day TL;DR: cat sleeps",
          "Human: hi Assistant: hello there, how can I help", "business academy literature entertainment"] * 4


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, vocab_size=300)


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def reply(tok, text):
    """A response as the policy writes it: leading space, text, EOS."""
    return tok.encode(" " + text) + [tok.eos_id]


def as_tuples(pairs):
    return [(p.prompt, p.chosen, p.rejected, p.margin, p.gold) for p in pairs]


# ---- formats ------------------------------------------------------------------------------

def comparison(choice, a="the cat sleeps", b="a dog barks", **extra):
    return {"info": {"id": "t3_1", "subreddit": "cats", "title": "my cat", "post": "She sleeps all day."},
            "summaries": [{"text": a, "policy": "ref", "note": ""}, {"text": b, "policy": "sft", "note": ""}],
            "choice": choice, "split": "train", **extra}


def test_openai_comparisons(tmp_path, tok):
    path = write_jsonl(tmp_path / "c.jsonl", [comparison(1), comparison(0, b="cats nap")])
    pairs, bad = load_preference_pairs(str(path), tok)
    prompt = tok.encode("SUBREDDIT: r/cats\n\nTITLE: my cat\n\nPOST: She sleeps all day.\n\nTL;DR:")
    assert as_tuples(pairs) == [
        (prompt, reply(tok, "a dog barks"), reply(tok, "the cat sleeps"), 0.0, None),  # choice 1: summaries[1] wins
        (prompt, reply(tok, "the cat sleeps"), reply(tok, "cats nap"), 0.0, None),
    ]
    assert pairs[0].source == f"{path}:1" and pairs[1].source == f"{path}:2"
    assert bad.total == 0


def test_gold_choice_gives_gold_agreement(tmp_path, tok):
    records = [comparison(0, gold_choice=0), comparison(0, gold_choice=1), comparison(1, gold_choice=0.5)]
    pairs, _ = load_preference_pairs(str(write_jsonl(tmp_path / "g.jsonl", records)), tok)
    assert [p.gold for p in pairs] == [1.0, 0.0, 0.5]


def test_generic_jsonl_with_prompt_and_margin(tmp_path, tok):
    records = [{"q": "Say hi.", "good": "hello", "bad": "go away", "m": 1.5},
               {"q": "Name a pet.", "good": "a cat", "bad": "a rock", "m": 0}]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    pairs, _ = load_preference_pairs(str(path), tok, prompt_key="q", chosen_key="good", rejected_key="bad",
                                     margin_key="m")
    assert as_tuples(pairs) == [
        (tok.encode("Say hi."), reply(tok, "hello"), reply(tok, "go away"), 1.5, None),
        (tok.encode("Name a pet."), reply(tok, "a cat"), reply(tok, "a rock"), 0.0, None),
    ]


def test_the_prompt_field_is_prompt_by_default_as_in_sft(tmp_path, tok):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi.", "chosen": "hello", "rejected": "go away"}])
    pairs, _ = load_preference_pairs(str(path), tok)
    assert as_tuples(pairs) == [(tok.encode("Say hi."), reply(tok, "hello"), reply(tok, "go away"), 0.0, None)]


@pytest.mark.parametrize("options, problem", [
    (dict(chosen_key="good"), "missing key 'good' (record has: chosen, prompt, rejected); set --chosen_key"),
    (dict(rejected_key="bad"), "missing key 'bad' (record has: chosen, prompt, rejected); set --rejected_key"),
    (dict(prompt_key="q"), "missing key 'q' (record has: chosen, prompt, rejected); set --prompt_key"),
    (dict(margin_key="m"), "missing key 'm' (record has: chosen, prompt, rejected); set --margin_key"),
])
def test_a_missing_key_names_the_flag_that_names_the_field(tmp_path, tok, options, problem):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi.", "chosen": "hello", "rejected": "go away"}])
    with pytest.raises(DataError) as e:
        load_preference_pairs(str(path), tok, **options)
    assert str(e.value) == f"{path}:1: {problem} {stopped(1, 1)}"


def test_generic_csv_and_json(tmp_path, tok):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text('prompt,chosen,rejected,margin\n"Say hi.",hello,"go, away",0.25\n')
    json_path = tmp_path / "p.json"
    json_path.write_text(json.dumps([{"prompt": "Say hi.", "chosen": "hello", "rejected": "go, away", "margin": 0.25}],
                                    indent=1))
    expected = [(tok.encode("Say hi."), reply(tok, "hello"), reply(tok, "go, away"), 0.25, None)]
    for path in (csv_path, json_path):
        pairs, _ = load_preference_pairs(str(path), tok, prompt_key="prompt", margin_key="margin")
        assert as_tuples(pairs) == expected
        # the CSV header and the "[" are line 1; inside a JSON array the record's number too
        assert pairs[0].source == (f"{path}:2" if path.suffix == ".csv" else f"{path}: record 1 (line 2)")


def test_human_assistant_transcripts(tmp_path, tok):
    shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:"
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": shared + " fine, thanks", "rejected": shared + " go away"}])
    pairs, _ = load_preference_pairs(str(path), tok)
    assert as_tuples(pairs) == [(tok.encode(shared), reply(tok, "fine, thanks"), reply(tok, "go away"), 0.0, None)]


def test_render_chat_by_hand():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    assert render_chat(messages) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                     "<|im_start|>user\nHi!<|im_end|>\n"
                                     "<|im_start|>assistant\n")
    assert render_chat(messages[1:], add_generation_prompt=False) == "<|im_start|>user\nHi!<|im_end|>\n"


def test_chat_messages(tmp_path, tok):
    conversation = [{"role": "user", "content": "Hi!"}]
    records = [
        # conversation inside chosen/rejected, no prompt key (OpenRLHF / HH in message form)
        {"chosen": conversation + [{"role": "assistant", "content": "Hello."}],
         "rejected": conversation + [{"role": "assistant", "content": "Go away."}]},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    pairs, _ = load_preference_pairs(str(path), tok, apply_chat_template=True)
    prompt = tok.encode("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    assert as_tuples(pairs) == [(prompt, reply(tok, "Hello."), reply(tok, "Go away."), 0.0, None)]

    # a string prompt is one user turn; string responses are the replies
    path2 = write_jsonl(tmp_path / "chat2.jsonl", [{"prompt": "Hi!", "chosen": "Hello.", "rejected": "Go away."}])
    pairs2, _ = load_preference_pairs(str(path2), tok, prompt_key="prompt", apply_chat_template=True)
    assert as_tuples(pairs2) == as_tuples(pairs)

    with pytest.raises(DataError, match=rf"^{path}:1: 'chosen' is a list of chat messages; pass apply_chat_template"):
        load_preference_pairs(str(path), tok)


DSP_RECORD = {"query": "How do I save money?",
              "responses": {"academy": "study budgets", "business": "cut costs", "entertainment": "skip movies",
                            "literature": "read Thoreau", "normal": "spend less"}}


def test_dsp_domain_gives_four_pairs(tmp_path, tok):
    path = write_jsonl(tmp_path / "dsp.jsonl", [DSP_RECORD])
    pairs, _ = load_preference_pairs(str(path), tok, domain="business")
    prompt = tok.encode("\n\nHuman: How do I save money?\n\nAssistant:")
    win = reply(tok, "cut costs")
    assert as_tuples(pairs) == [(prompt, win, reply(tok, other), 0.0, None)
                                for other in ["study budgets", "skip movies", "read Thoreau", "spend less"]]
    assert [p.source for p in pairs] == [f"{path}:1: business > {o}"
                                         for o in ["academy", "entertainment", "literature", "normal"]]


def test_dsp_domain_errors(tmp_path, tok):
    path = write_jsonl(tmp_path / "dsp.jsonl", [DSP_RECORD])
    valid = "academy, business, entertainment, literature"
    with pytest.raises(DataError, match=rf"unknown DSP domain 'cooking' \(valid: {valid}\)"):
        load_preference_pairs(str(path), tok, domain="cooking")
    missing = {"query": "q?", "responses": {k: v for k, v in DSP_RECORD["responses"].items() if k != "literature"}}
    path2 = write_jsonl(tmp_path / "dsp2.jsonl", [DSP_RECORD, missing])
    with pytest.raises(DataError, match=rf"^{path2}:2: responses: missing key 'literature' \(record has: academy, "):
        load_preference_pairs(str(path2), tok, domain="academy")
    with pytest.raises(DataError, match=rf"^{path}:1: a DSP record .* needs domain="):
        load_preference_pairs(str(path), tok)


def test_dsp_text_score_lists_give_ranking_pairs(tmp_path, tok):
    p = "\n\nHuman: Save money?\n\nAssistant:"
    record = {"text": [p + " cut costs", p + " spend less", p + " read Thoreau"], "score": [2, 0, 1]}
    pairs, _ = load_preference_pairs(str(write_jsonl(tmp_path / "s.jsonl", [record])), tok)
    # ranking_pairs([2, 0, 1]) = (0, 1), (0, 2), (2, 1)
    a, b, c = reply(tok, "cut costs"), reply(tok, "spend less"), reply(tok, "read Thoreau")
    prompt = tok.encode(p)
    assert as_tuples(pairs) == [(prompt, a, b, 0.0, None), (prompt, a, c, 0.0, None), (prompt, c, b, 0.0, None)]


def test_n_caps_the_pairs(tmp_path, tok):
    path = write_jsonl(tmp_path / "dsp.jsonl", [DSP_RECORD, DSP_RECORD])
    pairs, _ = load_preference_pairs(str(path), tok, domain="literature", n=3)
    assert len(pairs) == 3


# ---- bad input: file:line, or skipped and counted ------------------------------------------

GOOD = {"prompt": "Say hi.", "chosen": "hello", "rejected": "go away"}
BAD = {
    "invalid JSON": '{"prompt": "Say hi.", "chosen": ',
    "missing key 'rejected' (record has: chosen, prompt)": {"prompt": "Say hi.", "chosen": "hello"},
    "'chosen' is empty": {**GOOD, "chosen": "   "},
    "'rejected' should be a string or a list of chat messages, got int": {**GOOD, "rejected": 3},
    "chosen and rejected responses are identical": {**GOOD, "rejected": "hello"},
}


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_record_reports_file_and_line(tmp_path, tok, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, BAD[problem], GOOD])
    with pytest.raises(DataError) as e:
        load_preference_pairs(str(path), tok, prompt_key="prompt")
    assert str(e.value).startswith(f"{path}:3: {problem}")


def stopped(n_bad: int, n_records: int) -> str:
    """The end of the error that stops a run on a file: the whole file was read first."""
    return f"({n_bad} of the file's {n_records} records are bad; --on_bad_record skip leaves them out)"


def test_bad_margin(tmp_path, tok):
    path = write_jsonl(tmp_path / "m.jsonl", [{**GOOD, "m": 1}, {**GOOD, "m": "lots"}, {**GOOD, "m": True}])
    with pytest.raises(DataError, match=rf"^{path}:2: 'm' should be a number, got 'lots' {re.escape(stopped(2, 3))}$"):
        load_preference_pairs(str(path), tok, prompt_key="prompt", margin_key="m")
    pairs, bad = load_preference_pairs(str(path), tok, prompt_key="prompt", margin_key="m", on_bad_record="skip")
    assert [p.margin for p in pairs] == [1.0] and bad.total == 2


def test_undecodable_bytes(tmp_path, tok):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n").encode() + b'{"prompt": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: undecodable bytes"):
        load_preference_pairs(str(path), tok, prompt_key="prompt")


def test_skip_counts_bad_records(tmp_path, tok):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(GOOD)] + [b if isinstance(b, str) else json.dumps(b) for b in BAD.values()]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"prompt": "\xff"}\n' + json.dumps(GOOD).encode() + b"\n")
    pairs, bad = load_preference_pairs(str(path), tok, prompt_key="prompt", on_bad_record="skip")
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:8"]
    assert bad.total == 6  # the five BAD cases and the bytes
    assert bad.skipped["undecodable bytes (not UTF-8)"] == 1
    assert bad.skipped["chosen and rejected responses are identical"] == 1


TRANSCRIPT_BAD = {
    "'chosen': no '\\n\\nAssistant:' (or '## Assistant:') to split the prompt from the response, and no 'prompt' "
    "field (--prompt_key names another)":
        {"chosen": "no cue here", "rejected": "\n\nHuman: a\n\nAssistant: b"},
    "chosen and rejected have different conversations before the last '\\n\\nAssistant:'":
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: X\n\nAssistant: c"},
    "the rejected response is empty":
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant:  "},
}


@pytest.mark.parametrize("problem", list(TRANSCRIPT_BAD))
def test_transcript_errors(tmp_path, tok, problem):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    path = write_jsonl(tmp_path / "hh.jsonl", [good, TRANSCRIPT_BAD[problem]])
    with pytest.raises(DataError) as e:
        load_preference_pairs(str(path), tok)
    assert str(e.value) == f"{path}:2: {problem} {stopped(1, 2)}"
    pairs, bad = load_preference_pairs(str(path), tok, on_bad_record="skip")
    assert len(pairs) == 1 and dict(bad.skipped) == {problem: 1}


# ---- collation --------------------------------------------------------------------------

def test_shared_prompt_batch_layout_by_hand():
    # Three comparisons of one post among responses a, b, c (a chosen twice), one of another.
    a, b, c, d, e = [7, 2], [8, 2], [9, 9, 2], [4, 2], [5, 2]
    pairs = [PreferencePair([1, 1], a, b), PreferencePair([3], d, e), PreferencePair([1, 1], a, c),
             PreferencePair([1, 1], c, b, margin=0.5)]
    batch = collate_shared_prompts(pairs, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 1, 7, 2, 9, 9, 2, 8, 2], [3, 4, 2, 5, 2, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 1, 2, 2, 2, 3, 3], [0, 1, 1, 2, 2, -1, -1, -1, -1]]
    # responses in order of first use: a, d, c (chosen), then b, e
    assert batch["read_at"].tolist() == [[0, 3], [1, 2], [0, 6], [0, 8], [1, 4]]
    assert batch["chosen"].tolist() == [0, 1, 0, 2] and batch["rejected"].tolist() == [3, 4, 2, 3]
    assert batch["margin"].tolist() == [0.0, 0.0, 0.0, 0.5]
    # Every response token, responses in that order (a, d, c, b, e); the first token of
    # each is predicted at its prompt's last column, the others at the token before.
    assert batch["response_at"].tolist() == [[0, 1], [0, 2], [1, 0], [1, 1], [0, 1], [0, 4], [0, 5],
                                             [0, 1], [0, 7], [1, 0], [1, 3]]
    assert batch["response_ids"].tolist() == [7, 2, 4, 2, 9, 9, 2, 8, 2, 5, 2]
    assert batch["response_owner"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert batch["times_chosen"].tolist() == [2, 1, 1, 0, 0]  # a twice, d and c once
    assert group_by_prompt(pairs) == [[0, 2, 3], [1]]


# ---- the built-in world -------------------------------------------------------------------

def test_synthetic_comparisons(tok):
    synthetic = pytest.importorskip("plus.world")
    # The test tokenizer is nearly byte-level: allow long prompts and responses (no truncation).
    pairs, _ = load_preference_pairs("synthetic", tok, split="train", n=6, seed=3, prompt_max_len=10_000,
                                     generate_max_len=1000)
    records = synthetic.make_comparisons(synthetic.World(3), "train", 6, seed=3)
    assert len(pairs) == len(records) == 6
    for pair, r in zip(pairs, records):
        texts = [s["text"] for s in r["summaries"]]
        assert pair.chosen == tok.encode(" " + texts[r["choice"]].strip()) + [tok.eos_id]
        assert pair.rejected == tok.encode(" " + texts[1 - r["choice"]].strip()) + [tok.eos_id]
        info = r["info"]
        assert pair.prompt == tok.encode(f"SUBREDDIT: r/{info['subreddit']}\n\nTITLE: {info['title']}\n\n"
                                         f"POST: {info['post']}\n\nTL;DR:")
        expected_gold = 0.5 if r["gold_choice"] == 0.5 else float(r["gold_choice"] == r["choice"])
        assert pair.gold == expected_gold


COMPARISON_BAD = {
    "'choice' should be 0 or 1, got 2": comparison(2),
    "'choice' should be 0 or 1, got True": comparison(True),
    "'summaries' should be a list of two objects": {**comparison(0), "summaries": [{"text": "x"}]},
    "summaries[1]: 'text' is empty": comparison(0, b=""),
    "info: missing key 'post' (record has: id, subreddit, title)": {
        **comparison(0), "info": {"id": "t3_1", "subreddit": "cats", "title": "my cat"}},
    "chosen and rejected responses are identical": comparison(1, b="the cat sleeps"),
}


@pytest.mark.parametrize("problem", list(COMPARISON_BAD))
def test_bad_comparison_record(tmp_path, tok, problem):
    path = write_jsonl(tmp_path / "c.jsonl", [comparison(0), COMPARISON_BAD[problem]])
    with pytest.raises(DataError) as e:
        load_preference_pairs(str(path), tok)
    assert str(e.value) == f"{path}:2: {problem} {stopped(1, 2)}"


def test_bad_chat_records(tmp_path, tok):
    hi = [{"role": "user", "content": "Hi!"}]
    hello = hi + [{"role": "assistant", "content": "Hello."}]
    cases = {
        "the last message of 'rejected' should be from 'assistant', got 'user'":
            {"chosen": hello, "rejected": hi + [{"role": "user", "content": "?"}]},
        "chosen and rejected differ before their final reply":
            {"chosen": hello, "rejected": [{"role": "assistant", "content": "No."}]},
        "no prompt: pass prompt_key, or put the conversation before the reply in chosen/rejected":
            {"chosen": "Hello.", "rejected": "No."},
        "chosen[0] should be an object with string 'role' and 'content'":
            {"chosen": [{"role": "assistant"}], "rejected": "No."},
    }
    for problem, record in cases.items():
        good = {"chosen": hello, "rejected": hi + [{"role": "assistant", "content": "No."}]}
        path = write_jsonl(tmp_path / "chat.jsonl", [good, record])
        with pytest.raises(DataError) as e:
            load_preference_pairs(str(path), tok, apply_chat_template=True)
        assert str(e.value) == f"{path}:2: {problem} {stopped(1, 2)}"


def test_a_json_array_on_one_line_names_records_and_counts_them_all(tmp_path, tok):
    """json.dump's usual output: every record on line 1. The error names the record by its
    number, after the whole file is read, with the count of bad ones; skip lists them."""
    records = [GOOD, {**GOOD, "rejected": ""}, GOOD, {**GOOD, "chosen": GOOD["rejected"]}, GOOD]
    path = tmp_path / "one_line.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as e:
        load_preference_pairs(str(path), tok, prompt_key="prompt")
    assert str(e.value) == f"{path}: record 2 (line 1): 'rejected' is empty {stopped(2, 5)}"
    pairs, bad = load_preference_pairs(str(path), tok, prompt_key="prompt", on_bad_record="skip")
    assert [p.source for p in pairs] == [f"{path}: record {i} (line 1)" for i in (1, 3, 5)]
    assert bad.total == 2 and bad.locations == [f"{path}: record 2 (line 1): 'rejected' is empty",
                                                f"{path}: record 4 (line 1): chosen and rejected responses are identical"]
    assert bad.summary().startswith("skipped 2 bad records (1 x 'rejected' is empty; 1 x chosen and rejected")


@pytest.mark.parametrize("text, prompt, reply", [
    ("\n\nHuman: hi\n\nAssistant: hello", "\n\nHuman: hi\n\nAssistant:", " hello"),
    ("Human: hi\n\nAssistant: hello", "Human: hi\n\nAssistant:", " hello"),        # no blank line before Human
    ("Human: hi\nAssistant: hello", "Human: hi\nAssistant:", " hello"),            # one newline
    ("## Human: hi\n\n## Assistant: hello", "## Human: hi\n\n## Assistant:", " hello"),
    ("Human: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d", "Human: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", " d"),
    ("Human: who is the Assistant: here?\n\nAssistant: me", "Human: who is the Assistant: here?\n\nAssistant:", " me"),
])
def test_transcript_cue_spellings(text, prompt, reply):
    """The last assistant cue at a line start splits the prompt from the reply, whatever its
    spelling; a cue inside a sentence is not one."""
    from plus.preferences import split_transcript

    assert split_transcript(text, "f:1") == (prompt, reply)
