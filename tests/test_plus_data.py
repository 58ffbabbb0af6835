"""PLUS records (plus/data.py): every field read, bad records located exactly, and a world
user exported (plus/world/export.py) and read back equal to the user."""

import json

import pytest

from plus.data import DataError, PLUS_TEXT_FIELDS, load_plus_records, parse_query
from plus.world import context_messages, context_text, make_user
from plus.world.export import export_plus, user_records

MESSAGES = [{"role": "user", "content": "Which do you prefer?"}, {"role": "assistant", "content": "A or B"},
            {"role": "user", "content": "I prefer A. Start your response with ##Summary"}]


def record(**changes):
    r = {"context": "I chose: a\nOver: b\n\nWhat I want from a TL;DR: ##Summary",
         "context_messages": MESSAGES,
         "reward_prompt": "rp", "chosen": "c", "rejected": "r",
         "train_prompt": "tp", "train_chosen": "tc", "train_rejected": "tr",
         "eval_prompt": "ep", "eval_chosen": "ec", "eval_rejected": "er"}
    r.update(changes)
    return {k: v for k, v in r.items() if v is not None}


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_every_field_is_read(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [record(), record(user_id="u7", persona="brief+formal")])
    records, bad = load_plus_records(path)
    assert bad.total == 0 and len(records) == 2
    r = records[0]
    assert (r.context, r.reward_prompt, r.chosen, r.rejected, r.train_prompt, r.train_chosen, r.train_rejected,
            r.eval_prompt, r.eval_chosen, r.eval_rejected) == (record()["context"], "rp", "c", "r", "tp", "tc", "tr",
                                                              "ep", "ec", "er")
    assert r.context_messages == MESSAGES and r.user_id == "" and r.persona == "" and r.source == f"{path}:1"
    assert (records[1].user_id, records[1].persona) == ("u7", "brief+formal")
    assert r.eval_contested is None and load_plus_records(
        write_jsonl(tmp_path / "c.jsonl", [record(eval_contested=False)]))[0][0].eval_contested is False


def test_a_json_array_reads_the_same(tmp_path):
    path = tmp_path / "p.json"
    text = json.dumps([record(), record(chosen="c2")], indent=1)
    path.write_text(text)
    records, _ = load_plus_records(path)
    second = text.splitlines().index(" {", 2) + 1  # the line the second record starts on
    assert [r.chosen for r in records] == ["c", "c2"] and records[1].source == f"{path}: record 2 (line {second})"


@pytest.mark.parametrize("bad_record, problem", [
    (record(eval_chosen=None), "missing key 'eval_chosen' (record has: chosen, context, context_messages, "
                               "eval_prompt, eval_rejected, rejected, reward_prompt, train_chosen, train_prompt, "
                               "train_rejected)"),
    (record(train_prompt=3), "'train_prompt' should be a string, got int"),
    (record(context="  "), "'context' is empty"),
    (record(context_messages="hi"), "'context_messages' should be a list, got str"),
    (record(context_messages=[]), "'context_messages' is empty"),
    (record(context_messages=[{"role": "user"}]), "context_messages[0] should be an object with string 'role' "
                                                  "and 'content'"),
    (record(train_rejected="tc"), "'train_chosen' and 'train_rejected' are identical"),
    (record(user_id=""), "'user_id' is empty"),
    (record(eval_contested="yes"), "'eval_contested' should be a bool, got str"),
    (record(persona="pet lover"), "'persona': a persona needs known attributes, got ['pet lover'] (valid: brief, "
                                  "thorough, feelings, numbers, formal, casual)"),
])
def test_bad_records_name_file_line_and_problem(tmp_path, bad_record, problem):
    path = write_jsonl(tmp_path / "p.jsonl", [record(), bad_record, "{not json"])
    with pytest.raises(DataError) as e:
        load_plus_records(path)
    assert str(e.value) == (f"{path}:2: {problem} (2 of the file's 3 records are bad; "
                            "--on_bad_record skip leaves them out)")
    records, bad = load_plus_records(path, on_bad_record="skip")
    assert len(records) == 1 and bad.total == 2 and bad.locations == [f"{path}:2: {problem}",
                                                                      f"{path}:3: invalid JSON (Expecting property "
                                                                      "name enclosed in double quotes)"]


def test_a_world_user_exported_and_read_back_is_the_user(tmp_path):
    written = export_plus(tmp_path, "p2", n_train=1, n_new=1)
    assert written == {"p2_train.jsonl": 2, "p2_valid.jsonl": 2, "p2_test.jsonl": 2}
    for split in ("train", "test"):
        user = make_user("p2", 0, split)
        records, _ = load_plus_records(tmp_path / f"p2_{split}.jsonl")
        assert [r.user_id for r in records] == [user.id] * 2
        for k, r in enumerate(records):
            assert r.persona == user.persona.name
            assert r.context == context_text(user.context) and r.context_messages == context_messages(user.context)
            train, held = user.held_out[k], user.held_out[2 + k]
            assert r.reward_prompt == r.train_prompt == train.post.query()
            assert (r.chosen, r.rejected) == (r.train_chosen, r.train_rejected) == (
                train.summaries[train.choice], train.summaries[1 - train.choice])  # the labeler's choice
            assert r.eval_prompt == held.post.query()
            assert (r.eval_chosen, r.eval_rejected) == (held.summaries[held.gold_choice],
                                                        held.summaries[1 - held.gold_choice])  # the gold choice
            assert r.eval_contested is held.contested is True  # p2: contested pairs only
        assert [json.loads(line) for line in (tmp_path / f"p2_{split}.jsonl").read_text().splitlines()] == \
            user_records(user)


def test_parse_query():
    assert parse_query("SUBREDDIT: r/cats\n\nTITLE: my cat\n\nPOST: she sleeps.\n\nall day\n\nTL;DR:") == (
        "cats", "my cat", "she sleeps.\n\nall day")
    assert parse_query("Write a TL;DR:") is None
    assert set(PLUS_TEXT_FIELDS) | {"context_messages"} == set(record())


def test_a_plus_csv_is_refused_by_name(tmp_path):
    """context_messages is a list, which a CSV cell cannot hold: the reader says so."""
    path = tmp_path / "p.csv"
    path.write_text("context,chosen\nc,a\n")
    with pytest.raises(DataError) as e:
        load_plus_records(path)
    assert str(e.value) == (f"{path}: a PLUS file is .jsonl or .json (its context_messages is a list of messages, "
                            "which a CSV cell does not hold)")
