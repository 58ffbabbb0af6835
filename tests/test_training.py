"""What the loops share (plus/training.py): the planned sizes, the steps with their
schedule, periodic saves and preemption, end to end through train.py for the two
resumable stages."""

import json
import os
import signal
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import train
from plus import checkpoint, training
from plus.distributed import Dist
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer
from plus.training import Preempted, StepPlan, TrainingSteps, plan_steps
from plus.world import World


def steps_args(save_steps=None):
    return Namespace(learning_rate=1.0, save_steps=save_steps, no_progress=True)


def run_steps(plan: StepPlan, args, signal_at: int | None, start: int = 0):
    """Run TrainingSteps with a save that records its step; SIGTERM from inside step
    `signal_at` (1-based). Returns (saves, learning rates, the Preempted message or None)."""
    saves, lrs = [], []
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    try:
        with TrainingSteps("sft", optimizer, start, plan, args, Dist(), saves.append, Path("out")) as steps:
            for step, lr in steps:
                lrs.append((lr, optimizer.param_groups[0]["lr"]))
                if step + 1 == signal_at:
                    os.kill(os.getpid(), signal.SIGTERM)
            saves.append("final")
    except Preempted as e:
        return saves, lrs, str(e)
    return saves, lrs, None


def test_training_steps_schedule_and_saves():
    plan = StepPlan(accumulation=1, steps_per_epoch=5, max_steps=5, warmup=2)
    saves, lrs, stopped = run_steps(plan, steps_args(save_steps=2), signal_at=None)
    assert stopped is None and saves == [2, 4, "final"]  # no periodic save at the last step: the final one
    assert [a for a, _ in lrs] == [training.lr_at(s, 5, 1.0, 2) for s in range(5)]
    assert all(a == b for a, b in lrs)  # the rate yielded is the rate the optimizer holds
    assert run_steps(plan, steps_args(), signal_at=None, start=3)[0] == ["final"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_mid_run_saves_and_names_the_stage_to_resume():
    plan = StepPlan(accumulation=1, steps_per_epoch=4, max_steps=4, warmup=1)
    saves, lrs, stopped = run_steps(plan, steps_args(), signal_at=2)
    assert saves == [2] and len(lrs) == 2  # step 2 finished, saved, nothing after it
    assert stopped == ("[sft] stopped by SIGTERM after step 2 of 4; saved to out: continue with the same flags "
                       "and --stage sft --resume")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_in_the_last_step_is_reported_after_the_final_save():
    plan = StepPlan(accumulation=1, steps_per_epoch=4, max_steps=4, warmup=1)
    saves, _, stopped = run_steps(plan, steps_args(), signal_at=4)
    assert saves == ["final"]
    assert stopped == "[sft] SIGTERM during the last step: the stage finished and saved to out; no later stage was started"


def test_plan_steps_fits_the_batch_and_counts_steps(capsys):
    args = Namespace(train_batch_size=32, micro_train_batch_size=16, max_steps=None, max_epochs=2, warmup_ratio=0.1)
    plan = plan_steps("rm", 20, "pairs", args, Dist())
    # 20 pairs: one global batch of 20 (micro-batches of 10, 2 accumulation steps), one step an epoch
    assert (args.train_batch_size, args.micro_train_batch_size) == (20, 10)
    assert plan == StepPlan(accumulation=2, steps_per_epoch=1, max_steps=2, warmup=1)
    assert "[rm] 20 pairs are fewer than one global batch (32)" in capsys.readouterr().out
    args = Namespace(train_batch_size=8, micro_train_batch_size=2, max_steps=30, max_epochs=1, warmup_ratio=0.1)
    assert plan_steps("sft", 100, "examples", args, Dist(world_size=2)) == StepPlan(2, 12, 30, 3)


# ---- end to end: SIGTERM, then --resume, for each resumable stage -------------------------

@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A tiny random 'pretrained' checkpoint, and a TL;DR file of 20 posts, two summaries each."""
    root = tmp_path_factory.mktemp("start")
    tokenizer = Tokenizer.train(World(0).corpus(300), vocab_size=400)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.gpt2_style(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16))
    checkpoint.save_checkpoint(root / "init", gpt, {"stage": "pretrain", "model": gpt.config.to_dict()}, tokenizer)
    words = "my friend and i went out to the park after work and we talked about money".split()
    with open(root / "tldr.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"subreddit": "dating", "title": f"title {i // 2}", "post": " ".join(words[i // 2 % 5:]),
                                "summary": " ".join(words[i % 7: i % 7 + 5])}) + "\n")
    return root


def stage_args(stage, start, out):
    common = ["--init_from", str(start / "init"), "--out_dir", str(out), "--eval_steps", "0", "--no_progress",
              "--prompt_max_len", "96", "--micro_train_batch_size", "2"]
    if stage == "sft":  # 20 prompts, 5 steps an epoch: the run crosses into the second epoch
        return ["--stage", "sft", "--dataset", str(start / "tldr.jsonl"), "--max_steps", "6",
                "--train_batch_size", "4", "--max_epochs", "2", "--n_eval", "4", *common]
    return ["--stage", "rm", "--max_samples", "40", "--max_steps", "4", "--train_batch_size", "8", "--n_eval", "8",
            *common]


MAX_STEPS = {"sft": 6, "rm": 4}


@pytest.fixture(scope="module")
def uninterrupted(start, tmp_path_factory):
    runs = {}
    for stage in MAX_STEPS:
        out = tmp_path_factory.mktemp(f"whole_{stage}")
        assert train.main(stage_args(stage, start, out)) == 0
        runs[stage] = out / stage
    return runs


def losses(directory):
    return [json.loads(line)["loss"] for line in (directory / checkpoint.METRICS).read_text().splitlines()]


def assert_same_run(a, b):
    wa, wb = checkpoint.load_state_dict(a), checkpoint.load_state_dict(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=0, rtol=0, msg=name)
    assert losses(b) == losses(a)


def signal_during_step(monkeypatch, at: int):
    """SIGTERM to this process from inside step `at` (its progress-bar update, which
    every loop makes once a step)."""
    shown = [0]
    real_show = TrainingSteps.show

    def show_then_signal(self, **figures):
        real_show(self, **figures)
        shown[0] += 1
        if shown[0] == at:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TrainingSteps, "show", show_then_signal)


@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_sigterm_saves_and_resume_is_exact(stage, start, uninterrupted, tmp_path, monkeypatch, capsys):
    """SIGTERM during step 2: the step finishes, a resumable checkpoint is saved, exit 0,
    and the message names the stage to resume; --resume then ends bit for bit where the
    uninterrupted run ends, with the same losses."""
    signal_during_step(monkeypatch, 2)
    assert train.main(stage_args(stage, start, tmp_path)) == 0
    monkeypatch.undo()
    assert (f"[{stage}] stopped by SIGTERM after step 2 of {MAX_STEPS[stage]}; saved to {tmp_path / stage}: "
            f"continue with the same flags and --stage {stage} --resume") in capsys.readouterr().out
    assert checkpoint.load_trainer_state(tmp_path / stage)[0]["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    assert train.main(stage_args(stage, start, tmp_path) + ["--resume"]) == 0
    assert_same_run(uninterrupted[stage], tmp_path / stage)


@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_sigterm_in_the_last_step_finishes_the_stage_and_says_so(stage, start, uninterrupted, tmp_path, monkeypatch,
                                                                  capsys):
    signal_during_step(monkeypatch, MAX_STEPS[stage])
    assert train.main(stage_args(stage, start, tmp_path)) == 0
    assert (f"[{stage}] SIGTERM during the last step: the stage finished and saved to {tmp_path / stage}; "
            "no later stage was started") in capsys.readouterr().out
    assert checkpoint.load_trainer_state(tmp_path / stage)[0]["step"] == MAX_STEPS[stage]
    assert_same_run(uninterrupted[stage], tmp_path / stage)


def test_sigterm_under_stage_all_names_the_stages_not_started(start, tmp_path, monkeypatch, capsys):
    signal_during_step(monkeypatch, 2)
    tokenizer = tmp_path / "tokenizer.json"
    checkpoint.load_tokenizer(start / "init").save(tokenizer)
    assert train.main(["--stage", "all", "--tokenizer", str(tokenizer), "--out_dir", str(tmp_path), "--no_progress",
                       "--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--max_len", "32", "--max_steps", "2",
                       "--train_batch_size", "4", "--micro_train_batch_size", "2", "--n_eval", "4"]) == 0
    out = capsys.readouterr().out
    assert "[pretrain] SIGTERM during the last step" in out
    assert "[pretrain] not started: sft, rm, ppo; run each with --stage NAME" in out
    assert (tmp_path / "pretrain").is_dir() and not (tmp_path / "sft").exists()


def test_config_json_records_what_ran(start, tmp_path, capsys):
    """11 pairs (of the world's first 12 comparisons one has two summaries alike in their
    first 48 tokens) against a global batch of 16: the batch shrinks to 11, the
    micro-batch to 1 (11 is prime), and config.json holds the sizes that ran, with the
    precision."""
    args = stage_args("rm", start, tmp_path)
    args[args.index("--max_samples") + 1] = "12"
    args[args.index("--train_batch_size") + 1] = "16"
    args[args.index("--max_steps") + 1] = "1"
    assert train.main(args + ["--dtype", "bf16"]) == 0
    assert "[rm] 11 pairs are fewer than one global batch (16)" in capsys.readouterr().out
    config = checkpoint.load_config(tmp_path / "rm")
    assert {k: config[k] for k in ("train_batch_size", "micro_train_batch_size", "max_steps", "dtype", "world_size",
                                   "strategy")} == {"train_batch_size": 11, "micro_train_batch_size": 1,
                                                    "max_steps": 1, "dtype": "bf16", "world_size": 1,
                                                    "strategy": "ddp"}
