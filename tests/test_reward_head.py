import math

import pytest
import torch

from plus import checkpoint
from plus.gpt import GPT, GPTConfig
from plus.reward_head import RewardHead, RewardModel, last_token_index, load_reward_model
from plus.tokenizer import Tokenizer
from plus.value_head import Critic

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "summaries are short", "tl;dr the cat is fine"] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=300)


def tiny_config(family: str, vocab_size: int = 300, **kw) -> GPTConfig:
    make = GPTConfig.gpt2_style if family == "gpt2" else GPTConfig.llama_style
    return make(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16, **kw)


def trained_looking_rm(family: str = "gpt2", seed: int = 0) -> RewardModel:
    """A reward model with a visibly non-zero head bias (a fresh head has bias 0, which
    would hide a bug that drops it)."""
    torch.manual_seed(seed)
    rm = RewardModel(tiny_config(family)).eval()
    with torch.no_grad():
        rm.head.linear.bias.fill_(0.3)
    return rm


def right_padded(seqs: list[list[int]], pad_id: int, junk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] ids and mask; with junk=True the padding holds random ids instead of pad_id,
    so reading a padding position would give a different number."""
    T = max(map(len, seqs))
    ids = torch.randint(2, 300, (len(seqs), T)) if junk else torch.full((len(seqs), T), pad_id)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


SEQS = [[5, 17, 42, 0], [9, 9, 120, 33, 250, 7, 0], [64, 0]]


def test_last_token_index_by_hand():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 3, 0]
    with pytest.raises(ValueError, match=r"rows \[1\] are all padding"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_reward_read_at_last_token_equals_unpadded_score(family):
    rm = trained_looking_rm(family).double()
    ids, mask = right_padded(SEQS, pad_id=1, junk=True)
    rewards = rm.raw_rewards(ids, mask)
    # Another way: run each sequence alone (no padding at all, no mask) and apply the
    # head's weights by hand to its final hidden state.
    w, b = rm.head.linear.weight[0], rm.head.linear.bias[0]
    for i, s in enumerate(SEQS):
        hidden = rm.backbone(torch.tensor([s]))[0, -1]  # [C]
        assert torch.allclose(rewards[i].double(), (hidden @ w + b).float().double(), rtol=0, atol=1e-6)
    # And under padding, float32: each row equals that row's batch-of-one score.
    rm32 = trained_looking_rm(family)
    batch = rm32.raw_rewards(ids, mask)
    alone = torch.stack([rm32.raw_rewards(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in SEQS])
    assert torch.allclose(batch, alone, rtol=0, atol=1e-6)


def test_head_init_std_and_zero_bias():
    torch.manual_seed(0)
    d = 16383
    head = RewardHead(d)
    w = head.linear.weight.double().flatten()
    expected = 1 / math.sqrt(d + 1)  # = 1/128
    # The sample std of 16383 normal draws is within ~0.55% (1 sigma) of the true std.
    assert abs(w.std().item() / expected - 1) < 0.03
    assert abs(w.mean().item()) < 4 * expected / math.sqrt(d)
    assert head.linear.bias.item() == 0.0
    assert head.gain.item() == 1.0 and head.bias.item() == 0.0
    critic_head = Critic(tiny_config("gpt2")).head.linear
    assert critic_head.bias.item() == 0.0


def test_normalization_by_hand():
    head = RewardHead(4)
    raw = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, population variance (4+1+0+9)/4 = 3.5
    stats = head.set_normalization(raw, normalize_std=False)
    assert stats == {"reference_mean_raw": 3.0, "reference_std_raw": math.sqrt(3.5), "n_references": 4,
                     "normalize_std": False}
    assert head.gain.item() == 1.0 and head.bias.item() == -3.0
    assert head.normalize(raw).tolist() == [-2.0, -1.0, 0.0, 3.0]

    head.set_normalization(raw, normalize_std=True)
    s = math.sqrt(3.5)
    assert head.gain.item() == pytest.approx(1 / s, rel=1e-7)
    assert head.bias.item() == pytest.approx(-3 / s, rel=1e-7)
    normalized = head.normalize(raw).double()
    assert torch.allclose(normalized, torch.tensor([-2, -1, 0, 3], dtype=torch.float64) / s, atol=1e-6)
    assert abs(normalized.mean().item()) < 1e-6
    assert normalized.std(correction=0).item() == pytest.approx(1.0, abs=1e-6)

    with pytest.raises(ValueError, match="std"):
        head.set_normalization(torch.tensor([2.0, 2.0]), normalize_std=True)
    with pytest.raises(ValueError, match="at least one"):
        head.set_normalization(torch.tensor([]), normalize_std=False)


def test_forward_is_normalized_raw():
    rm = trained_looking_rm()
    ids, mask = right_padded(SEQS, pad_id=1)
    with torch.no_grad():
        raw = rm.raw_rewards(ids, mask)
        rm.head.set_normalization(raw, normalize_std=True)
        rewards = rm(ids, mask)
    assert torch.allclose(rewards, rm.head.gain * raw + rm.head.bias, rtol=0, atol=0)
    assert abs(rewards.mean().item()) < 1e-6
    assert rewards.double().std(correction=0).item() == pytest.approx(1.0, abs=1e-5)


def test_dropout_must_be_off():
    with pytest.raises(ValueError, match="dropout"):
        RewardModel(tiny_config("gpt2", dropout=0.1))
    with pytest.raises(ValueError, match="dropout"):
        Critic(tiny_config("gpt2", dropout=0.1))
    assert RewardModel.from_gpt(GPT(tiny_config("gpt2", dropout=0.1))).config.dropout == 0.0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_save_load_round_trip(tmp_path, tokenizer, family):
    rm = trained_looking_rm(family)
    ids, mask = right_padded(SEQS, pad_id=tokenizer.pad_id)
    with torch.no_grad():
        rm.head.set_normalization(rm.raw_rewards(ids, mask) + 0.7, normalize_std=True)
        before = rm(ids, mask)
    rm.save(tmp_path / "rm", tokenizer, extra_config={"dataset": "synthetic"})

    loaded, tok, config = load_reward_model(tmp_path / "rm")
    with torch.no_grad():
        after = loaded(ids, mask)
    assert torch.equal(before, after) and type(loaded) is RewardModel
    assert loaded.head.gain.item() == rm.head.gain.item() and loaded.head.bias.item() == rm.head.bias.item()
    assert config["stage"] == "rm" and config["dataset"] == "synthetic"
    assert config["reward"]["gain"] == rm.head.gain.item()
    assert config["reward"]["reference"] == rm.head.normalization
    assert loaded.head.normalization == rm.head.normalization
    assert tok.encode("the cat") == tokenizer.encode("the cat")


@pytest.mark.parametrize("damage, problem", [
    (lambda f: f.unlink(), "missing (a checkpoint carries its tokenizer)"),
    (lambda f: f.write_text('{"model": '), "unreadable tokenizer ("),
])
def test_a_broken_tokenizer_is_one_checkpoint_error_naming_the_file(tmp_path, tokenizer, damage, problem):
    trained_looking_rm().save(tmp_path / "rm", tokenizer)
    damage(tmp_path / "rm" / checkpoint.TOKENIZER)
    with pytest.raises(checkpoint.CheckpointError) as e:
        load_reward_model(tmp_path / "rm")
    assert str(e.value).startswith(f"{tmp_path / 'rm' / checkpoint.TOKENIZER}: {problem}")
    assert "\n" not in str(e.value)


def test_load_from_policy_checkpoint_gives_new_head(tmp_path, tokenizer):
    torch.manual_seed(1)
    gpt = GPT(tiny_config("gpt2")).eval()
    checkpoint.save_checkpoint(tmp_path / "sft", gpt, {"stage": "sft", "model": gpt.config.to_dict()}, tokenizer)
    torch.manual_seed(2)
    rm, _, config = load_reward_model(tmp_path / "sft")
    assert config["stage"] == "sft"
    for name, tensor in gpt.state_dict().items():
        assert torch.equal(rm.backbone.state_dict()[name], tensor), name
    assert rm.head.linear.bias.item() == 0.0 and rm.head.gain.item() == 1.0 and rm.head.normalization is None
    # The reward is the new head applied to the policy's own hidden state at the EOS.
    ids, mask = right_padded(SEQS, pad_id=tokenizer.pad_id)
    with torch.no_grad():
        rewards = rm(ids, mask)
        w = rm.head.linear.weight[0]
        expected = torch.stack([gpt(torch.tensor([s]))[0, -1] @ w for s in SEQS])
    assert torch.allclose(rewards, expected, rtol=0, atol=1e-5)

    # from_gpt builds the same backbone.
    same = RewardModel.from_gpt(gpt)
    for name, tensor in rm.backbone.state_dict().items():
        assert torch.equal(same.backbone.state_dict()[name], tensor), name


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_critic_from_reward_model(family):
    rm = trained_looking_rm(family)
    critic = Critic.from_reward_model(rm).eval()
    ids, mask = right_padded(SEQS, pad_id=1)
    last = last_token_index(mask)
    rows = torch.arange(len(SEQS))
    with torch.no_grad():
        values = critic(ids, mask)          # [B, T]
        raw = rm.raw_rewards(ids, mask)     # [B]
    # Before normalization (gain 1, bias 0): exactly the reward model's raw reward.
    assert torch.equal(values[rows, last], raw)
    # At every other real position: the same head applied to that position's hidden state.
    with torch.no_grad():
        hidden = rm.backbone(ids, attention_mask=mask)
        by_hand = hidden @ rm.head.linear.weight[0] + rm.head.linear.bias[0]  # [B, T]
    assert torch.allclose(values[mask.bool()], by_hand[mask.bool()], rtol=0, atol=1e-6)

    # After normalization the critic starts at the normalized reward PPO will receive.
    with torch.no_grad():
        rm.head.set_normalization(raw, normalize_std=True)
        critic = Critic.from_reward_model(rm).eval()
        values = critic(ids, mask)
        rewards = rm(ids, mask)
    assert torch.allclose(values[rows, last], rewards, rtol=0, atol=1e-5)
    assert not torch.allclose(rewards, raw, atol=1e-3)  # the check above is not vacuous
