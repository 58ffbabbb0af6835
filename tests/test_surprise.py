import pytest
import torch

from plus import checkpoint
from plus.reward_head import RewardModel, last_token_index, load_reward_model
from plus.surprise import SurpriseRewardModel, apply_token_surprise
from plus.tokenizer import Tokenizer
from plus.value_head import Critic
from test_reward_head import CORPUS, SEQS, right_padded, tiny_config, trained_looking_rm


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(CORPUS, vocab_size=300)


def response_tokens_of(seqs: list[list[int]], prompt_len: int):
    """(at, ids, owner) of the tokens after the first `prompt_len` of each right-padded row."""
    at = [(i, t - 1) for i, s in enumerate(seqs) for t in range(prompt_len, len(s))]
    return (torch.tensor(at), torch.tensor([s[t] for s in seqs for t in range(prompt_len, len(s))]),
            torch.tensor([i for i, _ in at]))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_surprise_term_starts_at_zero_then_adds_its_sum(family):
    torch.manual_seed(0)
    rm = SurpriseRewardModel(tiny_config(family)).eval()
    plain = RewardModel(tiny_config(family)).eval()
    plain.load_state_dict(rm.state_dict(), strict=False)  # the same backbone and head
    ids, mask = right_padded(SEQS, pad_id=1, junk=True)
    tokens = response_tokens_of(SEQS, prompt_len=1)
    with torch.no_grad():
        # A new term is exactly zero: the reward model of Stiennon et al.
        assert torch.equal(rm.raw_rewards(ids, mask, tokens), plain.raw_rewards(ids, mask))
        # With weights: the plain reward plus, per response token t at column c, the MLP of
        # (-log p, entropy) of the softmax at column c - 1, by hand.
        torch.nn.init.normal_(rm.surprise.mlp[2].weight)
        got = rm.raw_rewards(ids, mask, tokens)
        logp = torch.log_softmax(rm.backbone.logits(rm.backbone(ids, attention_mask=mask)).double(), -1)
        w1, b1 = rm.surprise.mlp[0].weight.double(), rm.surprise.mlp[0].bias.double()
        w2 = rm.surprise.mlp[2].weight[0].double()
        for i, s in enumerate(SEQS):
            expected = float(plain.raw_rewards(ids, mask)[i])
            for t in range(1, len(s)):
                entropy = -(logp[i, t - 1].exp() * logp[i, t - 1]).sum()
                x = w1 @ torch.stack([-logp[i, t - 1, s[t]], entropy]) + b1
                expected += float(w2 @ torch.nn.functional.silu(x))
            assert float(got[i]) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    with pytest.raises(ValueError, match="needs response_tokens"):
        rm.raw_rewards(ids, mask)


def test_adding_the_term_copies_the_model_and_draws_only_the_term():
    """from_reward_model builds no model of its own: the random numbers it draws are those
    of one new term, its weights are that term's, and the reward model it started from is
    copied, not changed."""
    from plus.surprise import SurpriseTerm

    plain = trained_looking_rm()
    torch.manual_seed(5)
    expected_term = SurpriseTerm()
    after_term = torch.get_rng_state()
    torch.manual_seed(5)
    grown = SurpriseRewardModel.from_reward_model(plain)
    assert torch.equal(torch.get_rng_state(), after_term)
    for name, tensor in expected_term.state_dict().items():
        assert torch.equal(grown.surprise.state_dict()[name], tensor), name
    assert type(plain) is RewardModel and not hasattr(plain, "surprise")
    for name, tensor in plain.state_dict().items():
        assert torch.equal(grown.state_dict()[name], tensor), name
        assert grown.state_dict()[name].data_ptr() != tensor.data_ptr(), name  # a copy, not shared
    assert grown.head.normalization == plain.head.normalization


def test_surprise_term_saved_loaded_added_not_dropped(tmp_path, tokenizer):
    torch.manual_seed(0)
    rm = SurpriseRewardModel(tiny_config("gpt2")).eval()
    torch.nn.init.normal_(rm.surprise.mlp[2].weight)
    ids, mask = right_padded(SEQS, pad_id=tokenizer.pad_id)
    tokens = response_tokens_of(SEQS, prompt_len=1)
    rm.save(tmp_path / "rm", tokenizer)
    # The checkpoint format: the term's weights under surprise.mlp.*, and config.json says so.
    assert {"surprise.mlp.0.weight", "surprise.mlp.0.bias", "surprise.mlp.2.weight", "surprise.mlp.2.bias"} <= \
        set(checkpoint.load_state_dict(tmp_path / "rm"))
    loaded, _, config = load_reward_model(tmp_path / "rm")
    assert config["reward"]["token_surprise"] is True and isinstance(loaded, SurpriseRewardModel)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask, tokens), rm(ids, mask, tokens))
    assert apply_token_surprise(loaded, None, tmp_path / "rm") is loaded
    assert apply_token_surprise(loaded, True, tmp_path / "rm") is loaded
    with pytest.raises(checkpoint.CheckpointError, match="cannot be dropped"):
        apply_token_surprise(loaded, False, tmp_path / "rm")

    # A reward model without the term gets a new one that changes no reward.
    trained_looking_rm().save(tmp_path / "plain", tokenizer)
    plain, _, config = load_reward_model(tmp_path / "plain")
    assert type(plain) is RewardModel and "token_surprise" not in config["reward"]
    assert apply_token_surprise(plain, False, tmp_path / "plain") is plain
    grown = apply_token_surprise(plain, True, tmp_path / "plain")
    assert isinstance(grown, SurpriseRewardModel)
    with torch.no_grad():
        assert torch.equal(grown(ids, mask, tokens), plain(ids, mask))


def test_surprise_term_trains_the_backbone_through_its_inputs():
    """With the EOS head at zero the reward is the surprise term alone, and its gradient
    must still reach the backbone (through log p and the entropy): the directional
    derivative along a random change of the embedding matches finite differences."""
    torch.manual_seed(0)
    rm = SurpriseRewardModel(tiny_config("llama"))
    torch.nn.init.normal_(rm.surprise.mlp[2].weight)
    with torch.no_grad():
        rm.head.linear.weight.zero_()
    ids, mask = right_padded(SEQS, pad_id=1)
    tokens = response_tokens_of(SEQS, prompt_len=1)
    emb = rm.backbone.tok_emb.weight
    rm.raw_rewards(ids, mask, tokens).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    direction = torch.randn_like(emb) * float(emb.detach().std())  # a change of 1% of the weights' scale
    with torch.no_grad():
        eps, before = 1e-2, emb.detach().clone()
        emb.copy_(before + eps * direction)
        up = float(rm.raw_rewards(ids, mask, tokens).sum())
        emb.copy_(before - eps * direction)
        down = float(rm.raw_rewards(ids, mask, tokens).sum())
        emb.copy_(before)
    assert float((emb.grad * direction).sum()) == pytest.approx((up - down) / (2 * eps), rel=2e-2)


def test_critic_takes_the_surprise_terms_reference_mean():
    torch.manual_seed(0)
    rm = SurpriseRewardModel(tiny_config("gpt2")).eval()
    torch.nn.init.normal_(rm.surprise.mlp[2].weight)
    ids, mask = right_padded(SEQS, pad_id=1)
    tokens = response_tokens_of(SEQS, prompt_len=1)
    rows, last = torch.arange(len(SEQS)), last_token_index(mask)
    with torch.no_grad():
        head, terms, _ = rm.raw_parts(ids, mask, tokens)
        surprise = torch.zeros_like(head).index_add(0, tokens[2], terms)  # each sequence's sum
        rm.set_normalization(head, surprise, normalize_std=True)
        rewards = rm(ids, mask, tokens)
        values = Critic.from_reward_model(rm).eval()(ids, mask)[rows, last]
    s = surprise.double().mean()
    assert rm.head.normalization["reference_surprise_mean_raw"] == pytest.approx(float(s))
    # the normalized reward with the term replaced by its mean over these "references"
    expected = float(rm.head.gain) * (head.double() + s) + float(rm.head.bias)
    assert torch.allclose(values.double(), expected, rtol=0, atol=1e-5)
    # so on them the critic averages what the reward averages, 0; one by one they differ
    assert abs(float(values.double().mean())) < 1e-5 and abs(float(rewards.double().mean())) < 1e-5
    assert not torch.allclose(values, rewards, atol=1e-3)
