"""`--stage plus` under torchrun: two processes (gloo, on the CPU) make the update one process makes.

Each rank samples and scores its share of the batch's users; the reward model's
Bradley–Terry pass reads the whole batch's z, each rank its share of every minibatch, the
loss scaled by the minibatch's global size and the gradients summed before the clip and
the step. Only the order of float32 sums differs from one process (the gradient summed
over ranks, not micro-batch after micro-batch), so the losses agree to rel 1e-4 and the
weights to a small fraction of one Adam step.

PPO draws each rank's samples from its own generator, so the PLUS run samples all but greedily
(temperature 1e-4) with the summarizer frozen (learning rate 0): its z are then a function of
each user alone, the same in both runs, and what is compared is the co-adaptation's
reward-model pass on the gathered rollout.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import train
from plus import checkpoint
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer
from plus.world import World
from ddp_helpers import ddp_worker, free_port

# (run, method, extra flags): the plus run with two z per user (each rank samples both of
# its users' z) as well as one
RUNS = (("plus", "plus", ()), ("bt", "bt", ()),
        ("plus_n2", "plus", ("--rollout_batch_size", "2", "--n_samples_per_prompt", "2", "--group_baseline")))
RM_LR = 1e-3


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    path = tmp_path_factory.mktemp("plus_ddp") / "sft"
    tok = Tokenizer.train(list(World(0).corpus(200)), vocab_size=600)
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2_style(vocab_size=tok.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16))
    checkpoint.save_checkpoint(path, model, {"stage": "sft", "model": model.config.to_dict()}, tokenizer=tok)
    return path


def flags(sft, out_dir, method: str, *extra: str) -> list[str]:
    return ["--stage", "plus", "--init_from", str(sft), "--out_dir", str(out_dir), "--population", "p2",
            "--method", method, "--n_users", "4", "--max_steps", "2", "--rollout_batch_size", "4",
            "--train_batch_size", "2", "--micro_train_batch_size", "1", "--ppo_epochs", "1",
            "--generate_max_len", "8", "--prompt_max_len", "240", "--warm_start_steps", "1", "--grounding_steps", "1",
            "--temperature", "1e-4", "--learning_rate", "0", "--critic_learning_rate", str(RM_LR), "--no_progress",
            *extra]


def metrics(out_dir, method: str) -> list[dict]:
    path = out_dir / "plus" / "p2" / method / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_make_the_one_process_update(sft, tmp_path):
    for run, method, extra in RUNS:
        assert train.main(flags(sft, tmp_path / "one" / run, method, *extra)) == 0
    runs = [flags(sft, tmp_path / "two" / run, method, *extra) for run, method, extra in RUNS]
    torch.multiprocessing.spawn(ddp_worker, args=([free_port() for _ in runs], runs), nprocs=2, join=True)
    for run, method, _ in RUNS:
        one, two = metrics(tmp_path / "one" / run, method), metrics(tmp_path / "two" / run, method)
        assert [m["step"] for m in one] == [m["step"] for m in two] == [1, 2]
        for a, b in zip(one, two):
            for key in ("rm_loss", "rm_accuracy", "summarizer_reward") if method == "plus" else ("rm_loss",
                                                                                                 "rm_accuracy"):
                assert abs(a[key] - b[key]) <= 1e-4 * abs(a[key]) + 1e-7, (method, key, one, two)
        weights = [load_file(str(d / run / "plus" / "p2" / method / "reward_model" / "model.safetensors"))
                   for d in (tmp_path / "one", tmp_path / "two")]
        assert weights[0].keys() == weights[1].keys()
        for name in weights[0]:
            # Adam moves every weight by about the learning rate per step, whatever the size
            # of its gradient: 1% of one step bounds what the summation order changes.
            torch.testing.assert_close(weights[1][name], weights[0][name], rtol=0, atol=1e-2 * RM_LR,
                                       msg=lambda m, n=name: f"{method} {n}: {m}")
