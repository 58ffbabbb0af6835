import json
import math

import pytest
import torch

import train
from plus import stage_flags
from plus import checkpoint, data, sft, training
from plus.tokenizer import Tokenizer


class FixedLogits(torch.nn.Module):
    """A stand-in model whose logits are a fixed tensor, so the loss can be done by hand."""

    def __init__(self, logits):
        super().__init__()
        self.fixed = logits
        self.lm_head = torch.nn.Linear(logits.shape[-1], logits.shape[-1], bias=False)
        self.lm_head.weight.data = torch.eye(logits.shape[-1])  # hidden @ I = the fixed logits

    def forward(self, input_ids, attention_mask=None):
        return self.fixed


def test_sft_loss_by_hand_with_prompt_masking():
    # prompt [5, 6], response [7, 8]: positions 1 and 2 predict 7 and 8; position 0 predicts
    # a prompt token and position 3 nothing, so neither counts.
    batch = data.collate_sft([data.SFTExample(prompt=[5, 6], response=[7, 8])], pad_id=0)
    logits = torch.zeros(1, 4, 10)
    logits[0, 1, 7] = 2.0    # p(7) = e^2 / (e^2 + 9)
    logits[0, 2, 8] = -1.0   # p(8) = e^-1 / (e^-1 + 9)
    logits[0, 0, 6] = -50.0  # would dominate the loss if the prompt were not masked
    loss_sum, n = sft.sequence_loss_sum(FixedLogits(logits), batch, "cpu")
    expected = -(math.log(math.e ** 2 / (math.e ** 2 + 9)) + math.log(math.e ** -1 / (math.e ** -1 + 9)))
    assert n == 2
    assert float(loss_sum.detach()) == pytest.approx(expected, rel=1e-6)


def test_lr_schedule_by_hand():
    assert training.lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert training.lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert training.lr_at(55, 100, 1.0, warmup=10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert training.lr_at(100, 100, 1.0, warmup=10) == pytest.approx(0.1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    words = "my friend and i went out to the park after work and we talked about money".split()
    with open(d / "corpus.jsonl", "w") as f:
        for i in range(300):
            f.write(json.dumps({"text": " ".join(words[(i + k) % len(words)] for k in range(20))}) + "\n")
    with open(d / "tldr.jsonl", "w") as f:  # 20 posts, two summaries each: SFT packs them in one row
        for i in range(40):
            f.write(json.dumps({"subreddit": "dating", "title": f"title {i // 2}", "post": " ".join(words[i // 2 % 5:]),
                                "summary": " ".join(words[i % 7: i % 7 + 5])}) + "\n")
    return d


TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--vocab_size", "300", "--max_len", "32"]


def run(*argv):
    assert train.main(list(argv) + ["--no_progress"]) == 0


@pytest.fixture(scope="module")
def pretrained(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run("--stage", "pretrain", "--dataset", str(files / "corpus.jsonl"), "--out_dir", str(out), *TINY,
        "--max_steps", "3", "--train_batch_size", "4", "--micro_train_batch_size", "2", "--n_eval", "4")
    return out


def sft_args(files, out, *extra):
    return ("--stage", "sft", "--dataset", str(files / "tldr.jsonl"), "--eval_dataset", str(files / "tldr.jsonl"),
            "--out_dir", str(out), "--max_steps", "6", "--train_batch_size", "4", "--micro_train_batch_size", "2",
            "--n_eval", "4", "--max_epochs", "2", "--eval_steps", "0", *extra)


def test_default_model_is_llama_style_with_an_8_thirds_mlp(pretrained):
    model = json.loads((pretrained / "pretrain" / "config.json").read_text())["model"]
    assert (model["pos"], model["mlp"], model["norm"]) == ("rope", "swiglu", "rmsnorm")
    assert model["intermediate_size"] == 64  # 8/3 * 16 = 42.7, rounded up to a multiple of 32
    assert stage_flags.mlp_width("llama", 128) == 352  # 341.3 -> 352
    assert stage_flags.mlp_width("llama", 4096) == 10944  # 10922.7 -> 10944
    assert stage_flags.mlp_width("gpt2", 128) is None  # GPTConfig's 4d


def test_demo_head_is_tied_unless_asked_otherwise(files, pretrained, tmp_path):
    tied, _, _ = checkpoint.load_gpt(pretrained / "pretrain")
    assert tied.lm_head.weight.data_ptr() == tied.tok_emb.weight.data_ptr()
    run("--stage", "pretrain", "--dataset", str(files / "corpus.jsonl"), "--out_dir", str(tmp_path), *TINY,
        "--max_steps", "1", "--train_batch_size", "2", "--n_eval", "2", "--no-tie_embeddings")
    untied, _, _ = checkpoint.load_gpt(tmp_path / "pretrain")
    assert not untied.config.tie_embeddings
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    assert not torch.equal(untied.lm_head.weight, untied.tok_emb.weight)


def test_interrupted_then_resumed_run_matches_uninterrupted(files, pretrained, tmp_path, monkeypatch):
    init = ("--init_from", str(pretrained / "pretrain"))
    run(*sft_args(files, tmp_path / "a", *init))

    real_save = checkpoint.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt("killed after the step-3 save")

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.main(list(sft_args(files, tmp_path / "b", *init, "--save_steps", "3")) + ["--no_progress"])
    monkeypatch.undo()
    assert checkpoint.load_trainer_state(tmp_path / "b" / "sft")[0]["step"] == 3
    run(*sft_args(files, tmp_path / "b", "--resume"))

    a = checkpoint.load_state_dict(tmp_path / "a" / "sft")
    b = checkpoint.load_state_dict(tmp_path / "b" / "sft")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)
    losses = lambda d: [json.loads(l)["loss"] for l in (d / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "b") == losses(tmp_path / "a") and len(losses(tmp_path / "a")) == 6


def test_gradient_accumulation_matches_one_big_batch(files, pretrained, tmp_path):
    init = ("--init_from", str(pretrained / "pretrain"))
    run(*sft_args(files, tmp_path / "acc", *init))  # 4 = 2 x 2 accumulation
    run(*sft_args(files, tmp_path / "big", *init), "--micro_train_batch_size", "4")  # the last flag wins
    a = checkpoint.load_state_dict(tmp_path / "acc" / "sft")
    b = checkpoint.load_state_dict(tmp_path / "big" / "sft")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)


def test_bad_record_fails_before_any_step(files, pretrained, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = (files / "tldr.jsonl").read_text().splitlines()
    lines[6] = lines[6].replace('"summary"', '"summry"')
    bad.write_text("\n".join(lines) + "\n")
    code = train.main(["--stage", "sft", "--dataset", str(bad), "--init_from", str(pretrained / "pretrain"),
                       "--out_dir", str(tmp_path), "--no_progress"])
    assert code == 1
    assert f"{bad}:7: missing key 'summary'" in capsys.readouterr().err
    assert not (tmp_path / "sft").exists()


def test_contradictory_flags_are_errors(capsys):
    with pytest.raises(SystemExit):
        train.main(["--stage", "sft", "--n_layer", "3"])
    assert "--n_layer only applies to --stage pretrain" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--stage", "sft", "--bogus_flag", "1"])
    for argv, message in [(["--stage", "rm", "--references_per_post", "2"], "applies to --stage sft"),
                          (["--stage", "sft", "--dataset", "x.jsonl", "--references_per_post", "2"], "built-in world"),
                          (["--stage", "sft", "--references_per_post", "0"], "must be >= 1")]:
        with pytest.raises(SystemExit):
            train.main(argv)
        assert message in capsys.readouterr().err


def test_world_sft_defaults_count_posts_and_a_file_keeps_its_own():
    def sizes(*argv, world_size=1):
        a = stage_flags.stage_args(stage_flags.build_parser().parse_args(["--stage", "sft", *argv]), "sft", world_size)
        return a.train_batch_size, a.micro_train_batch_size, a.max_steps
    assert sizes() == (8, 8, 1700)                                    # 8 posts x 4 references = 32 summaries
    assert sizes("--references_per_post", "1") == (32, 16, 1700)      # 32 posts x 1
    assert sizes("--references_per_post", "2") == (16, 16, 1700)
    assert sizes("--dataset", "my.jsonl")[:2] == (32, 16)             # a file: STAGE_DEFAULTS
    assert sizes("--train_batch_size", "4", world_size=2)[:2] == (4, 2)
    # A micro-batch the user set, with no global batch: the default global batch holds it.
    assert sizes("--micro_train_batch_size", "16")[:2] == (16, 16)
    assert sizes("--micro_train_batch_size", "3", world_size=2)[:2] == (12, 3)


def test_a_batch_counts_prompts_with_all_their_responses(files, pretrained, tmp_path):
    """The file holds 20 posts with two summaries each; a step of 4 posts trains on their 8
    summaries (with an index mix-up between examples and posts it would see 4)."""
    run(*sft_args(files, tmp_path, "--init_from", str(pretrained / "pretrain")))
    tok = Tokenizer.load(tmp_path / "sft" / "tokenizer.json")
    records = [json.loads(line) for line in (files / "tldr.jsonl").read_text().splitlines()]
    posts = [records[2 * g: 2 * g + 2] for g in range(20)]
    first = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:4].tolist()  # seed 0, epoch 0
    expected = sum(len(data.response_ids(tok, r["summary"], 48)) for g in first for r in posts[g])
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["target_tokens"] == expected
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["references_per_post"] == 1


def test_exported_tldr_file_trains_like_the_builtin_world(tmp_path):
    """`python -m plus.world --export` writes each training post with its 4 writers'
    TL;DRs, so SFT on train.jsonl sees the examples, batches and losses of SFT on the
    built-in world (a model with random weights: only the data path is under test)."""
    from plus.gpt import GPT, GPTConfig
    from plus.world import World, export

    tok = Tokenizer.train(World(0).corpus(300), vocab_size=400)
    gpt = GPT(GPTConfig.llama_style(vocab_size=tok.vocab_size, block_size=160, n_layer=1, n_head=2, n_embd=16))
    checkpoint.save_checkpoint(tmp_path / "pretrain", gpt, {"stage": "pretrain", "model": gpt.config.to_dict()}, tok)
    export(tmp_path / "world", n_train=4, n_valid=2, n_test=0, n_comparisons=0)
    common = ("--stage", "sft", "--init_from", str(tmp_path / "pretrain"), "--max_steps", "2",
              "--train_batch_size", "2", "--micro_train_batch_size", "1", "--n_eval", "2", "--eval_steps", "0",
              "--prompt_max_len", "100", "--generate_max_len", "48")
    run(*common, "--out_dir", str(tmp_path / "builtin"))
    run(*common, "--out_dir", str(tmp_path / "file"), "--dataset", str(tmp_path / "world" / "train.jsonl"))

    def metrics(out):
        return [json.loads(line) for line in (tmp_path / out / "sft" / "metrics.jsonl").read_text().splitlines()]
    builtin, from_file = metrics("builtin"), metrics("file")
    assert [m["loss"] for m in from_file] == [m["loss"] for m in builtin] and len(builtin) == 2
    assert [m["target_tokens"] for m in from_file] == [m["target_tokens"] for m in builtin]


@pytest.mark.parametrize("threshold", [1, 2 ** 40])  # always fused, never fused
def test_target_logprobs_fused_or_plain_match_log_softmax(threshold, monkeypatch):
    """Both paths of the size dispatch give log_softmax(hidden @ W.T)[label] and its
    gradients (float32, a 16-term dot product then a 50-term log-softmax)."""
    monkeypatch.setattr(sft, "FUSED_HEAD_MIN_LOGITS", threshold)
    calls = []
    real = sft.fused_linear_token_logprobs
    monkeypatch.setattr(sft, "fused_linear_token_logprobs", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 7, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    labels = torch.randint(0, 50, (2, 7), generator=gen)
    labels[0, :3] = data.IGNORE_INDEX
    got = sft.target_logprobs(hidden, weight, labels)
    assert len(calls) == (1 if threshold == 1 else 0)
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    full = torch.log_softmax(h2.double() @ w2.double().T, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    want = full.masked_fill(labels == data.IGNORE_INDEX, 0.0)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(hidden.grad, h2.grad.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad, w2.grad.float(), rtol=1e-5, atol=1e-5)
    assert (hidden.grad[0, :3] == 0).all()


def test_fit_batch_to_data_by_hand():
    assert training.fit_batch_to_data(100, 32, 16, 2, "examples") == (32, 16, None)
    batch, micro, note = training.fit_batch_to_data(20, 32, 16, 1, "prompts")
    assert (batch, micro) == (20, 10) and "20 prompts are fewer than one global batch (32)" in note
    assert training.fit_batch_to_data(21, 32, 16, 2, "prompts")[:2] == (20, 10)  # 10 each: micro 10
    assert training.fit_batch_to_data(7, 32, 4, 2, "prompts")[:2] == (6, 3)      # 3 each: micro 3
    with pytest.raises(ValueError, match="cannot give each of the 2 processes one"):
        training.fit_batch_to_data(1, 32, 16, 2, "prompts")


def test_a_small_file_trains_with_the_default_batch(files, pretrained, tmp_path, capsys):
    """20 prompts against the default global batch of 32: the batch shrinks, one line says so
    (--eval_dataset keeps all 20 for training)."""
    run("--stage", "sft", "--dataset", str(files / "tldr.jsonl"), "--init_from", str(pretrained / "pretrain"),
        "--out_dir", str(tmp_path), "--max_steps", "2", "--eval_steps", "0", "--eval_dataset", str(files / "tldr.jsonl"))
    assert "responses are fewer than one global batch (32): training with --train_batch_size 20" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    ran = checkpoint.load_config(tmp_path / "sft")  # what ran, not what the flags asked for
    assert {k: ran[k] for k in ("train_batch_size", "micro_train_batch_size", "max_steps", "dtype", "world_size")} == \
        {"train_batch_size": 20, "micro_train_batch_size": 10, "max_steps": 2, "dtype": "fp32", "world_size": 1}


def test_sft_on_a_file_holds_out_a_tenth_of_its_prompts_for_the_eval_loss(files, pretrained, tmp_path, capsys):
    """No --eval_dataset: 2 of the file's 20 prompts (each with both its summaries) are held
    out, trained on never, and the eval loss is theirs, computed here again from the
    saved policy; a file of fewer than ten prompts has no eval loss, and says so."""
    run("--stage", "sft", "--dataset", str(files / "tldr.jsonl"), "--init_from", str(pretrained / "pretrain"),
        "--out_dir", str(tmp_path), "--max_steps", "2", "--eval_steps", "2")
    out = capsys.readouterr().out
    assert f"[sft] {files / 'tldr.jsonl'}: 2 of its 20 prompts held out for the eval loss" in out
    assert "18 prompts with 36 responses are fewer than one global batch (32)" in out
    model, tokenizer, config = checkpoint.load_gpt(tmp_path / "sft")
    assert config["eval_dataset"] == f"2 prompts of {files / 'tldr.jsonl'}, held out"
    examples, _ = data.load_sft_examples(str(files / "tldr.jsonl"), tokenizer, prompt_max_len=200)
    train_part, held = data.hold_out(examples, 128, seed=0)
    assert len(held) == 4 and len(train_part) == 36
    assert not {tuple(e.prompt) for e in held} & {tuple(e.prompt) for e in train_part}
    with torch.no_grad():
        loss_sum, n = sft.sequence_loss_sum(model.eval(), data.collate_sft(held, tokenizer.pad_id), "cpu")
    logged = json.loads((tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()[-1])["eval_loss"]
    assert logged == pytest.approx(float(loss_sum) / n, rel=1e-5)  # float32 sums in another order

    few = tmp_path / "few.jsonl"
    few.write_text("".join(line + "\n" for line in (files / "tldr.jsonl").read_text().splitlines()[:18]))
    run("--stage", "sft", "--dataset", str(few), "--init_from", str(pretrained / "pretrain"),
        "--out_dir", str(tmp_path / "few"), "--max_steps", "1", "--eval_steps", "1")
    assert f"[sft] {few}: 9 prompts, too few to hold a tenth out: no eval loss" in capsys.readouterr().out
    assert "eval_loss" not in json.loads((tmp_path / "few" / "sft" / "metrics.jsonl").read_text())
