import json

import pytest
import torch

from plus import data
from plus.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    corpus = ["SUBREDDIT: r/dating\n\nTITLE: a title\n\nPOST: my friend and I went out.\n\nTL;DR: we went out"] * 50
    return Tokenizer.train(corpus, vocab_size=300)


def test_query_format_is_stiennons():
    assert data.format_query("tifu", "T", "P") == "SUBREDDIT: r/tifu\n\nTITLE: T\n\nPOST: P\n\nTL;DR:"


def test_collate_sft_masks_prompt_and_padding_by_hand():
    examples = [data.SFTExample(prompt=[10, 11, 12], response=[20, 21, 1]),
                data.SFTExample(prompt=[13], response=[22, 1])]
    batch = data.collate_sft(examples, pad_id=0)
    I = data.IGNORE_INDEX
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 1], [13, 22, 1, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    # Position t predicts token t+1: only positions whose next token is in the response count.
    assert batch["labels"].tolist() == [[I, I, 20, 21, 1, I], [22, 1, I, I, I, I]]
    # The same positions as the reward model's response tokens: (row, column), token, row.
    at, ids, owner = data.response_tokens(batch["labels"])
    assert at.tolist() == [[0, 2], [0, 3], [0, 4], [1, 0], [1, 1]]
    assert ids.tolist() == [20, 21, 1, 22, 1] and owner.tolist() == [0, 0, 0, 1, 1]


def test_collate_sft_packed_layout_by_hand():
    # Two responses to prompt [10, 11, 12], one to [13]: one row per prompt.
    examples = [data.SFTExample(prompt=[10, 11, 12], response=[20, 21, 1]),
                data.SFTExample(prompt=[13], response=[22, 1]),
                data.SFTExample(prompt=[10, 11, 12], response=[23, 1])]
    batch = data.collate_sft_packed(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 1, 23, 1], [13, 22, 1, 0, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 1, 2, 2], [0, 1, 1, -1, -1, -1, -1, -1]]
    # 20 and 23 are both predicted at column 2 (the prompt's last token); 21 at 20's column,
    # the first response's EOS at 21's, the second response's EOS at 23's (column 6).
    assert batch["labels_at"].tolist() == [[0, 2], [0, 3], [0, 4], [0, 2], [0, 6], [1, 0], [1, 1]]
    assert batch["labels"].tolist() == [20, 21, 1, 23, 1, 22, 1]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_packed_sft_loss_and_gradient_equal_separate_rows(family):
    from plus import sft
    from plus.gpt import GPT, GPTConfig
    make = GPTConfig.gpt2_style if family == "gpt2" else GPTConfig.llama_style
    torch.manual_seed(0)
    model = GPT(make(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16))
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(3, 50, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = rand(7), rand(4)
    examples = [data.SFTExample(p1, rand(3) + [1]), data.SFTExample(p2, rand(5) + [1]),
                data.SFTExample(p1, rand(2) + [1]), data.SFTExample(p1, rand(4) + [1])]
    loss, n = sft.sequence_loss_sum(model, data.collate_sft_packed(examples, pad_id=0), "cpu")
    loss.backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # Each example alone, unpadded, with a plain cross-entropy over the full logits.
    expected = 0.0
    for e in examples:
        seq = torch.tensor([e.prompt + e.response])
        logits = model.logits(model(seq))[0, len(e.prompt) - 1:-1]
        expected = expected + torch.nn.functional.cross_entropy(logits, torch.tensor(e.response), reduction="sum")
    expected.backward()
    assert n == sum(len(e.response) for e in examples)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    for got, want in zip(packed_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_response_ids_has_leading_space_and_eos(tok):
    ids = data.response_ids(tok, "we went out", 48)
    assert ids[-1] == tok.eos_id
    assert tok.decode(ids[:-1]) == " we went out"
    assert data.response_ids(tok, "we went out", 2) == ids[:2]  # cut, EOS only if it fits


def test_truncate_query_drops_post_paragraphs_then_words(tok):
    post = "first paragraph here.\nsecond paragraph here.\nthird one is here too."
    full = tok.encode(data.format_query("dating", "a title", post))
    two = tok.encode(data.format_query("dating", "a title", "first paragraph here.\nsecond paragraph here."))
    assert data.truncate_query(tok, "dating", "a title", post, len(full)) == full
    assert data.truncate_query(tok, "dating", "a title", post, len(full) - 1) == two
    short = data.truncate_query(tok, "dating", "a title", "word " * 200, 60)
    assert len(short) <= 60 and tok.decode(short).endswith("\n\nTL;DR:")


def test_truncate_prompt_keeps_the_end_at_a_newline(tok):
    prompt = "line one\nline two\nfinal question"
    ids = data.truncate_prompt(tok, prompt, len(tok.encode("line two\nfinal question")))
    assert tok.decode(ids) == "line two\nfinal question"


def write(tmp_path, name, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


GOOD = {"subreddit": "dating", "title": "t", "post": "my friend and I", "summary": "we went out"}


@pytest.mark.parametrize("line, problem", [
    ("{not json", "invalid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "summary"}), "missing key 'summary'"),
    (json.dumps({**GOOD, "summary": "  "}), "'summary' is empty"),
    (json.dumps({**GOOD, "summary": 3}), "'summary' should be a string, got int"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_jsonl_record_names_file_and_line(tmp_path, tok, line, problem):
    path = write(tmp_path, "d.jsonl", json.dumps(GOOD) + "\n\n" + line + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(data.DataError) as err:
        data.load_sft_examples(str(path), tok)
    assert str(err.value).startswith(f"{path}:3: ") and problem in str(err.value)
    examples, bad = data.load_sft_examples(str(path), tok, on_bad_record="skip")
    assert len(examples) == 2 and bad.total == 1


def test_a_limit_stops_reading_at_the_limit(tmp_path, tok):
    """With n, reading stops at the n-th good record: a bad one after it is never parsed;
    one before it stops the run, counted among the records read."""
    bad_line = json.dumps({**GOOD, "summary": ""})
    path = write(tmp_path, "d.jsonl", "\n".join([json.dumps(GOOD)] * 3 + [bad_line, json.dumps(GOOD)]) + "\n")
    examples, bad = data.load_sft_examples(str(path), tok, n=3)
    assert len(examples) == 3 and bad.total == 0
    with pytest.raises(data.DataError) as err:
        data.load_sft_examples(str(path), tok, n=4)
    assert str(err.value) == (f"{path}:4: 'summary' is empty (1 of the file's 5 records are bad; "
                              "--on_bad_record skip leaves them out)")
    path = write(tmp_path, "e.jsonl", "\n".join([json.dumps(GOOD), bad_line] + [json.dumps(GOOD)] * 3) + "\n")
    with pytest.raises(data.DataError) as err:
        data.load_sft_examples(str(path), tok, n=2)
    assert str(err.value) == (f"{path}:2: 'summary' is empty (1 of the first 3 records are bad; "
                              "--on_bad_record skip leaves them out)")


@pytest.mark.parametrize("keys, problem", [
    (dict(), "missing key 'prompt' (record has: answer, question); set --input_key"),
    (dict(input_key="question"), "missing key 'summary' (record has: answer, question); set --output_key"),
])
def test_a_missing_key_names_the_flag_that_names_the_field(tmp_path, tok, keys, problem):
    path = write(tmp_path, "qa.jsonl", json.dumps({"question": "why", "answer": "light"}) + "\n")
    with pytest.raises(data.DataError) as err:
        data.load_sft_examples(str(path), tok, **keys)
    assert str(err.value) == f"{path}:1: {problem} (1 of the file's 1 records are bad; --on_bad_record skip leaves them out)"


def test_undecodable_bytes(tmp_path, tok):
    path = write(tmp_path, "d.jsonl", json.dumps(GOOD).encode() + b"\n" + b'{"post": "\xff\xfe"}\n')
    with pytest.raises(data.DataError, match=r"d\.jsonl:2: undecodable bytes"):
        data.load_sft_examples(str(path), tok)


def test_json_array_and_csv_report_lines(tmp_path, tok):
    arr = write(tmp_path, "d.json", "[\n" + json.dumps(GOOD) + ",\n" + json.dumps({**GOOD, "title": 5}) + "\n]")
    with pytest.raises(data.DataError, match=r"d\.json: record 2 \(line 3\): 'title' should be a string"):
        data.load_sft_examples(str(arr), tok)
    csv_path = write(tmp_path, "d.csv", "subreddit,title,post,summary\ndating,t,p,s\ndating,t,,s\n")
    with pytest.raises(data.DataError, match=r"d\.csv:3: 'post' is empty"):
        data.load_sft_examples(str(csv_path), tok)
    # A quoted cell over two lines and a blank line before the next record: each record is
    # located at the line it starts on (2 and 5), and a short row reads as missing cells.
    csv_path = write(tmp_path, "e.csv", 'subreddit,title,post,summary\ndating,t,"p\nmore",s\n\ndating,t\n')
    with pytest.raises(data.DataError, match=r"e\.csv:5: 'post' should be a string"):
        data.load_sft_examples(str(csv_path), tok)
    csv_path = write(tmp_path, "f.csv", 'subreddit,title,post,summary\ndating,t,"p\nmore",s\ndating,t,p,s,extra\n')
    with pytest.raises(data.DataError, match=r"f\.csv:4: more fields than the header has"):
        data.load_sft_examples(str(csv_path), tok)


def test_key_mapping(tmp_path, tok):
    path = write(tmp_path, "d.jsonl", json.dumps({"question": "why is the sky blue", "answer": "light"}) + "\n")
    (ex,), _ = data.load_sft_examples(str(path), tok, input_key="question", output_key="answer")
    assert tok.decode(ex.prompt) == "why is the sky blue"
    assert tok.decode(ex.response) == " light"


def test_pretrain_blocks_are_consecutive_windows(tok):
    texts = ["my friend", "we went out", "a title"] * 20
    blocks = data.pretrain_blocks(tok, iter(texts), block_size=8, n_blocks=3)
    stream = []
    for t in texts:
        stream += tok.encode(t) + [tok.eos_id]
    assert blocks.tolist() == [stream[0:9], stream[8:17], stream[16:25]]


def test_length_caps_are_the_datas_longest_within_the_block():
    """Hand-worked: a block of 256 positions, prompts of at most P and responses of at most R
    tokens. What fits is never cut; otherwise a prompt keeps up to half the block (less where
    no prompt needs it) and the response the rest; a cap given is kept, the other fits beside it."""
    def caps(longest_prompt, longest_response, **given):
        return data.length_caps([3, longest_prompt], [2, longest_response], 256, **given)

    assert caps(12, 166) == (12, 166)          # fits: the longest of each
    assert caps(20, 300) == (20, 236)          # short prompts leave the response the rest
    assert caps(300, 40) == (216, 40)          # short responses leave the prompt the rest
    assert caps(300, 300) == (128, 128)        # both long: half each
    assert caps(300, 300, prompt_max_len=200) == (200, 56)
    assert caps(300, 300, generate_max_len=48) == (208, 48)
    assert caps(12, 166, prompt_max_len=4, generate_max_len=48) == (4, 48)
