import argparse
import json

from plus.preferences import load_preference_pairs
from plus.preference_flags import add_preference_args, preference_options
from plus.tokenizer import Tokenizer


def parse(argv):
    """A parser like an entry point's: the preference flags and the caller's own four."""
    p = argparse.ArgumentParser()
    p.add_argument("--prompt_max_len", type=int, default=200)
    p.add_argument("--generate_max_len", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on_bad_record", choices=("error", "skip"), default="error")
    add_preference_args(p)
    return p.parse_args(argv)


def test_file_options_name_the_fields_with_defaults():
    args = parse(["--prompt_key", "question", "--margin_key", "m", "--prompt_max_len", "64"])
    assert preference_options(args, "prefs.jsonl") == dict(
        prompt_max_len=64, generate_max_len=48, seed=0, on_bad_record="error", prompt_key="question",
        chosen_key="chosen", rejected_key="rejected", margin_key="m", apply_chat_template=False, domain=None)


def test_world_ignores_the_key_flags_and_skips_bad_pairs():
    args = parse(["--chosen_key", "good", "--domain", "academy", "--seed", "3"])
    assert preference_options(args, "synthetic") == dict(prompt_max_len=200, generate_max_len=48, seed=3,
                                                         on_bad_record="skip")


def test_options_read_a_file_by_its_flags(tmp_path):
    tok = Tokenizer.train(["what is two plus two four five"] * 4, vocab_size=280)
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"q": "what is two plus two", "good": "four", "bad": "five"}) + "\n")
    args = parse(["--prompt_key", "q", "--chosen_key", "good", "--rejected_key", "bad"])
    (pair,), _ = load_preference_pairs(str(path), tok, **preference_options(args, str(path)))
    assert pair.chosen == tok.encode(" four") + [tok.eos_id]
    assert pair.rejected == tok.encode(" five") + [tok.eos_id]
