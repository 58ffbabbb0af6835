import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import eval as evaluate_cli
import train
from plus import stage_flags
from plus import checkpoint, preferences, reward_trainer
from plus.data import PreferencePair, SFTExample, collate_shared_prompts, response_ids, truncate_query
from plus.gpt import GPT, GPTConfig
from plus.reward_head import RewardModel, load_reward_model
from plus.surprise import SurpriseRewardModel
from plus.world import World, export, swapped_references
from plus.tokenizer import Tokenizer
from ddp_helpers import ddp_worker, free_port

# ---- the loss of one micro-batch ----------------------------------------------------------

class FixedRewardModel(torch.nn.Module):
    """Stand-in reward model: fixed rewards, and fixed logits [R, T, V] whose log-softmax
    at the response positions gives the log-probs, so the LM term can be done by hand."""

    def __init__(self, rewards, logits):
        super().__init__()
        self.rewards, self.fixed = rewards, logits

    def forward(self, input_ids, attention_mask, response_tokens=None, segment_ids=None, read_at=None,
                return_logprobs=False):
        at, ids, _ = response_tokens
        logprobs = F.log_softmax(self.fixed[at[:, 0], at[:, 1]], dim=-1).gather(-1, ids[:, None])[:, 0]
        return (self.rewards, logprobs) if return_logprobs else self.rewards


def test_lm_loss_term_by_hand():
    # One pair: prompt [5, 6], chosen [7, 8], rejected [9], packed as one row
    # [5, 6, 7, 8, 9] with segments [0, 0, 1, 1, 2]. Column 1 (the prompt's end) predicts 7
    # and column 2 predicts 8; the prompt's first column and the rejected response must
    # not count.
    batch = collate_shared_prompts([PreferencePair(prompt=[5, 6], chosen=[7, 8], rejected=[9])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 1, 2]]
    assert batch["read_at"].tolist() == [[0, 3], [0, 4]]
    logits = torch.zeros(1, 5, 10)
    logits[0, 1, 7] = 2.0     # p(7) = e^2 / (e^2 + 9)
    logits[0, 2, 8] = -1.0    # p(8) = e^-1 / (e^-1 + 9)
    logits[0, 0, 6] = -50.0   # a prompt token: ignored
    logits[0, 4, 3] = -50.0   # the rejected response: ignored
    model = FixedRewardModel(torch.tensor([0.3, -0.2]), logits)
    chosen, rejected, nll_sum = reward_trainer.pair_forward(model, batch, "cpu", with_lm=True)
    expected = -(math.log(math.e ** 2 / (math.e ** 2 + 9)) + math.log(math.e ** -1 / (math.e ** -1 + 9)))
    assert float(nll_sum) == pytest.approx(expected, rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.3]) and rejected.tolist() == pytest.approx([-0.2])
    assert reward_trainer.pair_forward(model, batch, "cpu", with_lm=False)[2] is None


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models here gain nothing from two threads, and on a busy 2-core machine
    two threads waiting for each other make a run 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(World(0).corpus(300), vocab_size=400)


def tiny_config(tokenizer, family="gpt2"):
    make = GPTConfig.gpt2_style if family == "gpt2" else GPTConfig.llama_style
    return make(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16)


def surprise_by_hand(rm: RewardModel, logits_row: torch.Tensor, ids: list[int], start: int) -> float:
    """sum over the tokens ids[start:] of g(-log p, entropy), with a plain log-softmax and
    the MLP written out: w2 . silu(W1 [s, H] + b1) + b2."""
    (w1, b1), (w2, b2) = ((layer.weight.double(), layer.bias.double()) for layer in (rm.surprise.mlp[0], rm.surprise.mlp[2]))
    total = 0.0
    for t in range(start, len(ids)):
        logp = F.log_softmax(logits_row[t - 1].double(), dim=-1)
        entropy = -(logp.exp() * logp).sum()
        x = w1 @ torch.stack([-logp[ids[t]], entropy]) + b1
        total += float(w2 @ (x * torch.sigmoid(x)) + b2)
    return total


@pytest.mark.parametrize("family,surprise", [("gpt2", False), ("llama", False), ("gpt2", True), ("llama", True)])
def test_one_forward_gives_the_rewards_and_lm_loss_of_separate_passes(tokenizer, family, surprise):
    # Pairs 0 and 2 share a prompt and their chosen response (it counts twice in the LM
    # term); pair 3 shares the prompt too. Each sequence is also scored alone, unpadded.
    torch.manual_seed(0)
    rm = (SurpriseRewardModel if surprise else RewardModel)(tiny_config(tokenizer, family)).eval()
    if surprise:  # the term starts at zero; give it weights that show
        torch.nn.init.normal_(rm.surprise.mlp[2].weight)
        torch.nn.init.constant_(rm.surprise.mlp[2].bias, 0.1)
    eos = tokenizer.eos_id
    pairs = [PreferencePair([11, 12, 13], [14, 15, eos], [16, eos]),
             PreferencePair([17], [18, 19, 20, 21, eos], [22, 23, 24, 25, 26, 27, eos]),
             PreferencePair([11, 12, 13], [14, 15, eos], [30, 31, eos]),
             PreferencePair([11, 12, 13], [16, eos], [30, 31, eos])]
    with torch.no_grad():
        batch = collate_shared_prompts(pairs, tokenizer.pad_id)
        chosen, rejected, nll_sum = reward_trainer.pair_forward(rm, batch, "cpu", True)
        # scoring padded rows (what eval and PPO do) gives the same rewards
        scored = reward_trainer.score(rm, reward_trainer.pair_rows(pairs), tokenizer.pad_id, 3, "cpu", raw=True)
        assert torch.allclose(scored.float(), torch.cat([chosen, rejected]), rtol=0, atol=1e-5)
        # and so does score_pairs, in batches of 3 pairs, longest first (pairs 1, 2, 0, then 3)
        packed_chosen, packed_rejected = reward_trainer.score_pairs(rm, pairs, tokenizer.pad_id, 3, "cpu")
        assert torch.allclose(torch.cat([packed_chosen, packed_rejected]), scored, rtol=0, atol=1e-5)
        expected_nll = 0.0
        for i, p in enumerate(pairs):  # each sequence alone, unpadded, with a plain log-softmax
            for response, got in ((p.chosen, chosen[i]), (p.rejected, rejected[i])):
                ids = torch.tensor([p.prompt + response])
                hidden = rm.backbone(ids)
                expected = float(rm.head.raw(hidden)[0, -1])
                if surprise:
                    expected += surprise_by_hand(rm, rm.backbone.logits(hidden)[0], ids[0].tolist(), len(p.prompt))
                # float32 model against a float64 sum of terms of a few units each
                assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-5)
            ids = torch.tensor([p.prompt + p.chosen])
            logp = F.log_softmax(rm.backbone.logits(rm.backbone(ids))[0], dim=-1)
            for t in range(len(p.prompt), len(p.prompt) + len(p.chosen)):
                expected_nll -= float(logp[t - 1, ids[0, t]])
    assert float(nll_sum) == pytest.approx(expected_nll, rel=1e-5)
    assert batch["input_ids"].shape[0] == 2  # two prompts, two rows


def test_pair_metrics_by_hand():
    pairs = [PreferencePair([1], [2], [3], gold=g) for g in (1.0, 0.0, 1.0, None)]
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0, 1.0, -2.0])
    m = reward_trainer.pair_metrics(chosen, rejected, pairs)
    d = [2.0, -1.0, 0.0, 3.0]  # r_c - r_r
    assert m["loss"] == pytest.approx(sum(math.log1p(math.exp(-x)) for x in d) / 4)
    assert m["label_accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)   # a tie counts half
    # gold: pair 0 right, pair 1 right (gold says chosen is worse, the model agrees), pair 2 a tie.
    assert m["gold_agreement"] == pytest.approx((1 + 1 + 0.5) / 3) and m["n_gold"] == 3
    assert m["margin"] == pytest.approx(1.0) and m["chosen_reward"] == pytest.approx(1.0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    conf = [sig(2), sig(1), 0.5, sig(3)]  # 0.881, 0.731, 0.5, 0.953 -> bins 0.8, 0.7, 0.5, 0.9
    rows = {tuple(r["bin"]): r for r in m["calibration"]}
    assert sorted(rows) == [(0.5, 0.6), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
    assert rows[(0.7, 0.8)]["mean_predicted"] == pytest.approx(conf[1])
    assert rows[(0.7, 0.8)]["label_frequency"] == 0.0 and rows[(0.7, 0.8)]["gold_frequency"] == 1.0
    assert rows[(0.5, 0.6)]["label_frequency"] == 0.5
    assert "gold_frequency" not in rows[(0.9, 1.0)]  # its one pair has no gold verdict
    assert m["ece"] == pytest.approx((abs(conf[0] - 1) + abs(conf[1] - 0) + 0 + abs(conf[3] - 1)) / 4)


# ---- end to end through train.main --------------------------------------------------------

@pytest.fixture(scope="module")
def sft_dirs(tokenizer, tmp_path_factory):
    """Tiny 'SFT' checkpoints of both families (random weights: training only has to run)."""
    root = tmp_path_factory.mktemp("sft")
    for family in ("gpt2", "llama"):
        torch.manual_seed(0)
        gpt = GPT(tiny_config(tokenizer, family))
        checkpoint.save_checkpoint(root / family, gpt, {"stage": "sft", "model": gpt.config.to_dict()}, tokenizer)
    return root


PROMPT_MAX_LEN = 96  # short sequences keep every run well under a second
RM = ["--stage", "rm", "--max_samples", "24", "--train_batch_size", "8", "--micro_train_batch_size", "2",
      "--n_eval", "8", "--eval_steps", "0", "--prompt_max_len", str(PROMPT_MAX_LEN), "--no_progress"]


def rm_args(init, out, *extra):
    return RM + ["--init_from", str(init), "--out_dir", str(out), *extra]


def run(args):
    assert train.main(list(args)) == 0


def losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "rm" / "metrics.jsonl").read_text().splitlines()]


def world_references(tokenizer, split, n):
    return [SFTExample(truncate_query(tokenizer, p.subreddit, p.title, p.post, PROMPT_MAX_LEN),
                       response_ids(tokenizer, p.summary, 48)) for p in World(0).posts(split, n)]


def alone(e):
    """(input_ids, attention_mask, response_tokens) of one (prompt, response) in a batch of
    its own, no padding."""
    ids = torch.tensor([e.prompt + e.response])
    tokens = (torch.tensor([[0, len(e.prompt) - 1 + j] for j in range(len(e.response))]),
              torch.tensor(e.response), torch.zeros(len(e.response), dtype=torch.long))
    return ids, torch.ones_like(ids), tokens


def one_by_one(rm, examples):
    """Each (prompt, response) scored in a batch of its own, no padding."""
    with torch.no_grad():
        return torch.tensor([float(rm(*alone(e))[0]) for e in examples], dtype=torch.float64)


def test_the_surprise_term_is_on_by_default_on_the_world_and_off_on_a_file(sft_dirs, tmp_path):
    """A new reward model on the built-in world carries the term (stage_flags.WORLD_TOKEN_SURPRISE);
    on a file it is the plain model of Stiennon et al."""

    run(rm_args(sft_dirs / "gpt2", tmp_path / "world", "--max_steps", "1"))
    rm, _, config = load_reward_model(tmp_path / "world" / "rm")
    assert stage_flags.WORLD_TOKEN_SURPRISE and isinstance(rm, SurpriseRewardModel) and config["token_surprise"] is True
    export(tmp_path / "files", n_train=1, n_valid=1, n_test=1, n_comparisons=24)
    run(rm_args(sft_dirs / "gpt2", tmp_path / "file", "--max_steps", "1", "--dataset",
                str(tmp_path / "files" / "comparisons_train.jsonl")))
    rm, _, config = load_reward_model(tmp_path / "file" / "rm")
    assert type(rm) is RewardModel and config["token_surprise"] is False


def test_the_plain_reward_is_the_head_at_the_last_token(tokenizer, sft_dirs, tmp_path):
    """--no-token_surprise (a file's default) saves the reward model of Stiennon et al.:
    w . h_last + b, normalized (gain and bias), computed here by hand from the saved weights."""
    run(rm_args(sft_dirs / "gpt2", tmp_path, "--normalize_reward", "--no-token_surprise"))
    rm, _, config = load_reward_model(tmp_path / "rm")
    assert type(rm) is RewardModel and config["token_surprise"] is False and "token_surprise" not in config["reward"]
    assert config["lm_loss_coeff"] == 0.1  # the LM loss of Cheng et al. at its default
    state = checkpoint.load_state_dict(tmp_path / "rm")
    assert not any(name.startswith("surprise.") for name in state)
    w, b = state["head.linear.weight"][0].double(), float(state["head.linear.bias"])
    gain, bias = float(state["head.gain"]), float(state["head.bias"])
    assert gain != 1.0 and bias != 0.0  # normalized, so the check below applies both
    examples = world_references(tokenizer, "valid", 6)
    scored = reward_trainer.score(rm, examples, tokenizer.pad_id, 4, "cpu")  # right-padded batches
    for e, got in zip(examples, scored):
        with torch.no_grad():
            h_last = rm.backbone(torch.tensor([e.prompt + e.response]))[0, -1].double()  # [C], unpadded
        assert float(got) == pytest.approx(gain * (float(h_last @ w) + b) + bias, abs=1e-5)


def test_references_average_zero_after_training_and_eval_reports_it(tokenizer, sft_dirs, tmp_path):
    run(rm_args(sft_dirs / "gpt2", tmp_path / "a", "--normalize_reward", "--token_surprise"))
    rm, _, config = load_reward_model(tmp_path / "a" / "rm")
    assert config["reward"]["reference"]["n_references"] == 24 and config["normalize_reward"]
    # the surprise term, as asked, and the LM loss at its default 0.1
    assert config["reward"]["token_surprise"] and isinstance(rm, SurpriseRewardModel)
    assert config["lm_loss_coeff"] == 0.1
    rewards = one_by_one(rm, world_references(tokenizer, "train", 24))  # the 24 training posts' references
    assert abs(float(rewards.mean())) < 1e-5
    assert float(rewards.std(correction=0)) == pytest.approx(1.0, abs=1e-5)
    # the surprise term's mean over those references, kept for the critic: reward minus head, alone
    with torch.no_grad():
        terms = [float(rm.raw_rewards(*alone(e)) - rm.raw_parts(*alone(e))[0])
                 for e in world_references(tokenizer, "train", 24)]
    assert config["reward"]["reference"]["reference_surprise_mean_raw"] == pytest.approx(sum(terms) / 24, abs=1e-5)

    # The customized-from-general chain: a reward model starts the next one, whose
    # normalization is its own (gain and bias are reset before training, set after).
    run(rm_args(tmp_path / "a" / "rm", tmp_path / "b", "--max_samples", "16"))
    rm_b, _, config_b = load_reward_model(tmp_path / "b" / "rm")
    assert isinstance(rm_b, SurpriseRewardModel)  # kept from the reward model it started from
    assert config_b["reward"]["reference"]["n_references"] == 16 and not config_b["normalize_reward"]
    assert abs(float(one_by_one(rm_b, world_references(tokenizer, "train", 16)).mean())) < 1e-5

    # eval.py --stage rm: the held-out figures, computed here another way.
    assert evaluate_cli.main(["--out_dir", str(tmp_path / "a"), "--stage", "rm", "--n_pairs", "12",
                              "--prompt_max_len", str(PROMPT_MAX_LEN), "--n_swap_posts", "6"]) == 0
    report = json.loads((tmp_path / "a" / "eval" / "report.json").read_text())["reward_model"]
    heldout = one_by_one(rm, world_references(tokenizer, "valid", 12))
    assert report["reference_mean"] == pytest.approx(float(heldout.mean()), abs=1e-5)
    assert report["train_reference_mean"] == pytest.approx(0.0, abs=1e-6)
    pairs, _ = preferences.load_preference_pairs("synthetic", tokenizer, split="valid", n=12, on_bad_record="skip",
                                          prompt_max_len=PROMPT_MAX_LEN)
    chosen = one_by_one(rm, [SFTExample(p.prompt, p.chosen) for p in pairs])
    rejected = one_by_one(rm, [SFTExample(p.prompt, p.rejected) for p in pairs])
    gold = [p.gold * (c > r) + (1 - p.gold) * (c < r) for p, c, r in zip(pairs, chosen, rejected)]
    assert report["n_pairs"] == len(pairs)
    assert report["gold_agreement"] == pytest.approx(float(sum(gold)) / len(pairs))
    assert report["label_accuracy"] == pytest.approx(float((chosen > rejected).double().mean()))
    assert report["token_surprise"] is True
    # The minimal pairs: each reference against its one-fact swaps, scored one by one.
    rng, expected = random.Random("eval/swaps/0"), {}
    for post in World(0).posts("valid", 6):
        prompt = truncate_query(tokenizer, post.subreddit, post.title, post.post, PROMPT_MAX_LEN)
        reference = response_ids(tokenizer, post.summary, 48)
        for fact, text in swapped_references(post, rng):
            swapped = response_ids(tokenizer, text, 48)
            if swapped != reference:
                r = one_by_one(rm, [SFTExample(prompt, reference), SFTExample(prompt, swapped)])
                expected.setdefault(fact, []).append(float(r[0] > r[1]))
    expected["all"] = [h for hits in list(expected.values()) for h in hits]
    assert len(expected["all"]) >= 12
    assert {fact: (row["n"], row["agreement"]) for fact, row in report["swap_agreement"].items()} == \
        {fact: (len(h), pytest.approx(sum(h) / len(h))) for fact, h in expected.items()}
    assert "## Reward model\n\nThe reward: the head at the EOS plus the surprise term" in \
        (tmp_path / "a" / "eval" / "report.md").read_text()


def test_interrupted_then_resumed_run_matches_uninterrupted(sft_dirs, tmp_path, monkeypatch):
    args = ("--max_samples", "40", "--max_steps", "4", "--lm_loss_coeff", "0.1", "--eval_steps", "2")
    run(rm_args(sft_dirs / "gpt2", tmp_path / "a", *args))

    real_save = checkpoint.save_checkpoint

    def save_then_die(*a, **kw):
        real_save(*a, **kw)
        raise KeyboardInterrupt("killed after the step-2 save")

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.main(rm_args(sft_dirs / "gpt2", tmp_path / "b", *args, "--save_steps", "2"))
    monkeypatch.undo()
    assert checkpoint.load_trainer_state(tmp_path / "b" / "rm")[0]["step"] == 2
    run(rm_args(sft_dirs / "gpt2", tmp_path / "b", *args, "--resume"))

    a, b = checkpoint.load_state_dict(tmp_path / "a" / "rm"), checkpoint.load_state_dict(tmp_path / "b" / "rm")
    for name in a:  # the normalization buffers included
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0, msg=name)
    assert losses(tmp_path / "b") == losses(tmp_path / "a") and len(losses(tmp_path / "a")) == 4


def test_two_processes_follow_the_single_process_loss_curve(sft_dirs, tmp_path):
    # The comparisons come from a file, so the two processes need not build the gold judge.
    export(tmp_path / "world", n_train=1, n_valid=1, n_test=1, n_comparisons=24)
    data_args = ["--dataset", str(tmp_path / "world" / "comparisons_train.jsonl"), "--on_bad_record", "skip",
                 "--max_steps", "3"]
    # llama-style with the plain reward (an untied LM head, which gets no gradient without
    # the LM loss and the surprise term: DDP must not wait for it); llama-style with the
    # surprise term and no LM loss (the untied head is used, so it must not be frozen);
    # gpt2-style with the defaults: the plain reward and the LM loss (normalized by the
    # global token count); and gpt2-style with the surprise term and the LM loss.
    configs = {"plain": ("llama", ["--no-token_surprise", "--lm_loss_coeff", "0"]),
               "surprise": ("llama", ["--token_surprise", "--lm_loss_coeff", "0"]), "defaults": ("gpt2", []),
               "surprise_lm": ("gpt2", ["--token_surprise"])}
    for name, (family, extra) in configs.items():
        run(rm_args(sft_dirs / family, tmp_path / f"{name}_1", *data_args, *extra))
    runs = [rm_args(sft_dirs / family, tmp_path / f"{name}_2", *data_args, *extra)
            for name, (family, extra) in configs.items()]
    torch.multiprocessing.spawn(ddp_worker, args=([free_port() for _ in runs], runs), nprocs=2, join=True)
    for family in configs:
        one, two = losses(tmp_path / f"{family}_1"), losses(tmp_path / f"{family}_2")
        assert len(one) == len(two) == 3
        for x, y in zip(one, two):
            assert abs(x - y) <= 1e-4 * abs(x), (family, one, two)
    # The untied LM head: left as it was without the term and the LM loss, trained with the term.
    start = checkpoint.load_state_dict(sft_dirs / "llama")["lm_head.weight"]
    for name, trained in (("plain", False), ("surprise", True)):
        head = checkpoint.load_state_dict(tmp_path / f"{name}_2" / "rm")["backbone.lm_head.weight"]
        assert torch.equal(head, start) != trained, name


def test_exported_comparisons_train_like_the_builtin_world(sft_dirs, tmp_path):
    export(tmp_path / "world", n_train=1, n_valid=1, n_test=1, n_comparisons=24)
    # The world's summaries of a pair differ within 30 words; with this nearly byte-level
    # tokenizer that takes more than the usual 48 response tokens to see.
    # The same form of reward model for both (the world's default adds the surprise term).
    long_responses = ["--generate_max_len", "150", "--no-token_surprise"]
    run(rm_args(sft_dirs / "gpt2", tmp_path / "builtin", *long_responses))
    # The file is read with the default --on_bad_record error: every exported record is valid.
    run(rm_args(sft_dirs / "gpt2", tmp_path / "file", "--dataset", str(tmp_path / "world" / "comparisons_train.jsonl"),
                *long_responses))
    assert losses(tmp_path / "file") == losses(tmp_path / "builtin") and len(losses(tmp_path / "file")) == 3
    a, b = checkpoint.load_state_dict(tmp_path / "builtin" / "rm"), checkpoint.load_state_dict(tmp_path / "file" / "rm")
    for name in a:
        if not name.startswith("head.gain") and not name.startswith("head.bias"):  # references differ (see docs)
            assert torch.equal(a[name], b[name]), name


# ---- bad input -----------------------------------------------------------------------------

GOOD = [{"prompt": f"TITLE: my boyfriend {i}\n\nTL;DR:", "chosen": "he cheated on me", "rejected": "I feel sad"}
        for i in range(8)]
BAD = {
    "invalid JSON": '{"prompt": "TL;DR:", "chosen": "a"',
    "missing key 'rejected'": {"prompt": "TL;DR:", "chosen": "he cheated"},
    "'chosen' is empty": {"prompt": "TL;DR:", "chosen": "  ", "rejected": "I feel sad"},
    "'rejected' should be a string or a list of chat messages, got int": {"prompt": "TL;DR:", "chosen": "a b",
                                                                          "rejected": 5},
    "undecodable bytes": b'{"prompt": "\xff\xfe", "chosen": "a", "rejected": "b"}',
    "chosen and rejected responses are identical": {"prompt": "TL;DR:", "chosen": "same", "rejected": "same"},
}


def write_lines(path, records):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode())
                              + b"\n" for r in records))
    return path


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_record_fails_before_any_step(problem, sft_dirs, tmp_path, capsys):
    path = write_lines(tmp_path / "prefs.jsonl", GOOD[:2] + [BAD[problem]] + GOOD[2:])
    code = train.main(rm_args(sft_dirs / "gpt2", tmp_path, "--dataset", str(path), "--prompt_key", "prompt"))
    assert code == 1
    assert f"{path}:3: {problem}" in capsys.readouterr().err
    assert not (tmp_path / "rm").exists()


def test_bad_records_are_skipped_and_counted(sft_dirs, tmp_path, capsys):
    path = write_lines(tmp_path / "prefs.jsonl", GOOD[:4] + list(BAD.values()) + GOOD[4:])
    run(rm_args(sft_dirs / "gpt2", tmp_path, "--dataset", str(path), "--prompt_key", "prompt", "--on_bad_record",
                "skip", "--train_batch_size", "4"))
    out = capsys.readouterr().out
    assert f"[rm] {path} (train): skipped {len(BAD)} bad records (" in out
    assert f"first: {path}:5: " in out  # the first bad record follows the 4 good ones
    assert checkpoint.load_config(tmp_path / "rm")["n_pairs"] == len(GOOD)


def test_unknown_domain_and_key_name_list_the_valid_ones(sft_dirs, tmp_path, capsys):
    path = write_lines(tmp_path / "prefs.jsonl", GOOD)
    with pytest.raises(SystemExit):
        train.main(rm_args(sft_dirs / "gpt2", tmp_path, "--dataset", str(path), "--domain", "cooking"))
    assert "academy" in capsys.readouterr().err
    assert train.main(rm_args(sft_dirs / "gpt2", tmp_path, "--dataset", str(path), "--chosen_key", "better")) == 1
    assert f"{path}:1: missing key 'better' (record has: chosen, prompt, rejected)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--stage", "rm", "--margin_key", "m"], "--margin_key describes a preference file"),
    (["--stage", "rm", "--domain", "academy"], "--domain describes a preference file"),
    (["--stage", "sft", "--lm_loss_coeff", "0.1"], "--lm_loss_coeff only applies to --stage rm"),
    (["--stage", "sft", "--chosen_key", "a", "--dataset", "x.jsonl"], "--chosen_key only applies to --stage rm"),
    (["--stage", "rm", "--input_key", "q", "--dataset", "x.jsonl"], "for --stage rm use --prompt_key"),
    (["--stage", "rm", "--lm_loss_coeff", "-1"], "--lm_loss_coeff must be >= 0"),
    (["--stage", "rm", "--summaries_per_post", "3", "--dataset", "x.jsonl"], "--summaries_per_post applies to the built-in"),
    (["--stage", "rm", "--summaries_per_post", "1"], "--summaries_per_post must be >= 2"),
    (["--stage", "sft", "--summaries_per_post", "3"], "--summaries_per_post only applies to --stage rm"),
    (["--stage", "ppo", "--no-token_surprise"], "--token_surprise only applies to --stage rm"),
    (["--stage", "rm", "--resume", "--token_surprise"], "--token_surprise does not apply to --resume"),
])
def test_contradictory_flags_are_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        train.main(argv)
    assert message in capsys.readouterr().err


def test_default_micro_batch_fits_the_global_batch_on_every_process_count():
    # rm: global 32, micro-batch default 32 -> 16 per process on 2 processes, 8 on 4; a
    # micro-batch the user set is kept (and checked by the stage).
    parse = stage_flags.build_parser().parse_args
    micro = {n: stage_flags.stage_args(parse(["--stage", "rm"]), "rm", n).micro_train_batch_size for n in (1, 2, 4)}
    assert micro == {1: 32, 2: 16, 4: 8} and stage_flags.STAGE_DEFAULTS["rm"]["micro_train_batch_size"] == 32
    assert stage_flags.stage_args(parse(["--stage", "rm", "--train_batch_size", "128"]), "rm", 2).micro_train_batch_size == 32
    assert stage_flags.stage_args(parse(["--stage", "rm", "--micro_train_batch_size", "32"]), "rm", 2).micro_train_batch_size == 32


def test_init_from_a_reward_model_keeps_adds_or_refuses_to_drop_the_surprise_term(sft_dirs, tmp_path, capsys):
    run(rm_args(sft_dirs / "gpt2", tmp_path / "plain", "--no-token_surprise", "--max_samples", "16"))
    assert type(load_reward_model(tmp_path / "plain" / "rm")[0]) is RewardModel
    run(rm_args(tmp_path / "plain" / "rm", tmp_path / "grown", "--token_surprise", "--max_samples", "16"))
    assert isinstance(load_reward_model(tmp_path / "grown" / "rm")[0], SurpriseRewardModel)
    capsys.readouterr()
    assert train.main(rm_args(tmp_path / "grown" / "rm", tmp_path / "dropped", "--no-token_surprise")) == 1
    assert "trained with its surprise term; it cannot be dropped" in capsys.readouterr().err
    assert not (tmp_path / "dropped" / "rm").exists()
