"""bf16 mixed precision, on the CPU: autocast follows --device, so the path a CUDA run
takes under --dtype bf16 (bf16 forward, float32 master weights, backward outside the
autocast region, float32 heads) runs here too.

Each stage's first logged loss is computed before any update, from the same weights and
the same batch, so the bf16 run's must equal the fp32 run's to bf16's precision (a
relative 2^-8 per rounding; losses are means over many tokens, where the roundings
partly cancel: rel 2e-2) and must differ from it (bf16 really ran)."""

import json
from pathlib import Path

import pytest
import torch

import train
from plus import checkpoint, training
from plus.gpt import GPT, GPTConfig
from plus.ppo import response_logprobs
from plus.reward_head import RewardModel
from plus.value_head import Critic
from plus.world import World
from plus.tokenizer import Tokenizer

BF16 = dict(rtol=2e-2, atol=2e-2)


def test_dtype_defaults_and_autocast_follow_the_device():
    assert training.resolve_dtype(None, "cpu") == "fp32" and training.resolve_dtype(None, "cuda") == "bf16"
    assert training.resolve_dtype("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="--dtype"):
        training.resolve_dtype("fp16", "cpu")
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with training.autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
        with training.full_precision("cpu"):
            assert (a @ b).dtype == torch.float32
    with training.autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32


def tiny_gpt(family="llama", vocab=64, seed=0):
    torch.manual_seed(seed)
    make = GPTConfig.gpt2_style if family == "gpt2" else GPTConfig.llama_style
    return GPT(make(vocab_size=vocab, block_size=32, n_layer=2, n_head=2, n_embd=32))


def test_reward_and_value_heads_run_in_float32_under_autocast():
    """The decoder runs in bf16, the scalar heads in float32 on its output: the reward
    equals the float64 head applied to the same hidden state to float32 precision, far
    tighter than a bf16 head would give (a bf16 matmul is off by ~1e-3 relative)."""
    gpt = tiny_gpt()
    rm = RewardModel.from_gpt(gpt)
    critic = Critic.from_reward_model(rm)
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad(), training.autocast("cpu", "bf16"):
        hidden = rm.backbone(ids, attention_mask=mask)          # [3, 10, 32], the autocast forward
        rewards = rm(ids, mask)                                 # [3]
        values = critic(ids, mask)                              # [3, 10]
    assert rewards.dtype == values.dtype == torch.float32
    w, b = rm.head.linear.weight.double(), rm.head.linear.bias.double()
    expected = (hidden.double() @ w.T + b).squeeze(-1)          # [3, 10]
    torch.testing.assert_close(rewards.double(), expected[:, -1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values.double(), expected, rtol=1e-6, atol=1e-6)  # gain 1, bias 0: the same head


def test_ppo_logprobs_come_from_a_float32_head_under_autocast():
    """PPO's log-probabilities under bf16 autocast: the bf16 decoder's hidden states, then
    the output head and log-softmax in float32 (float64 here to compare)."""
    gpt = tiny_gpt(vocab=64).eval()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 64, (2, 12), generator=gen)
    mask = torch.ones_like(ids)
    responses, response_mask = ids[:, 8:], torch.ones(2, 4, dtype=torch.long)
    with torch.no_grad(), training.autocast("cpu", "bf16"):
        got = response_logprobs(gpt, ids, mask, responses, response_mask, temperature=0.7)
        hidden = gpt(ids, attention_mask=mask)[:, 7:-1]          # [2, 4, C], the states that predict
    logits = hidden.double() @ gpt.lm_head.weight.double().T / 0.7
    want = torch.log_softmax(logits, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_compute_dtype_is_autocasts_inside_it_and_the_tensors_outside():
    from plus.gpt import compute_dtype

    x = torch.zeros(2, dtype=torch.float32)
    assert compute_dtype(x) == torch.float32 and compute_dtype(x.double()) == torch.float64
    with training.autocast("cpu", "bf16"):
        assert compute_dtype(x) == torch.bfloat16
    with training.autocast("cpu", "fp32"):
        assert compute_dtype(x) == torch.float32


def test_kv_cache_takes_the_autocast_dtype():
    gpt = tiny_gpt()
    assert gpt.new_kv_cache(2, 16).k.dtype == torch.float32
    with training.autocast("cpu", "bf16"):
        cache = gpt.new_kv_cache(2, 16)
        assert cache.k.dtype == cache.v.dtype == torch.bfloat16
        # incremental decoding fills it: the last position's hidden state equals a full forward's
        ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            gpt(ids[:, :5], kv_cache=cache)
            step = gpt(ids[:, 5:], kv_cache=cache)[:, -1]
            full = gpt(ids)[:, -1]
    torch.testing.assert_close(step.float(), full.float(), **BF16)


# ------------------------------------------------------------------ each stage under bf16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bf16")
    with open(d / "corpus.jsonl", "w") as f:
        for text in World(0).corpus(200):
            f.write(json.dumps({"text": text}) + "\n")
    return d


TINY = ["--n_layer", "2", "--n_embd", "32", "--n_head", "2", "--vocab_size", "300", "--device", "cpu",
        "--no_progress"]


def first_loss(out: Path, stage: str) -> dict:
    return json.loads((out / stage / "metrics.jsonl").read_text().splitlines()[0])


def run_both(tmp_path, argv, stage):
    """The same command in fp32 and in bf16; the first logged metrics of each."""
    for dtype in ("fp32", "bf16"):
        assert train.main([*argv, "--out_dir", str(tmp_path / dtype), "--dtype", dtype]) == 0
    return first_loss(tmp_path / "fp32", stage), first_loss(tmp_path / "bf16", stage)


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    argv = ["--stage", "pretrain", "--dataset", str(corpus / "corpus.jsonl"), *TINY, "--max_steps", "2",
            "--max_len", "128", "--train_batch_size", "4", "--micro_train_batch_size", "2", "--eval_steps", "0"]
    fp32, bf16 = run_both(out, argv, "pretrain")
    return out, fp32, bf16


def assert_bf16_ran(fp32: dict, bf16: dict, key="loss"):
    assert bf16[key] != fp32[key]
    assert bf16[key] == pytest.approx(fp32[key], rel=BF16["rtol"])


def test_pretrain_and_sft_steps_under_bf16(pretrained, tmp_path):
    out, fp32, bf16 = pretrained
    assert_bf16_ran(fp32, bf16)
    argv = ["--stage", "sft", "--init_from", str(out / "fp32" / "pretrain"), "--max_steps", "2", "--references_per_post",
            "2", "--train_batch_size", "2", "--micro_train_batch_size", "1", "--eval_steps", "0", "--no_progress",
            "--device", "cpu", "--max_len", "200", "--prompt_max_len", "160", "--generate_max_len", "32"]
    assert_bf16_ran(*run_both(tmp_path, argv, "sft"))


def test_reward_model_step_under_bf16(pretrained, tmp_path):
    out = pretrained[0]
    argv = ["--stage", "rm", "--init_from", str(out / "fp32" / "pretrain"), "--max_samples", "16", "--max_steps", "2",
            "--train_batch_size", "8", "--micro_train_batch_size", "4", "--eval_steps", "0", "--n_eval", "8",
            "--prompt_max_len", "96", "--no_progress", "--device", "cpu"]
    fp32, bf16 = run_both(tmp_path, argv, "rm")
    assert_bf16_ran(fp32, bf16)
    assert_bf16_ran(fp32, bf16, "chosen_reward")


def test_ppo_update_under_bf16(pretrained, tmp_path):
    """Two updates run; the first rollout is sampled from the policy the reference copies,
    and both log-probabilities come from the same float32 head on the same bf16 forward,
    so the KL is exactly 0 (as in fp32)."""
    out = pretrained[0]
    pre = out / "fp32" / "pretrain"
    RewardModel.from_gpt(checkpoint.load_gpt(pre)[0]).save(tmp_path / "rm", Tokenizer.load(pre / checkpoint.TOKENIZER))
    argv = ["--stage", "ppo", "--init_from", str(pre), "--reward_pretrain", str(tmp_path / "rm"), "--max_steps", "2",
            "--rollout_batch_size", "4", "--train_batch_size", "4", "--micro_train_batch_size", "2",
            "--ppo_epochs", "1", "--generate_max_len", "6", "--prompt_max_len", "112", "--no_progress",
            "--device", "cpu", "--dtype", "bf16", "--out_dir", str(tmp_path / "bf16")]
    assert train.main(argv) == 0
    lines = [json.loads(line) for line in (tmp_path / "bf16" / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    assert lines[0]["kl"] == 0.0
    assert all(torch.isfinite(torch.tensor([m["loss"], m["score"]])).all() for m in lines)


def test_peak_flops_for_mfu(monkeypatch):
    assert training.peak_flops("cpu", "bf16") is None and training.peak_flops("cuda", "fp32") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert training.peak_flops("cuda", "bf16") == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Other GPU")
    assert training.peak_flops("cuda", "bf16") is None
