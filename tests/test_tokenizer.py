"""Tests for plus/tokenizer.py: exact round trips, special tokens, save/load, hand-checked merges."""

import random

import pytest
import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, trainers

from plus.tokenizer import EOS_TOKEN, PAD_TOKEN, Tokenizer, TokenizerError

CORPUS = [
    "SUBREDDIT: r/relationships\n\nTITLE: My boyfriend forgot our anniversary\n\nPOST: We have been together "
    f"for {i} years and he forgot again. TL;DR: he forgot, I am sad."
    for i in range(200)
] + ["the cat sat on the mat", "héllo wörld ☕", "日本語のテキスト"] * 20

TRICKY = [
    "",
    " ",
    "  leading and trailing  ",
    "\n",
    "line one\nline two\r\nline three\r",
    "\ttabs\tand  spaces \t\n",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇯🇵",
    "中文字符 日本語 한국어",
    "combining: e\u0301 a\u0308 (not NFC-normalized) vs \u00e9",
    "zero width\u200bjoiner\u200d and BOM \ufeff",
    "\x00 nul and \x7f del",
    EOS_TOKEN,
    f"text {EOS_TOKEN} inside{PAD_TOKEN}and{EOS_TOKEN}{EOS_TOKEN}",
    "<|endoftext",
    "TL;DR:",
    "'s 've 're it's don't",
    "    code\n        indented\n",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(CORPUS, vocab_size=400)


def _random_unicode(rng: random.Random, length: int) -> str:
    # Any code point except the surrogates, which are not valid in UTF-8 at all.
    chars = []
    while len(chars) < length:
        cp = rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0x3000), rng.randrange(0, 0x110000)])
        if not 0xD800 <= cp <= 0xDFFF:
            chars.append(chr(cp))
    return "".join(chars)


def _backend_without_pad(special_tokens: list[str]) -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(["hello world"] * 5, trainer)
    return backend


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_round_trip_random_unicode(tok):
    rng = random.Random(0)
    texts = [_random_unicode(rng, rng.randrange(0, 40)) for _ in range(300)]
    assert [tok.decode(tok.encode(t)) for t in texts] == texts
    batch_ids = tok.encode_batch(texts)
    assert batch_ids == [tok.encode(t) for t in texts]
    assert tok.decode_batch(batch_ids) == texts


def test_special_token_text_is_never_a_special_id(tok):
    ids = tok.encode(f"a{EOS_TOKEN}b{PAD_TOKEN}c")
    assert tok.eos_id not in ids and tok.pad_id not in ids
    # The literal text takes several ordinary tokens.
    assert len(tok.encode(EOS_TOKEN)) > 1


def test_special_ids(tok):
    assert tok.eos_id != tok.pad_id
    assert (tok.eos_id, tok.pad_id) == (0, 1)  # listed first to the trainer
    assert tok.decode([tok.eos_id], skip_special_tokens=False) == EOS_TOKEN
    assert tok.decode([tok.pad_id], skip_special_tokens=False) == PAD_TOKEN
    body = tok.encode("the cat")
    ids = body + [tok.eos_id, tok.pad_id, tok.pad_id]
    assert tok.decode(ids) == "the cat"
    assert tok.decode(ids, skip_special_tokens=False) == f"the cat{EOS_TOKEN}{PAD_TOKEN}{PAD_TOKEN}"
    # Tensors are accepted too, one row or a batch.
    assert tok.decode(torch.tensor(ids)) == "the cat"
    assert tok.decode_batch(torch.tensor([ids, ids])) == ["the cat", "the cat"]
    assert tok.token_id(EOS_TOKEN) == tok.eos_id
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tok.token_id("<|im_start|>")


def test_vocab_size_and_full_byte_alphabet(tok):
    assert tok.vocab_size == 400
    # Every single byte is its own token: a byte never seen in training still encodes to one id.
    assert len(tok.encode("\x01")) == 1
    assert max(tok.encode("".join(chr(c) for c in range(0x20, 0x7F)) + "🦙")) < tok.vocab_size


def test_hand_checked_merges():
    # Each "aaaa" has three overlapping (a, a) pairs and nothing else, so the first
    # merge is a+a -> "aa". With 2 special + 256 byte tokens, vocab_size=259 allows
    # exactly that one merge: "aaaa" -> [aa, aa] and "aaaaa" -> [aa, aa, a].
    one_merge = Tokenizer.train(["aaaa"] * 10, vocab_size=259)
    aa = one_merge.token_id("aa")
    a = one_merge.token_id("a")
    assert one_merge.encode("aaaa") == [aa, aa]
    assert one_merge.encode("aaaaa") == [aa, aa, a]
    # After re-segmenting, every word is [aa, aa]: the next merge is aa+aa -> "aaaa".
    two_merges = Tokenizer.train(["aaaa"] * 10, vocab_size=260)
    assert two_merges.encode("aaaa") == [two_merges.token_id("aaaa")]
    assert two_merges.encode("aaaaa") == [two_merges.token_id("aaaa"), two_merges.token_id("a")]


def test_frequent_word_is_one_token(tok):
    # " forgot" occurs 400 times in CORPUS; with the space it is one pre-token, so
    # BPE merges it into a single vocabulary entry ("Ġ" is the byte-level space).
    assert tok.encode(" forgot") == [tok.token_id("Ġforgot")]
    assert tok.encode(" forgot forgot") == [tok.token_id("Ġforgot")] * 2
    # Without the space it is a different, never-seen word: several tokens.
    assert len(tok.encode("forgot")) > 1


def test_min_frequency_blocks_rare_merges():
    # "xy" occurs once: below min_frequency=2 no merge is learned, whatever the vocab size.
    rare = Tokenizer.train(["xy"], vocab_size=300, min_frequency=2)
    assert rare.vocab_size == 258 and len(rare.encode("xy")) == 2


@pytest.mark.parametrize("target", ["dir", "dir/sub", "file.json"])
def test_save_load_identical(tok, tmp_path, target):
    tok.save(tmp_path / target)
    file = tmp_path / target if target.endswith(".json") else tmp_path / target / "tokenizer.json"
    assert file.is_file()
    assert not [p for p in file.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
    loaded = Tokenizer.load(tmp_path / target)
    texts = TRICKY + CORPUS[:5]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert (loaded.eos_id, loaded.pad_id, loaded.vocab_size) == (tok.eos_id, tok.pad_id, tok.vocab_size)
    # Loading the file path directly is the same as loading its directory.
    assert Tokenizer.load(file).encode(texts[-1]) == tok.encode(texts[-1])


def test_save_overwrites_atomically(tok, tmp_path):
    (tmp_path / "tokenizer.json").write_text("old")
    tok.save(tmp_path)
    assert Tokenizer.load(tmp_path).encode("the cat") == tok.encode("the cat")


def test_file_without_pad_gets_distinct_pad(tmp_path):
    # Like GPT-2: only <|endoftext|>, which must not double as pad.
    path = tmp_path / "gpt2_like.json"
    _backend_without_pad([EOS_TOKEN]).save(str(path))
    n_before = tokenizers.Tokenizer.from_file(str(path)).get_vocab_size()
    tok = Tokenizer.load(path)
    assert tok.eos_id == 0
    assert tok.pad_id == n_before  # appended as a new id
    assert tok.vocab_size == n_before + 1
    assert tok.decode([tok.pad_id], skip_special_tokens=False) == PAD_TOKEN
    # The added pad survives a save/load cycle with the same id.
    tok.save(tmp_path / "again")
    again = Tokenizer.load(tmp_path / "again")
    assert (again.eos_id, again.pad_id, again.vocab_size) == (tok.eos_id, tok.pad_id, tok.vocab_size)


def test_discovers_llama3_style_tokens():
    backend = _backend_without_pad(["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|eot_id|>"])
    tok = Tokenizer(backend)
    assert (tok.eos_token, tok.eos_id) == ("<|end_of_text|>", 1)
    assert (tok.pad_token, tok.pad_id) == ("<|finetune_right_pad_id|>", 2)
    assert tok.vocab_size == backend.get_vocab_size()  # nothing added
    # An instruct model's end-of-turn token can be chosen explicitly.
    chat = Tokenizer(_backend_without_pad(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]), eos_token="<|eot_id|>")
    assert chat.eos_id == 2 and chat.pad_token == PAD_TOKEN and chat.pad_id == chat.vocab_size - 1


def test_bad_special_tokens():
    with pytest.raises(TokenizerError, match="no end-of-sequence token"):
        Tokenizer(_backend_without_pad(["<s>"]))
    with pytest.raises(TokenizerError, match="must differ"):
        Tokenizer(_backend_without_pad([EOS_TOKEN]), pad_token=EOS_TOKEN)
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        Tokenizer(_backend_without_pad([EOS_TOKEN]), eos_token="<|im_end|>")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TokenizerError, match="nope.json: no such"):
        Tokenizer.load(tmp_path / "nope.json")
    with pytest.raises(TokenizerError, match="tokenizer.json: no such"):
        Tokenizer.load(tmp_path)  # a directory without tokenizer.json
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{\n  "version": "1.0",\n  oops\n}')
    with pytest.raises(TokenizerError, match=r"bad\.json:3: invalid JSON"):
        Tokenizer.load(bad_json)
    not_tokenizer = tmp_path / "other.json"
    not_tokenizer.write_text('{"hello": 1}')
    with pytest.raises(TokenizerError, match=r"other\.json: not a tokenizer\.json"):
        Tokenizer.load(not_tokenizer)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TokenizerError, match=r"binary\.json: not UTF-8"):
        Tokenizer.load(binary)
    no_eos = tmp_path / "no_eos.json"
    _backend_without_pad(["<s>"]).save(str(no_eos))
    with pytest.raises(TokenizerError, match=r"no_eos\.json: no end-of-sequence token"):
        Tokenizer.load(no_eos)


def test_bad_training_input():
    with pytest.raises(TokenizerError, match="#1 is a int"):
        Tokenizer.train(["ok", 3])
    with pytest.raises(TokenizerError, match="vocab_size=100"):
        Tokenizer.train(["ok"], vocab_size=100)


def test_trained_tokenizer_gives_a_number_the_same_token_after_a_space_or_a_bracket():
    # Digits are split off before BPE, so copying "24" from "a 24 year old" into "(24M)"
    # is copying one and the same token.
    tok = Tokenizer.train(["I (24M) and a 24 year old, 24 24 (24F)"] * 50, vocab_size=300)
    spaced, bracketed = tok.encode("a 24"), tok.encode("(24M)")
    number = tok.encode("24")
    assert len(number) == 1 and number[0] in spaced and number[0] in bracketed
    assert tok.decode(spaced) == "a 24" and tok.decode(bracketed) == "(24M)"
