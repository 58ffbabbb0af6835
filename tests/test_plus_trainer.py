"""PLUS (plus/plus_trainer.py): the summarizer's reward by hand, the reward model's input
(cue, z, the post cut to fit), z read after ##Summary, the reward model updated on exactly
the z that were scored, and `train.py --stage plus` for every method on a tiny model."""

import json
import math
from collections import Counter

import pytest
import torch

import eval as evaluate_cli
import train
from plus import checkpoint, plus_trainer, ppo
from plus.data import DataError, PlusRecord, format_query, parse_plus_record
from plus.gpt import GPT, GPTConfig
from plus.reward_head import RewardModel
from plus.stage_flags import PLUS_REWARD_WARMUP
from plus.tokenizer import Tokenizer
from plus.world import World
from plus.world.personas import Persona

CUE = plus_trainer.PREFERENCE_CUE


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(list(World(0).corpus(300)) + [CUE.format(z="I like short summaries.")], vocab_size=1000)


# ---- the summarizer's reward ------------------------------------------------------------------
def test_summarizer_reward_by_hand():
    chosen = torch.tensor([1.0, 3.0, -20.0, 40.0])
    rejected = torch.tensor([3.0, 1.0, 10.0, -10.0])
    # log sigma(d) = -log(1 + e^-d): d = -2, 2, -30 (clipped to -10), 50 (~0)
    expected = torch.tensor([-math.log(1 + math.exp(2)), -math.log(1 + math.exp(-2)), -10.0,
                             -math.log(1 + math.exp(-50))], dtype=torch.float64)
    torch.testing.assert_close(plus_trainer.summarizer_reward(chosen, rejected), expected)
    torch.testing.assert_close(plus_trainer.summarizer_reward(chosen, rejected, clip=1.0),
                               expected.clamp(-1.0, 1.0))


def test_summarizer_reward_with_the_per_token_kl_penalty_by_hand():
    # Two summaries of 3 and 2 tokens; k1: KL_t = log pi - log pi_0; beta = 0.01 (the paper's).
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -3.0, 0.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-0.7, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    scores = plus_trainer.summarizer_reward(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])).float()
    kl = ppo.kl_penalty(logprobs, ref_logprobs, "k1") * mask
    rewards = ppo.per_token_rewards(scores, kl, mask, kl_coef=0.01)
    ls2, ls0 = -math.log(1 + math.exp(-2)), -math.log(2)
    expected = torch.tensor([[-0.01 * 0.5, -0.01 * -1.0, -0.01 * 0.0 + ls2],
                             [-0.01 * 0.5, -0.01 * -1.0 + ls0, 0.0]])
    torch.testing.assert_close(rewards, expected)


# ---- what the models read ---------------------------------------------------------------------
def test_z_is_the_text_after_the_marker(tok):
    eos = tok.eos_id
    responses = [tok.encode(" draft ##Summary I like short summaries.") + [eos],
                 tok.encode(" Keep it short.") + [eos],  # no marker: the whole text
                 tok.encode(" ##Summary:")]              # no EOS, nothing after the marker
    assert plus_trainer.z_texts(tok, responses) == ["I like short summaries.", "Keep it short.", ""]


def test_conditioned_prompt_keeps_cue_and_z_and_cuts_the_post(tok):
    post = "\n".join(f"Paragraph {i} of the post is about my cat and my boyfriend." for i in range(8))
    query = format_query("cats", "my cat", post)
    z = "I like short summaries. I prefer formal wording."
    prefix = tok.encode(CUE.format(z=z))
    full = plus_trainer.conditioned_prompt_ids(tok, z, query, 1000)
    assert full == prefix + tok.encode(query)  # fits: nothing cut
    cut = plus_trainer.conditioned_prompt_ids(tok, z, query, len(prefix) + 60)
    assert len(cut) <= len(prefix) + 60 and cut[:len(prefix)] == prefix
    text = tok.decode(cut[len(prefix):])
    assert text.startswith("SUBREDDIT: r/cats\n\nTITLE: my cat\n\nPOST: Paragraph 0") and text.endswith("TL;DR:")
    assert "Paragraph 7" not in text  # the post lost its end
    assert plus_trainer.conditioned_prompt_ids(tok, None, query, 1000) == tok.encode(query)  # Bradley-Terry: no cue
    with pytest.raises(Exception, match="z and the cue take"):
        plus_trainer.conditioned_prompt_ids(tok, z, query, len(prefix))
    # A prompt in another format keeps its end.
    assert plus_trainer.conditioned_prompt_ids(tok, z, "one\ntwo\nthree", len(prefix) + len(tok.encode("three"))) \
        == prefix + tok.encode("three")


def test_context_loses_its_oldest_comparisons_first(tok):
    blocks = ["I chose: one\nOver: two", "I chose: four\nOver: three",
              "What I want from a TL;DR: ##Summary"]
    context = "\n\n".join(blocks)
    assert plus_trainer.context_prompt_ids(tok, context, 1000) == tok.encode(context)
    budget = len(tok.encode("\n\n".join(blocks[1:])))
    assert plus_trainer.context_prompt_ids(tok, context, budget) == tok.encode("\n\n".join(blocks[1:]))
    assert plus_trainer.icl_z(tok, context, 1000) == "\n\n".join(blocks[:2])  # without the request for z
    assert plus_trainer.last_blocks(tok, context, 0) == [] and plus_trainer.icl_z(tok, context, -3) == ""


def test_a_prompt_that_cannot_fit_names_its_record(tok):
    """z and the cue are never cut: a budget they fill is an error that names the record."""
    records = hand_records(2)
    z = "I like short summaries."
    budget = len(tok.encode(CUE.format(z=z)))
    with pytest.raises(DataError) as e:
        plus_trainer.conditioned_pairs(tok, records, [z, z], "train", budget, 8)
    assert str(e.value) == f"hand:0: train_prompt: z and the cue take {budget} tokens, the whole prompt budget of {budget}"
    settings = plus_trainer.PlusSettings(method="icl", prompt_max_len=budget)
    with pytest.raises(DataError, match=f"the in-context baseline: --prompt_max_len {budget} leaves no room"):
        plus_trainer.fixed_summaries("icl", records, tok, None, None, settings, seed=0)


# ---- the reward model sees the z that were scored ---------------------------------------------
class RecordingRewardModel(RewardModel):
    """A reward model that writes down the z of every sequence it reads."""

    def __init__(self, config, tokenizer):
        super().__init__(config)
        self.tokenizer, self.seen = tokenizer, []

    def hidden_states(self, input_ids, attention_mask, segment_ids=None):
        for row in input_ids.tolist():
            text = self.tokenizer.decode(row)
            start, end = "previous conversations: ", " In the following conversation"
            self.seen.append((self.training, text[text.index(start) + len(start):text.index(end)]))
        return super().hidden_states(input_ids, attention_mask, segment_ids)


def tiny_policy(tok, block_size=256):
    torch.manual_seed(0)
    return GPT(GPTConfig.gpt2_style(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16))


def saved_sft_policy(tok, path):
    """tiny_policy saved where --stage plus looks for the SFT policy."""
    policy = tiny_policy(tok)
    checkpoint.save_checkpoint(path, policy, {"stage": "sft", "model": policy.config.to_dict()}, tokenizer=tok)
    return policy


def hand_records(n):
    return [PlusRecord(context=f"I chose: a{i}\nOver: b{i}\n\nWhat I want from a TL;DR: ##Summary",
                       context_messages=[{"role": "user", "content": "c"}],
                       reward_prompt=format_query("cats", f"cat {i}", "She sleeps."), chosen="the cat sleeps",
                       rejected="a dog barks", train_prompt=format_query("cats", f"cat {i}", "She sleeps."),
                       train_chosen="cats nap", train_rejected="dogs run", eval_prompt=format_query("cats", "x", "y"),
                       eval_chosen="e", eval_rejected="f", persona="brief", source=f"hand:{i}") for i in range(n)]


def test_the_reward_model_update_sees_exactly_the_z_that_were_scored(tok, tmp_path):
    policy = tiny_policy(tok)
    ref = tiny_policy(tok)
    rm = RecordingRewardModel(policy.config, tok)
    rm.backbone.load_state_dict(policy.state_dict())
    cfg = ppo.PPOConfig(max_steps=2, rollout_batch_size=4, train_batch_size=2, micro_train_batch_size=2,
                        ppo_epochs=1, generate_max_len=8, init_kl_coef=0.01, no_progress=True)
    settings = plus_trainer.PlusSettings(method="plus", prompt_max_len=200, response_max_len=8)
    plus_trainer.train(summarizer=policy, ref_summarizer=ref, reward_model=rm, tokenizer=tok, records=hand_records(4),
                       out_dir=tmp_path, config={"model": policy.config.to_dict()}, cfg=cfg, settings=settings)
    scored = [z for training, z in rm.seen if not training]
    updated = [z for training, z in rm.seen if training]
    # Per update: the scorer and the pass each read 4 rows, one per pair, its two
    # responses packed after the prompt.
    assert len(scored) == 2 * 4 and len(updated) == 2 * 4
    for step in range(2):
        assert sorted(scored[4 * step:4 * step + 4]) == sorted(updated[4 * step:4 * step + 4])
    assert len(set(scored)) > 1  # sampled z differ
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and all("rm_accuracy" in m and "summarizer_reward" in m
                                                        for m in lines)
    assert all(-10 <= m["summarizer_reward"] <= 0 for m in lines)
    assert (tmp_path / "reward_model" / "model.safetensors").exists()
    assert (tmp_path / "summarizer" / "model.safetensors").exists()


def test_with_two_z_per_user_the_pass_reads_each_user_s_comparison_once_with_each_z(tok, tmp_path, monkeypatch):
    passes, reward_model_pass = [], plus_trainer.reward_model_pass

    def recording_pass(model, optimizer, pairs, *args, **kwargs):
        passes.append([p.source for p in pairs])
        return reward_model_pass(model, optimizer, pairs, *args, **kwargs)

    monkeypatch.setattr(plus_trainer, "reward_model_pass", recording_pass)
    cfg = ppo.PPOConfig(max_steps=2, rollout_batch_size=2, n_samples_per_prompt=2, group_baseline=True,
                        train_batch_size=2, micro_train_batch_size=2, ppo_epochs=1, generate_max_len=8,
                        init_kl_coef=0.01, no_progress=True)
    records = hand_records(4)
    updated = {}
    for method in ("plus", "oracle"):
        policy = tiny_policy(tok)
        rm = RecordingRewardModel(policy.config, tok)
        rm.backbone.load_state_dict(policy.state_dict())
        settings = plus_trainer.PlusSettings(method=method, prompt_max_len=200, response_max_len=8)
        plus_trainer.train(summarizer=policy, ref_summarizer=tiny_policy(tok), reward_model=rm, tokenizer=tok,
                           records=records, out_dir=tmp_path / method, config={"model": policy.config.to_dict()},
                           cfg=cfg, settings=settings)
        updated[method] = [z for training, z in rm.seen if training]
        # Each update's pass reads its two users' comparisons twice each (once with each z).
        assert len(passes) == 2 and all(sorted(Counter(p).values()) == [2, 2] for p in passes)
        passes.clear()
        if method == "plus":
            scored = [z for training, z in rm.seen if not training]
            assert len(scored) == 2 * 4  # 2 users x 2 z per update
            for step in range(2):
                assert sorted(scored[4 * step:4 * step + 4]) == sorted(updated["plus"][4 * step:4 * step + 4])
    # The oracle's pass takes the same steps on the same comparisons, with its one z (a user's two
    # identical comparisons share one row).
    assert set(updated["oracle"]) == {Persona(("brief",)).text}
    plus_users = [json.loads(line) for line in (tmp_path / "plus" / "summarizer" / "metrics.jsonl").read_text()
                  .splitlines()]
    assert [m["step"] for m in plus_users] == [1, 2]


# ---- the command line --------------------------------------------------------------------------
def test_stage_plus_runs_every_method_for_two_steps(tok, tmp_path):
    saved_sft_policy(tok, tmp_path / "sft")
    flags = ["--stage", "plus", "--out_dir", str(tmp_path), "--population", "p2", "--method", "all", "--n_users", "2",
             "--max_steps", "2", "--rollout_batch_size", "2", "--train_batch_size", "2",
             "--micro_train_batch_size", "2", "--ppo_epochs", "1", "--generate_max_len", "8", "--prompt_max_len",
             "240", "--warm_start_steps", "2", "--grounding_steps", "2", "--no_progress"]
    assert train.main(flags) == 0
    warm = checkpoint.load_config(tmp_path / "plus" / "summarizer_init")
    assert warm["warm_start"]["steps"] == 2 and warm["warm_start"]["documents"] == 2 * 16
    grounded = checkpoint.load_config(tmp_path / "plus" / "reward_init")
    assert grounded["grounding"]["steps"] == 2 and grounded["grounding_pairs"] == grounded["mixed_grounding_pairs"] == 32
    # the grounded model is the two passes made here by hand: the corpus's first 32
    # comparisons, then 32 of the mix from the next document on
    from plus.stage_flags import PLUS_GROUNDING, PLUS_GROUNDING_MIX
    from plus.world import self_description_document

    policy = tiny_policy(tok)
    torch.manual_seed(0)  # the head's initialization, as train.py seeds it
    by_hand = RewardModel.from_gpt(policy)
    corpus, index = [], 0
    while len(corpus) < 32:
        corpus += plus_trainer.grounding_pairs(tok, [self_description_document(index)], 240, 16)
        index += 1
    mixed, _ = plus_trainer.mixed_grounding_pairs(tok, PLUS_GROUNDING_MIX, 32, first_document=index, seed=0,
                                                  prompt_max_len=240, response_max_len=16)
    for pairs in (corpus[:32], mixed):
        plus_trainer.ground_reward_model(by_hand, pairs, pad_id=tok.pad_id, batch_size=16,
                                         learning_rate=PLUS_GROUNDING["learning_rate"], max_grad_norm=1.0,
                                         device="cpu")
    made = checkpoint.load_state_dict(tmp_path / "plus" / "reward_init")
    assert grounded["grounding_documents"] == index
    mine = by_hand.state_dict()  # what is saved: every tensor but the tied output head
    assert set(made) <= set(mine) and all(torch.equal(made[k], mine[k]) for k in made)
    assert checkpoint.load_config(tmp_path / "plus" / "p2" / "plus" / "reward_model")["summarizer_from"] == str(
        tmp_path / "plus" / "summarizer_init")
    for method in plus_trainer.METHODS:
        out = tmp_path / "plus" / "p2" / method
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in lines] == [1, 2] and all(0 <= m["rm_accuracy"] <= 1 for m in lines), method
        config = checkpoint.load_config(out / "reward_model")
        assert config["method"] == method and config["population"] == "p2"
        # z's budget is --generate_max_len; the reward model's responses get what its prompt
        # cap leaves of block_size (256 - 240), the TL;DR cap 48 at most
        assert (config["generate_max_len"], config["response_max_len"]) == (8, 16)
        assert config["reward_from"] == str(tmp_path / "plus" / "reward_init")  # every method starts from it
    assert (tmp_path / "plus" / "p2" / "untrained" / "summaries.jsonl").exists()
    # eval.py scores every run on the seen users' held-out pairs and on new users.
    assert evaluate_cli.main(["--out_dir", str(tmp_path), "--stage", "plus", "--n_new_users", "1"]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())["plus"]["p2"]
    assert set(report) == set(plus_trainer.METHODS) | {"transfer", "examples", "grounded", "reads", "ceiling"}
    for method in plus_trainer.METHODS:
        result = report[method]
        assert result["seen"]["n_pairs"] == 4 and result["new"]["n_pairs"] == 2
        low, high = result["new"]["ci95"]
        assert low <= result["new"]["accuracy"] <= high
        assert ("summary_attribute_accuracy" in result) == (method != "bt")
    assert report["oracle"]["summary_attribute_accuracy"] == 1.0  # the persona's own text states it all


def test_grounding_replay_adds_the_grounding_s_next_comparisons_to_each_update(tok, tmp_path, monkeypatch):
    """--grounding_replay 3: each of the two updates' Bradley–Terry passes is the users'
    pairs and 3 of the grounding's mix continued from where its second pass ended (position
    32, the next corpus document), a minibatch of each in turn; the two updates take
    different ones."""
    from plus.stage_flags import PLUS_GROUNDING_MIX
    from plus.training import epoch_order
    from plus.world import make_users
    from plus.world.export import user_records

    saved_sft_policy(tok, tmp_path / "sft")
    passes = []
    real_pass = plus_trainer.reward_model_pass
    monkeypatch.setattr(plus_trainer, "reward_model_pass",
                        lambda model, optimizer, pairs, *a, **k: passes.append(pairs) or real_pass(model, optimizer,
                                                                                                   pairs, *a, **k))
    assert train.main(["--stage", "plus", "--out_dir", str(tmp_path), "--population", "p2", "--method", "bt",
                       "--n_users", "2", "--max_steps", "2", "--rollout_batch_size", "2", "--train_batch_size", "2",
                       "--micro_train_batch_size", "2", "--prompt_max_len", "240", "--grounding_steps", "2",
                       "--grounding_replay", "3", "--no_progress"]) == 0
    grounded = checkpoint.load_config(tmp_path / "plus" / "reward_init")
    replay, _ = plus_trainer.mixed_grounding_pairs(tok, PLUS_GROUNDING_MIX, 6,
                                                   first_document=grounded["mixed_grounding_documents"], seed=0,
                                                   prompt_max_len=240, response_max_len=16, start=32)
    records = [parse_plus_record(r, f"synthetic:{u.id}") for u in make_users("p2", "train", 2)
               for r in user_records(u)]
    updates = passes[-2:]  # the grounding's own passes come first
    for step, seen in enumerate(updates):
        indices = epoch_order(len(records), 0, 0)[2 * step:2 * step + 2]
        users = plus_trainer.conditioned_pairs(tok, [records[i] for i in indices], [None, None], "train", 240, 16)
        assert seen == users + replay[3 * step:3 * step + 3]  # minibatches of 2: the users', then 2 + 1 replayed
    lines = [json.loads(line) for line in (tmp_path / "plus" / "p2" / "bt" / "metrics.jsonl").read_text().splitlines()]
    assert [m["rm_replayed"] for m in lines] == [3, 3]
    assert checkpoint.load_config(tmp_path / "plus" / "p2" / "bt" / "reward_model")["grounding_replay"] == 3


def test_plus_flags_only_apply_to_the_plus_stage(capsys):
    with pytest.raises(SystemExit):
        train.main(["--stage", "rm", "--method", "plus"])
    assert "--method only applies to --stage plus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["--stage", "plus", "--reward_warmup_ratio", "1.5"])
    assert "--reward_warmup_ratio must be in [0, 1]" in capsys.readouterr().err


def test_a_file_exported_from_the_world_trains_as_the_world_does(tok, tmp_path):
    """From the same grounded reward model, bit for bit; on a file the warm start, the
    grounding (the world's documents) and the reward model's warmup are off unless asked for."""
    from plus.world.export import export_plus

    policy = saved_sft_policy(tok, tmp_path / "sft")
    export_plus(tmp_path / "files", "p2", n_train=2, n_new=0)
    flags = ["--stage", "plus", "--out_dir", str(tmp_path), "--method", "icl", "--max_steps", "2",
             "--rollout_batch_size", "2", "--train_batch_size", "2", "--micro_train_batch_size", "2",
             "--generate_max_len", "8", "--prompt_max_len", "240", "--no_progress"]
    file = str(tmp_path / "files" / "p2_train.jsonl")
    assert train.main(flags + ["--population", "p2", "--n_users", "2", "--grounding_steps", "2"]) == 0
    assert train.main(flags + ["--dataset", file, "--grounding_steps", "2", "--reward_warmup_ratio",
                               str(PLUS_REWARD_WARMUP)]) == 0
    world = checkpoint.load_state_dict(tmp_path / "plus" / "p2" / "icl" / "reward_model")
    from_file = checkpoint.load_state_dict(tmp_path / "plus" / "p2_train" / "icl" / "reward_model")
    assert all(torch.equal(world[k], from_file[k]) for k in world)
    start = checkpoint.load_state_dict(tmp_path / "plus" / "reward_init")
    assert any(not torch.equal(world[k], start[k]) for k in world)  # it trained, from the grounded model
    assert any(not torch.equal(start[k], policy.state_dict()[k.removeprefix("backbone.")])
               for k in start if k.startswith("backbone."))  # which the grounding trained
    # by default a file's run starts from --init_from as it is: no warm start, no grounding
    alone = tmp_path / "alone"
    assert train.main(["--stage", "plus", "--out_dir", str(alone), "--init_from", str(tmp_path / "sft"),
                       "--dataset", file, "--method", "untrained", "--max_steps", "1", "--rollout_batch_size", "2",
                       "--train_batch_size", "2", "--micro_train_batch_size", "2", "--generate_max_len", "8",
                       "--prompt_max_len", "240", "--no_progress"]) == 0
    assert sorted(p.name for p in (alone / "plus").iterdir()) == ["p2_train"]
    config = checkpoint.load_config(alone / "plus" / "p2_train" / "untrained" / "reward_model")
    assert config["reward_from"] is None and config["summarizer_from"] == str(tmp_path / "sft")
    # and its reward model's rate does not warm up, where the world's does
    assert config["reward_warmup_ratio"] == 0.0
    for population in ("p2", "p2_train"):
        config = checkpoint.load_config(tmp_path / "plus" / population / "icl" / "reward_model")
        assert config["reward_warmup_ratio"] == PLUS_REWARD_WARMUP == 0.25


def test_the_reward_model_s_rate_warms_up_then_decays_on_a_cosine(tok, tmp_path):
    """--reward_warmup_ratio 0.5 of 4 updates at rate 1e-3: 2 warmup updates (1/2 and 2/2
    of the rate), then a cosine from the rate to a tenth of it over the other 2 updates,
    progress 0 and 1/2: 1e-3 and 1e-3 * (0.1 + 0.9 * (1 + cos(pi / 2)) / 2) = 5.5e-4."""
    saved_sft_policy(tok, tmp_path / "sft")
    assert train.main(["--stage", "plus", "--out_dir", str(tmp_path), "--population", "p2", "--method", "bt",
                       "--n_users", "2", "--max_steps", "4", "--rollout_batch_size", "2", "--train_batch_size", "2",
                       "--micro_train_batch_size", "2", "--prompt_max_len", "240", "--grounding_steps", "0",
                       "--critic_learning_rate", "1e-3", "--reward_warmup_ratio", "0.5", "--no_progress"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "plus" / "p2" / "bt" / "metrics.jsonl").read_text().splitlines()]
    assert [m["rm_lr"] for m in lines] == pytest.approx([5e-4, 1e-3, 1e-3, 5.5e-4], rel=1e-12)


def test_population_all_trains_each_population_as_alone(tok, tmp_path):
    """--population all is pets, p2 and p4 in turn: each run's reward model is the one that
    population's own command trains, to the bit."""
    saved_sft_policy(tok, tmp_path / "sft")
    flags = ["--stage", "plus", "--init_from", str(tmp_path / "sft"), "--method", "bt", "--n_users", "2",
             "--grounding_steps", "0",
             "--max_steps", "1", "--rollout_batch_size", "2", "--train_batch_size", "2",
             "--micro_train_batch_size", "2", "--prompt_max_len", "240", "--no_progress"]
    assert train.main(flags + ["--out_dir", str(tmp_path / "all"), "--population", "all"]) == 0
    for population in ("pets", "p2", "p4"):
        assert train.main(flags + ["--out_dir", str(tmp_path / population), "--population", population]) == 0
        alone = checkpoint.load_state_dict(tmp_path / population / "plus" / population / "bt" / "reward_model")
        in_turn = checkpoint.load_state_dict(tmp_path / "all" / "plus" / population / "bt" / "reward_model")
        assert alone.keys() == in_turn.keys() and all(torch.equal(alone[k], in_turn[k]) for k in alone), population
        config = checkpoint.load_config(tmp_path / "all" / "plus" / population / "bt" / "reward_model")
        assert config["population"] == population
    assert sorted(p.name for p in (tmp_path / "all" / "plus").iterdir()) == ["p2", "p4", "pets"]


def test_a_bad_plus_file_stops_before_the_summarizers_warm_start(tok, tmp_path, capsys):
    saved_sft_policy(tok, tmp_path / "sft")
    (tmp_path / "users.jsonl").write_text('{"context": "c"}\n')
    assert train.main(["--stage", "plus", "--out_dir", str(tmp_path), "--dataset", str(tmp_path / "users.jsonl"),
                       "--warm_start_steps", "2", "--grounding_steps", "2", "--no_progress"]) == 1
    assert f"{tmp_path / 'users.jsonl'}:1: missing key" in capsys.readouterr().err
    assert not (tmp_path / "plus").exists()


def test_eval_dataset_is_refused_by_plus_training(capsys, tmp_path):
    with pytest.raises(SystemExit):
        train.main(["--stage", "plus", "--eval_dataset", str(tmp_path / "new.jsonl")])
    assert "--eval_dataset does not apply to PLUS training: `python eval.py --stage plus --eval_dataset FILE`" \
        in capsys.readouterr().err


def test_population_is_refused_with_a_file(capsys, tmp_path):
    with pytest.raises(SystemExit):
        train.main(["--stage", "plus", "--dataset", str(tmp_path / "users.jsonl"), "--population", "p2"])
    assert "--population p2 is the built-in world's" in capsys.readouterr().err


def test_the_default_z_budget_holds_every_persona_text_with_its_eos():
    """--stage plus's default --generate_max_len (z's tokens) fits the oracle's z of every
    population, EOS included, in a tokenizer of the demo's size trained on the world, so a
    summarizer can write any persona's text and end it (the TL;DR setting's 48 cannot)."""
    from plus.stage_flags import build_parser, stage_args
    from plus.world.users import POPULATIONS

    args = stage_args(build_parser().parse_args(["--stage", "plus"]), "plus")
    demo_tok = Tokenizer.train(World(0).corpus(2000), vocab_size=2048)
    lengths = [len(demo_tok.encode(" " + p.text)) + 1 for ps in POPULATIONS.values() for p in ps]
    assert max(lengths) > 48 and max(lengths) <= args.generate_max_len == 64
