import torch

from plus.generate import filter_logits, generate, left_pad
from plus.gpt import GPT, GPTConfig

EOS, PAD = 1, 0


def tiny_model(family="gpt2", seed=0):
    torch.manual_seed(seed)
    make = GPTConfig.gpt2_style if family == "gpt2" else GPTConfig.llama_style
    return GPT(make(vocab_size=23, block_size=64, n_layer=2, n_head=2, n_embd=16)).eval()


def test_sampled_logprobs_equal_full_forward_logprobs():
    for family in ("gpt2", "llama"):
        model = tiny_model(family)
        prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
        ids, mask = left_pad(prompts, PAD)
        gen = torch.Generator().manual_seed(3)
        out = generate(model, ids, mask, max_new_tokens=12, eos_id=EOS, pad_id=PAD, temperature=0.7, generator=gen)
        # Recompute each response alone (no padding, no cache) with one full forward.
        for i, prompt in enumerate(prompts):
            n = int(out.mask[i].sum())
            response = out.tokens[i, :n].tolist()
            seq = torch.tensor([prompt + response])
            with torch.no_grad():
                logits = model.logits(model(seq))[0, len(prompt) - 1:-1] / 0.7
            expected = logits.log_softmax(-1).gather(-1, torch.tensor(response)[:, None])[:, 0]
            torch.testing.assert_close(out.logprobs[i, :n], expected, atol=1e-5, rtol=1e-5)
            assert (out.logprobs[i, n:] == 0).all()


def test_greedy_equals_recomputing_the_whole_sequence_each_step():
    model = tiny_model("llama", seed=4)
    prompts = [[3, 4, 5, 6], [7, 8]]
    ids, mask = left_pad(prompts, PAD)
    out = generate(model, ids, mask, max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=0.0)
    for i, prompt in enumerate(prompts):
        seq = list(prompt)
        for _ in range(8):
            with torch.no_grad():
                nxt = int(model.logits(model(torch.tensor([seq])))[0, -1].argmax())
            seq.append(nxt)
            if nxt == EOS:
                break
        response = seq[len(prompt):]
        assert out.tokens[i, :len(response)].tolist() == response
        assert int(out.mask[i].sum()) == len(response)


def test_stops_at_eos_and_masks_after_it():
    model = tiny_model()
    with torch.no_grad():  # make EOS overwhelmingly likely after the first token
        model.lm_head.weight.data[EOS] = 0
        model.tok_emb.weight.data[EOS] = 0
    ids, mask = left_pad([[5, 6], [7]], PAD)
    # Force the first sampled token to be anything, then EOS: bias the head with a hook.
    calls = {"n": 0}

    def force(module, inputs, output):
        calls["n"] += 1
        forced = torch.full_like(output, -1e9)
        forced[..., 9 if calls["n"] == 1 else EOS] = 0
        return forced

    handle = model.lm_head.register_forward_hook(force)
    out = generate(model, ids, mask, max_new_tokens=6, eos_id=EOS, pad_id=PAD, temperature=1.0)
    handle.remove()
    assert out.tokens.tolist() == [[9, EOS], [9, EOS]]  # loop ended early: all rows done
    assert out.mask.tolist() == [[1, 1], [1, 1]]
    assert out.ended.tolist() == [True, True]


def test_filter_logits_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    keep = lambda **kw: filter_logits(logits, **kw).isfinite().tolist()[0]
    assert keep(top_k=2) == [True, True, False, False]
    # top_p: a token is dropped once the tokens ranked above it reach top_p.
    # Mass above each token: 0, 0.5, 0.75, 0.9.
    assert keep(top_p=0.4) == [True, False, False, False]
    assert keep(top_p=0.6) == [True, True, False, False]
    assert keep(top_p=0.8) == [True, True, True, False]
    assert keep(top_p=0.95) == [True, True, True, True]
    shuffled = logits[:, [2, 0, 3, 1]]  # order of the vocabulary must not matter
    assert filter_logits(shuffled, top_p=0.6).isfinite().tolist()[0] == [False, True, False, True]
    renorm = filter_logits(logits, top_k=2).softmax(-1)[0, :2]
    torch.testing.assert_close(renorm, torch.tensor([0.5 / 0.75, 0.25 / 0.75]))


def test_left_pad():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_static_cache_decoding_samples_what_the_plain_loop_samples():
    """The fixed-shape step (the form a CUDA graph captures) against the plain loop, the
    reference: both families, left padding of three lengths, greedy and seeded sampling,
    rows that end early (EOS made likely). Same tokens; log-probs to float32 round-off
    (softmax over a longer, masked key set sums in another order)."""
    for family in ("gpt2", "llama"):
        model = tiny_model(family, seed=7)
        with torch.no_grad():
            model.lm_head.weight[EOS] *= 4  # a tied head: EOS likely enough that rows end at different steps
        prompts = [[5, 6, 7, 8, 9, 2], [10, 11], [12, 13, 14]]
        ids, mask = left_pad(prompts, PAD)
        for temperature in (0.0, 0.7):
            outs = [generate(model, ids, mask, max_new_tokens=16, eos_id=EOS, pad_id=PAD, temperature=temperature,
                             generator=torch.Generator().manual_seed(11), static_cache=static)
                    for static in (False, True)]
            plain, static = outs
            assert torch.equal(static.tokens, plain.tokens) and torch.equal(static.mask, plain.mask)
            assert torch.equal(static.ended, plain.ended)
            torch.testing.assert_close(static.logprobs, plain.logprobs, rtol=1e-5, atol=1e-5)
        lengths = plain.mask.sum(1).tolist()
        assert len(set(lengths)) > 1 and plain.ended.any()  # rows did end at different steps


def test_cuda_graph_needs_cuda_tensors():
    import pytest

    model = tiny_model()
    ids, mask = left_pad([[3, 4]], PAD)
    with pytest.raises(ValueError, match="cuda_graph"):
        generate(model, ids, mask, max_new_tokens=2, eos_id=EOS, pad_id=PAD, cuda_graph=True)


def test_sample_cli_reads_a_typed_newline_and_notes_a_missing_cue(tmp_path, capsys):
    import sample
    from plus import checkpoint
    from plus.tokenizer import Tokenizer

    tok = Tokenizer.train(["SUBREDDIT: r/cats\n\nTITLE: my cat\n\nPOST: she sleeps\n\nTL;DR: cat sleeps"] * 20,
                          vocab_size=300)
    model = GPT(GPTConfig.gpt2_style(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=8))
    checkpoint.save_checkpoint(tmp_path / "ck", model, {"stage": "sft", "model": model.config.to_dict()}, tokenizer=tok)
    flags = ["--init_from", str(tmp_path / "ck"), "--generate_max_len", "2", "--temperature", "0", "--device", "cpu"]
    assert sample.main(flags + ["--prompt", "SUBREDDIT: r/cats\\n\\nTITLE: my cat\\n\\nTL;DR:"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("SUBREDDIT: r/cats\n\nTITLE: my cat\n\nTL;DR:") and err == ""
    assert sample.main(flags + ["--prompt", "my cat sleeps"]) == 0
    assert "does not end with 'TL;DR:'" in capsys.readouterr().err


def test_sample_cli_keeps_a_long_prompt_that_fits_the_model(tmp_path, capsys):
    """sample.py's prompt cap is what block_size leaves beside --generate_max_len, not the
    TL;DR setting's 200 tokens: a 200+ token prompt is printed back whole; a response cap
    that leaves no room for a prompt is a usage error."""
    import pytest

    import sample
    from plus import checkpoint, data
    from plus.tokenizer import Tokenizer

    tok = Tokenizer.train(["my cat sleeps all day TL;DR: cat sleeps"] * 20, vocab_size=300)
    model = GPT(GPTConfig.gpt2_style(vocab_size=tok.vocab_size, block_size=512, n_layer=1, n_head=2, n_embd=8))
    checkpoint.save_checkpoint(tmp_path / "ck", model, {"stage": "sft", "model": model.config.to_dict()}, tokenizer=tok)
    prompt = "my cat sleeps all day, " * 60 + "TL;DR:"
    n = len(tok.encode(prompt))
    assert data.PROMPT_MAX_LEN < n <= 510
    flags = ["--init_from", str(tmp_path / "ck"), "--temperature", "0", "--device", "cpu", "--prompt", prompt]
    assert sample.main(flags + ["--generate_max_len", "2"]) == 0
    assert capsys.readouterr().out.startswith(tok.decode(tok.encode(prompt)) + "\n")
    with pytest.raises(SystemExit) as stop:
        sample.main(flags + ["--generate_max_len", "512"])
    assert stop.value.code == 2 and "leaves no room for a prompt" in capsys.readouterr().err
