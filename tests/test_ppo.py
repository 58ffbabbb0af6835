import json
import math
from dataclasses import replace

import pytest
import torch

import train
from plus import checkpoint, data, ppo
from plus.distributed import Dist
from plus.generate import left_pad
from plus.gpt import GPT, GPTConfig
from plus.reward_head import RewardModel
from plus.surprise import SurpriseRewardModel
from plus.world import World
from plus.tokenizer import Tokenizer
from plus.value_head import Critic

PROMPT_MAX_LEN = 96
LOGGED = ("step", "loss", "policy_loss", "value_loss", "kl", "kl_coef", "entropy", "score", "rlhf_reward",
          "approx_kl", "clipfrac", "ratio_mean", "explained_variance", "eos_rate", "response_length",
          "tokens_per_s")


# ---------------------------------------------------------------------------- the reward


def test_per_token_rewards_by_hand():
    # Three responses of lengths 3, 4 and 1 in 4 columns; kl_coef 0.1.
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    kl = torch.tensor([[0.5, -0.2, 1.0, 9.0], [0.1, 0.2, 0.3, 0.4], [2.0, 7.0, 7.0, 7.0]])
    scores = torch.tensor([1.5, -2.0, 0.25])
    expected = torch.tensor([
        [-0.05, 0.02, -0.1 + 1.5, 0.0],      # score on the EOS (column 2); nothing on padding
        [-0.01, -0.02, -0.03, -0.04 - 2.0],
        [-0.2 + 0.25, 0.0, 0.0, 0.0],         # a response that is only its EOS
    ])
    torch.testing.assert_close(ppo.per_token_rewards(scores, kl, mask, kl_coef=0.1), expected)


def test_per_token_rewards_with_token_scores_by_hand():
    # The same kind of layout, with parts of each score that single tokens earned: each
    # token gets its part, the EOS the rest of the score (the total is unchanged).
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    kl = torch.tensor([[0.5, -0.2, 1.0, 9.0], [2.0, 7.0, 7.0, 7.0]])
    scores = torch.tensor([1.5, 0.25])
    token_scores = torch.tensor([[0.2, -0.1, 0.3, 5.0], [0.4, 9.0, 9.0, 9.0]])  # padding's entries are ignored
    expected = torch.tensor([
        [-0.05 + 0.2, 0.02 - 0.1, -0.1 + 0.3 + (1.5 - 0.4), 0.0],
        [-0.2 + 0.4 + (0.25 - 0.4), 0.0, 0.0, 0.0],  # only its EOS: the score, as without parts
    ])
    rewards = ppo.per_token_rewards(scores, kl, mask, kl_coef=0.1, token_scores=token_scores)
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(rewards.sum(1), scores - 0.1 * (kl * mask).sum(1))


def test_missing_eos_penalty_replaces_only_unfinished_scores():
    scores = torch.tensor([1.5, -0.2, 2.0, float("nan")])
    ended = torch.tensor([True, False, True, False])
    out = ppo.apply_missing_eos_penalty(scores, ended, penalty=-3.0)
    assert out.tolist() == [1.5, -3.0, 2.0, -3.0]  # the reward model's score of an unfinished response is never used


def test_response_logprobs_and_values_are_read_at_the_right_columns():
    # Left-padded prompts of different lengths followed by responses with padding after
    # EOS: every response token's log-prob (at temperature 0.7) and value must equal those
    # of an unpadded single-sequence forward at position len(prompt) - 1 + t.
    torch.manual_seed(0)
    config = GPTConfig.gpt2_style(vocab_size=29, block_size=32, n_layer=2, n_head=2, n_embd=16)
    model, critic = GPT(config).eval(), Critic(config).eval()
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    responses = [[14, 15, 1], [16, 1], [17, 18, 19]]  # EOS = 1; the last one never ended
    prompt_ids, prompt_mask = left_pad(prompts, pad_id=0)
    N = max(map(len, responses))
    response_ids = torch.zeros(3, N, dtype=torch.long)
    response_mask = torch.zeros(3, N, dtype=torch.long)
    for i, r in enumerate(responses):
        response_ids[i, :len(r)], response_mask[i, :len(r)] = torch.tensor(r), 1
    input_ids = torch.cat([prompt_ids, response_ids], 1)
    attention_mask = torch.cat([prompt_mask, response_mask], 1)
    with torch.no_grad():
        logprobs, entropy = ppo.response_logprobs(model, input_ids, attention_mask, response_ids, response_mask,
                                                  0.7, return_entropy=True)
        values = ppo.response_values(critic, input_ids, attention_mask, N)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            seq = torch.tensor([p + r])
            logits = model.logits(model(seq))[0] / 0.7
            for t, token in enumerate(r):
                dist = logits[len(p) - 1 + t].log_softmax(-1)
                assert logprobs[i, t].item() == pytest.approx(dist[token].item(), abs=1e-5)
                assert entropy[i, t].item() == pytest.approx(-(dist.exp() * dist).sum().item(), abs=1e-5)
            expected_values = critic(seq, torch.ones_like(seq))[0, len(p) - 1:len(p) - 1 + len(r)]
            torch.testing.assert_close(values[i, :len(r)], expected_values, atol=1e-5, rtol=1e-5)
            assert (logprobs[i, len(r):] == 0).all()


# ---------------------------------------------------------------------------- tiny runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained 'SFT' policy and reward model on a small BPE of the world's text."""
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = Tokenizer.train(World(0).corpus(300), vocab_size=400)
    torch.manual_seed(0)
    config = GPTConfig.gpt2_style(vocab_size=tokenizer.vocab_size, block_size=PROMPT_MAX_LEN + 16, n_layer=1,
                                  n_head=2, n_embd=16)
    policy = GPT(config)
    with torch.no_grad():
        # Make EOS likely (logit ~4 at every position), so that responses have different
        # lengths: the final hidden state becomes mostly a constant pointing at EOS's
        # (tied) embedding row.
        eos_row = policy.tok_emb.weight[tokenizer.eos_id]
        policy.norm_f.weight.mul_(0.1)
        policy.norm_f.bias.copy_(eos_row * 4 / eos_row.square().sum())
    checkpoint.save_checkpoint(root / "sft", policy, {"stage": "sft", "model": config.to_dict()}, tokenizer=tokenizer)
    RewardModel.from_gpt(policy).save(root / "rm", tokenizer)
    return root


def ppo_flags(tiny, out, *extra):
    return ["--stage", "ppo", "--out_dir", str(out), "--init_from", str(tiny / "sft"), "--reward_pretrain",
            str(tiny / "rm"), "--max_steps", "2", "--rollout_batch_size", "8", "--train_batch_size", "4",
            "--micro_train_batch_size", "2", "--ppo_epochs", "2", "--generate_max_len", "6", "--prompt_max_len",
            str(PROMPT_MAX_LEN), "--learning_rate", "1e-3", "--critic_learning_rate", "1e-3", "--no_progress",
            *extra]


def test_sigterm_finishes_the_update_saves_the_policy_and_names_resume(tiny, tmp_path, monkeypatch, capsys):
    """SIGTERM during the first of two updates: the update finishes, the policy is saved as
    the run's policy, bit for bit the snapshot an uninterrupted run saves after that update,
    exit 0, and the message names the flags that continue the run."""
    import os
    import signal

    assert train.main(ppo_flags(tiny, tmp_path / "whole", "--save_steps", "1")) == 0
    real_rollout = ppo.rollout

    def rollout_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler only raises a flag
        return real_rollout(*args, **kwargs)
    monkeypatch.setattr(ppo, "rollout", rollout_then_signal)
    capsys.readouterr()
    assert train.main(ppo_flags(tiny, tmp_path / "stopped")) == 0
    monkeypatch.undo()
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"[ppo] stopped by SIGTERM after update 1 of 2; saved to {tmp_path / 'stopped' / 'ppo'}: continue with the "
        "same flags and --stage ppo --resume")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    stopped = checkpoint.load_state_dict(tmp_path / "stopped" / "ppo")
    snapshot = checkpoint.load_state_dict(tmp_path / "whole" / "ppo" / ppo.SNAPSHOTS / "step_1")
    assert stopped.keys() == snapshot.keys() and all(torch.equal(stopped[k], snapshot[k]) for k in stopped)
    assert checkpoint.load_config(tmp_path / "stopped" / "ppo")["step"] == 1
    first = json.loads((tmp_path / "whole" / "ppo" / "metrics.jsonl").read_text().splitlines()[0])
    (line,) = (tmp_path / "stopped" / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["loss"] == first["loss"]


def test_resume_after_sigterm_continues_bit_for_bit(tiny, tmp_path, monkeypatch):
    """Four updates uninterrupted, and four stopped by SIGTERM during update 2 then resumed
    with --resume: the same policy, critic and metrics, bit for bit (on CPU). The adaptive
    KL controller makes its coefficient part of what must survive the stop."""
    import os
    import signal

    flags = ("--max_steps", "4", "--kl_target", "0.01", "--kl_horizon", "100")
    assert train.main(ppo_flags(tiny, tmp_path / "whole", *flags)) == 0
    real_rollout, calls = ppo.rollout, []

    def rollout_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only raises a flag: update 2 finishes
        return real_rollout(*args, **kwargs)
    monkeypatch.setattr(ppo, "rollout", rollout_then_signal)
    assert train.main(ppo_flags(tiny, tmp_path / "stopped", *flags)) == 0
    monkeypatch.undo()
    out = tmp_path / "stopped" / "ppo"
    assert checkpoint.load_config(out)["step"] == 2 and checkpoint.load_trainer_state(out)[0]["step"] == 2
    assert checkpoint.load_gpt(out)[2]["stage"] == "ppo"  # still a plain policy checkpoint
    calls.clear()
    monkeypatch.setattr(ppo, "rollout", lambda *args, **kwargs: calls.append(1) or real_rollout(*args, **kwargs))
    assert train.main(ppo_flags(tiny, tmp_path / "stopped", *flags, "--resume")) == 0
    monkeypatch.undo()
    assert len(calls) == 2  # updates 3 and 4 only

    for sub in ("", ppo.CRITIC):
        whole = checkpoint.load_state_dict(tmp_path / "whole" / "ppo" / sub)
        resumed = checkpoint.load_state_dict(out / sub)
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole), sub
    timing = ("tokens_per_s", "rollout_s", "step_s")

    def metrics(run):
        lines = (tmp_path / run / "ppo" / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]
    whole_metrics = metrics("whole")
    assert [m["step"] for m in whole_metrics] == [1, 2, 3, 4]
    assert len({m["kl_coef"] for m in whole_metrics}) > 1  # the coefficient moved
    assert metrics("stopped") == whole_metrics


def test_two_updates_through_train_main_log_every_key_and_keep_snapshots(tiny, tmp_path):
    assert train.main(ppo_flags(tiny, tmp_path, "--save_steps", "1")) == 0
    lines = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        missing = [k for k in LOGGED if k not in m]
        assert not missing, missing
        assert 0 <= m["eos_rate"] <= 1 and 1 <= m["response_length"] <= 6
        assert m["kl_coef"] == pytest.approx(0.05)  # fixed coefficient without --kl_target
    # The first update's rollout was sampled by the SFT policy itself, so its KL is exactly 0.
    assert lines[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert lines[1]["kl"] != 0.0
    # The final save replaced ppo/ but kept the snapshot written after update 1.
    model, _, config = checkpoint.load_gpt(tmp_path / "ppo" / "checkpoints" / "step_1")
    assert config["stage"] == "ppo" and config["step"] == 1
    final = checkpoint.load_state_dict(tmp_path / "ppo")
    sft = checkpoint.load_state_dict(tiny / "sft")
    assert any(not torch.equal(final[k], sft[k]) for k in final)  # the policy did move


def test_fewer_prompts_than_a_rollout_batch_shrink_the_batches_and_config_says_so(tiny, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"my friend and i went out {i} TL;DR:"}) + "\n" for i in range(6)))
    assert train.main(ppo_flags(tiny, tmp_path, "--dataset", str(prompts), "--max_steps", "1")) == 0
    # 6 prompts: a rollout of 6, minibatches of the largest divisor of 6 not above 4 (3),
    # micro-batches of the largest divisor of 3 not above 2 (1)
    assert ("[ppo] 6 prompts are fewer than one rollout batch: training with --rollout_batch_size 6 "
            "--train_batch_size 3 --micro_train_batch_size 1") in capsys.readouterr().out
    ran = checkpoint.load_config(tmp_path / "ppo")["ppo"]
    assert (ran["rollout_batch_size"], ran["train_batch_size"], ran["micro_train_batch_size"]) == (6, 3, 1)
    assert ran["ppo_epochs"] == 2 and ran["max_steps"] == 1


def capture_rollouts(tiny, cfg, out_dir, score_fn=None):
    """Run ppo.train on the tiny models, returning the rollouts seen by on_update."""
    policy, tokenizer, _ = checkpoint.load_gpt(tiny / "sft")
    ref, _, _ = checkpoint.load_gpt(tiny / "sft")
    torch.manual_seed(0)  # the reward head's initialization
    rm = RewardModel.from_gpt(ref)
    posts = World(0).posts("train", cfg.max_steps * cfg.rollout_batch_size)
    prompts = [data.truncate_query(tokenizer, p.subreddit, p.title, p.post, PROMPT_MAX_LEN) for p in posts]
    seen = []
    ppo.train(policy=policy, ref_policy=ref, critic=Critic.from_reward_model(rm),
              score_fn=score_fn or ppo.reward_model_scorer(rm, tokenizer.pad_id, 8, "cpu"), tokenizer=tokenizer,
              prompts=prompts, out_dir=out_dir, config={"stage": "ppo", "model": policy.config.to_dict()},
              cfg=cfg, on_update=lambda step, rollout, stats: seen.append((rollout, stats)) or {"seen": len(seen)})
    return seen, policy


def test_missing_eos_penalty_and_reward_layout_inside_the_loop(tiny, tmp_path):
    cfg = ppo.PPOConfig(max_steps=1, rollout_batch_size=8, train_batch_size=8, micro_train_batch_size=4,
                        ppo_epochs=1, generate_max_len=3, missing_eos_penalty=-7.0, reward_clip=5.0,
                        no_progress=True)
    seen, _ = capture_rollouts(tiny, cfg, tmp_path,
                               score_fn=lambda prompts, responses, idx: torch.full((len(prompts),), 9.0))
    rollout, stats = seen[0]
    assert stats["seen"] == 1  # what on_update returns is logged with the update's stats
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["seen"] == 1
    assert (~rollout.ended).any(), "an untrained model should not end within 3 tokens"
    # Unfinished responses get the penalty; finished ones the (clipped) score 9 -> 5.
    expected = torch.where(rollout.ended, torch.tensor(5.0), torch.tensor(-7.0))
    torch.testing.assert_close(rollout.scores, expected)
    # The KL term is 0 (policy = reference at sampling time), so the reward is the score on
    # the last response token and 0 everywhere else.
    last = rollout.response_mask.sum(1) - 1
    for i in range(8):
        row = torch.zeros(rollout.responses.shape[1])
        row[last[i]] = expected[i]
        torch.testing.assert_close(rollout.rewards[i], row, atol=1e-6, rtol=0)


def test_several_samples_per_prompt_are_paid_against_each_other(tiny, tmp_path):
    # 4 prompts x 3 samples; the score is the prompt's index (shared by its samples, what
    # the group baseline must cancel) plus the response's length.
    cfg = ppo.PPOConfig(max_steps=1, rollout_batch_size=4, n_samples_per_prompt=3, group_baseline=True,
                        train_batch_size=6, micro_train_batch_size=3, ppo_epochs=1, generate_max_len=6,
                        missing_eos_penalty=-2.0, no_progress=True)

    def score_fn(prompts, responses, indices):
        return torch.tensor([float(i + len(r)) for i, r in zip(indices, responses)])

    seen, _ = capture_rollouts(tiny, cfg, tmp_path, score_fn=score_fn)
    rollout, stats = seen[0]
    indices = rollout.prompt_indices
    assert len(indices) == 12 and len(set(indices)) == 4
    assert all(indices[3 * g:3 * g + 3] == [indices[3 * g]] * 3 for g in range(4))  # each prompt's samples together
    lengths = rollout.response_mask.sum(1).tolist()
    assert len({tuple(r) for r in rollout.response_lists()}) > 4  # a prompt's samples differ
    # What the scorer said (clipped to 10), the penalty where a response never ended ...
    raw = [min(float(i + n), 10.0) if e else -2.0 for i, n, e in zip(indices, lengths, rollout.ended.tolist())]
    torch.testing.assert_close(rollout.scores, torch.tensor(raw))
    assert stats["score"] == pytest.approx(sum(raw) / 12, rel=1e-6)  # the log keeps the scores themselves
    # ... and what the EOS was paid: each score less the mean of its prompt's two other samples'
    # (no KL yet: the policy is the reference at the first update).
    paid = [raw[k] - sum(raw[j] for j in range(3 * (k // 3), 3 * (k // 3) + 3) if j != k) / 2 for k in range(12)]
    torch.testing.assert_close(rollout.rewards.sum(1), torch.tensor(paid), atol=1e-5, rtol=0)
    last = rollout.response_mask.sum(1) - 1
    assert all(float(rollout.rewards[k, last[k]]) == pytest.approx(paid[k], abs=1e-5) for k in range(12))


def test_group_baseline_needs_two_samples_per_prompt(capsys):
    with pytest.raises(SystemExit):
        train.main(["--stage", "ppo", "--group_baseline"])
    assert "--group_baseline compares a prompt's samples with each other" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--stage", "rm", "--n_samples_per_prompt", "2"])
    assert "--n_samples_per_prompt only applies to --stage ppo" in capsys.readouterr().err


def test_accumulated_micro_batches_match_one_big_micro_batch(tiny, tmp_path):
    # The losses are token means over the whole minibatch, whatever its split into micro-
    # batches. To see the gradient itself in the weights: AdamW with a huge eps takes the
    # step lr * g / eps (its first step is otherwise sign(g)), and no gradient clipping.
    base = ppo.PPOConfig(max_steps=1, rollout_batch_size=8, train_batch_size=8, micro_train_batch_size=2,
                         ppo_epochs=1, generate_max_len=6, learning_rate=1.0, critic_learning_rate=1.0,
                         adam_eps=1e3, max_grad_norm=1e9, no_progress=True)
    start = checkpoint.load_state_dict(tiny / "sft")
    steps, lengths = [], []
    for micro in (2, 8):
        seen, policy = capture_rollouts(tiny, replace(base, micro_train_batch_size=micro), tmp_path / str(micro))
        lengths.append(seen[0][0].response_mask.sum(1).tolist())
        steps.append({k: v.detach() - start[k] for k, v in policy.state_dict().items() if k in start})
    assert lengths[0] == lengths[1] and len(set(lengths[0])) > 2  # same rollout, responses of different lengths
    for name in steps[0]:
        torch.testing.assert_close(steps[0][name], steps[1][name], atol=1e-7, rtol=1e-3, msg=name)
    assert max(float(s.abs().max()) for s in steps[0].values()) > 1e-4  # the weights did move


def test_nan_reward_stops_the_run_naming_step_and_quantity(tiny, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = ppo.reward_model_scorer

    def scorer_with_nan_at_update_2(*args, **kwargs):
        score_fn = real(*args, **kwargs)

        def scored(prompts, responses, indices):
            calls["n"] += 1
            scores = score_fn(prompts, responses, indices)
            if calls["n"] == 2:
                scores[3] = float("nan")
            return scores

        return scored

    monkeypatch.setattr(ppo, "reward_model_scorer", scorer_with_nan_at_update_2)
    assert train.main(ppo_flags(tiny, tmp_path, "--save_steps", "1", "--max_steps", "3", "--ppo_epochs", "1")) == 1
    err = capsys.readouterr().err
    assert "step 2: score is nan" in err
    assert f"the last saved checkpoint ({tmp_path / 'ppo'}) is intact" in err  # the resumable one, after update 1
    for saved in (tmp_path / "ppo", tmp_path / "ppo" / "checkpoints" / "step_1"):
        model, _, config = checkpoint.load_gpt(saved)  # the last good checkpoints still load
        assert config["step"] == 1
    lines = (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1]


def test_ppo_flags_are_rejected_for_other_stages(capsys):
    with pytest.raises(SystemExit):
        train.main(["--stage", "sft", "--init_kl_coef", "0.1"])
    assert "--init_kl_coef only applies to --stage ppo" in capsys.readouterr().err


# ---------------------------------------------------------------------------- evaluation


def test_sequence_kl_is_the_summed_exact_kl_of_each_response():
    from plus import evaluation
    from plus.generate import generate

    torch.manual_seed(1)
    config = GPTConfig.gpt2_style(vocab_size=23, block_size=32, n_layer=1, n_head=2, n_embd=16)
    policy, ref = GPT(config).eval(), GPT(config).eval()
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12]]
    prompt_ids, prompt_mask = left_pad(prompts, pad_id=0)
    samples = generate(policy, prompt_ids, prompt_mask, 5, eos_id=1, pad_id=0, temperature=0.7,
                       generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        kl = evaluation.sequence_kl(policy, ref, prompt_ids, prompt_mask, samples, 0.7)
        for i, prompt in enumerate(prompts):
            response = samples.tokens[i, :int(samples.mask[i].sum())].tolist()
            seq = torch.tensor([prompt + response])
            logp = (policy.logits(policy(seq))[0] / 0.7).log_softmax(-1)
            logq = (ref.logits(ref(seq))[0] / 0.7).log_softmax(-1)
            expected = sum(float((logp[t].exp() * (logp[t] - logq[t])).sum())
                           for t in range(len(prompt) - 1, len(prompt) - 1 + len(response)))
            assert kl[i].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_eval_pairs_ppo_and_sft_samples_on_the_same_posts(tiny, tmp_path):
    # With learning rate 0 the "PPO" policy is the SFT policy, so with the same posts and
    # seed both sample the same summaries: every comparison is a tie and the KL is 0.
    import eval as evaluation

    assert train.main(ppo_flags(tiny, tmp_path, "--learning_rate", "0", "--critic_learning_rate", "0",
                                "--save_steps", "1", "--ppo_epochs", "1")) == 0
    flags = ["--out_dir", str(tmp_path), "--stage", "ppo", "--n_eval", "8", "--n_curve", "4", "--batch_size", "4",
             "--generate_max_len", "6", "--prompt_max_len", str(PROMPT_MAX_LEN)]
    assert evaluation.main(flags) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    row = report["policy"]["ppo"]
    assert row["win_rate_vs_sft"] == 0.5 and row["kl_to_sft"] == pytest.approx(0.0, abs=1e-6)
    assert "proxy_reward" in row and "gold_score" in row
    assert [p["step"] for p in report["ppo_curve"]] == [0, 1, 2]
    assert len({round(p["proxy_reward"], 6) for p in report["ppo_curve"]}) == 1  # one policy, one proxy reward
    assert "## Over-optimization" in (tmp_path / "eval" / "report.md").read_text()


def test_rollouts_are_scored_with_the_reward_models_surprise_term_token_by_token(tiny, tmp_path):
    policy, tokenizer, _ = checkpoint.load_gpt(tiny / "sft")
    torch.manual_seed(0)
    rm = SurpriseRewardModel.from_gpt(policy).eval()
    torch.nn.init.normal_(rm.surprise.mlp[2].weight)  # the term starts at zero; make it count
    gain, bias = 0.5, 0.2
    with torch.no_grad():  # a normalization, so that both show
        rm.head.gain.fill_(gain)
        rm.head.bias.fill_(bias)
    cfg = ppo.PPOConfig(max_steps=1, rollout_batch_size=8, train_batch_size=8, micro_train_batch_size=4,
                        ppo_epochs=1, generate_max_len=6, reward_clip=1e6, missing_eos_penalty=-7.0, no_progress=True)
    seen, _ = capture_rollouts(tiny, cfg, tmp_path, score_fn=ppo.reward_model_scorer(rm, tokenizer.pad_id, 8, "cpu"))
    rollout, _ = seen[0]
    P = rollout.input_ids.shape[1] - rollout.responses.shape[1]
    last = rollout.response_mask.sum(1) - 1
    checked = 0
    # The first rollout is sampled by the reference itself, so its KL is 0 and the rewards
    # are the score's parts alone.
    for i, response in enumerate(rollout.response_lists()):
        n = len(response)
        if not rollout.ended[i]:  # the missing-EOS penalty replaces the whole score, parts included
            row = torch.zeros(rollout.responses.shape[1])
            row[last[i]] = -7.0
            torch.testing.assert_close(rollout.rewards[i], row, atol=1e-6, rtol=0)
            continue
        prompt = rollout.input_ids[i, :P][rollout.attention_mask[i, :P].bool()].tolist()
        ids = torch.tensor([prompt + response])
        tokens = (torch.tensor([[0, len(prompt) - 1 + j] for j in range(n)]), torch.tensor(response),
                  torch.zeros(n, dtype=torch.long))
        with torch.no_grad():  # the sequence alone, unpadded: the head at its EOS and the term of each token
            head, terms, _ = rm.raw_parts(ids, torch.ones_like(ids), tokens)
        # the score: the normalized head plus the term's sum
        assert float(rollout.scores[i]) == pytest.approx(gain * float(head + terms.sum()) + bias, rel=1e-5, abs=1e-5)
        # paid token by token: each token its term (normalized), the EOS also the head's score
        expected = gain * terms
        expected[-1] += gain * head[0] + bias
        torch.testing.assert_close(rollout.rewards[i, :n], expected, rtol=1e-5, atol=1e-5)
        assert (rollout.rewards[i, n:] == 0).all()
        assert abs(float(terms.sum())) > 1e-3
        checked += 1
    assert checked >= 2


def test_fit_rollout_to_prompts_by_hand():
    cfg = ppo.PPOConfig(rollout_batch_size=64, train_batch_size=32, micro_train_batch_size=16)
    small = ppo.fit_rollout_to_prompts(cfg, 20, world_size=1)
    assert (small.rollout_batch_size, small.train_batch_size, small.micro_train_batch_size) == (20, 20, 10)
    two = ppo.fit_rollout_to_prompts(cfg, 21, world_size=2)   # 20 prompts, minibatch 20 (10 each), micro 10
    assert (two.rollout_batch_size, two.train_batch_size, two.micro_train_batch_size) == (20, 20, 10)
    odd = ppo.fit_rollout_to_prompts(cfg, 7, world_size=1)    # 7 is prime: minibatch 7, micro 7
    assert (odd.rollout_batch_size, odd.train_batch_size, odd.micro_train_batch_size) == (7, 7, 7)
    with pytest.raises(ValueError, match="cannot give each of the 2 processes one"):
        ppo.fit_rollout_to_prompts(cfg, 1, world_size=2)
    with pytest.raises(ValueError, match="--train_batch_size 1 cannot give each of the 2 processes one response"):
        ppo.fit_rollout_to_prompts(replace(cfg, train_batch_size=1), 5, world_size=2)
