"""What a new user's own files and a damaged run meet, through the real command line: each
case runs train.py (or eval.py, sample.py) as a program, with a small file or checkpoint,
and checks the exit code and the exact text the user reads, so that none regresses.

A case is a process of its own running the script as `__main__`, forked from one that has
already imported torch and the library (an import of torch takes seconds; a case takes a
fraction of one). What the child does is what `python train.py ...` does: the script's
`sys.exit(main())`, an uncaught exception printed as a traceback with exit code 1.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from plus import checkpoint, data
from plus.gpt import GPT, GPTConfig
from plus.reward_head import RewardModel
from plus.tokenizer import Tokenizer
from plus.world import World

ROOT = Path(__file__).resolve().parents[1]

# The runner: reads one case a line (JSON: script, argv, stdout and stderr files), forks a
# child that runs the script as __main__ with those files as fd 1 and 2, and answers with
# the child's exit code.
RUNNER = textwrap.dedent("""
    import json, os, resource, runpy, sys, traceback
    sys.path.insert(0, os.getcwd())
    import torch, torch._dynamo  # what every run imports (AdamW imports dynamo)
    import train, plus.sft, plus.reward_trainer, plus.ppo, plus.evaluation, plus.surprise, plus.value_head

    def child(case, rank):
        os.environ.update(case["env"][rank])
        if case["max_file_bytes"]:  # a write past it fails (EFBIG), as on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (case["max_file_bytes"], resource.RLIM_INFINITY))
        for fd, name in ((1, case["stdout"][rank]), (2, case["stderr"][rank])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = [case["script"], *case["argv"]]
        try:
            runpy.run_path(case["script"], run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else (print(e.code, file=sys.stderr) or 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    for line in sys.stdin:
        case = json.loads(line)
        pids = []
        for rank in range(len(case["env"])):
            pid = os.fork()
            if pid == 0:
                child(case, rank)
            pids.append(pid)
        print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]), flush=True)
""")


class Cli:
    """Runs `python <script> <argv>`, or what `torchrun --nproc_per_node=N <script> <argv>`
    starts (N processes with torchrun's environment), through the forking runner."""

    def __init__(self, tmp: Path):
        self.tmp, self.n = tmp, 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            env.pop(name, None)
        self.process = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=ROOT, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, script: str, argv, envs: list[dict], max_file_bytes: int | None = None) -> list[tuple[int, str, str]]:
        self.n += 1
        files = [(self.tmp / f"{self.n}.{rank}.out", self.tmp / f"{self.n}.{rank}.err") for rank in range(len(envs))]
        self.process.stdin.write(json.dumps({"script": str(ROOT / script), "argv": [str(a) for a in argv], "env": envs,
                                             "max_file_bytes": max_file_bytes,
                                             "stdout": [str(out) for out, _ in files],
                                             "stderr": [str(err) for _, err in files]}) + "\n")
        self.process.stdin.flush()
        codes = json.loads(self.process.stdout.readline())
        return [(code, out.read_text(), err.read_text()) for code, (out, err) in zip(codes, files)]

    def __call__(self, script: str, *argv: str, max_file_bytes: int | None = None) -> tuple[int, str, str]:
        return self.run(script, argv, [{}], max_file_bytes)[0]

    def torchrun(self, n: int, script: str, *argv: str) -> list[tuple[int, str, str]]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return self.run(script, argv, [{"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(n),
                                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)} for r in range(n)])

    def close(self):
        self.process.kill()  # it holds no state worth a clean exit
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    runner = Cli(tmp_path_factory.mktemp("cli"))
    yield runner
    runner.close()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A new user's small files (20 records each) and tiny checkpoints: a pretrained policy
    (`pre`), an SFT policy (`sft`) and a reward model (`rm`), random weights (every case
    stops before training, or trains a step or two)."""
    d = tmp_path_factory.mktemp("files")
    tokenizer = Tokenizer.train(World(0).corpus(300), vocab_size=400)
    torch.manual_seed(0)
    config = GPTConfig.llama_style(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16)
    gpt = GPT(config)
    for stage in ("pre", "sft"):
        checkpoint.save_checkpoint(d / stage, gpt, {"stage": "pretrain" if stage == "pre" else "sft",
                                                    "model": config.to_dict()}, tokenizer)
    RewardModel.from_gpt(gpt).save(d / "rm", tokenizer)
    write_jsonl(d / "qa.jsonl", [{"question": f"what is {i} plus one", "answer": f"it is {i + 1}"} for i in range(20)])
    write_jsonl(d / "prefs.jsonl", [{"prompt": f"what is {i} plus one", "chosen": f"it is {i + 1}",
                                     "rejected": f"it is {i + 7}"} for i in range(20)])
    write_jsonl(d / "prompts.jsonl", [{"prompt": f"what is {i} plus one"} for i in range(20)])
    write_jsonl(d / "chat.jsonl", [{"prompt": [{"role": "system", "content": "Answer briefly."},
                                               {"role": "user", "content": f"what is {i} plus one"}]}
                                   for i in range(20)])
    (d / "one_line.json").write_text(json.dumps([{"prompt": "a", "chosen": "b", "rejected": "c"},
                                                 {"prompt": "a", "chosen": "b", "rejected": "b"},
                                                 {"prompt": "d", "chosen": "e", "rejected": "f"}]))
    write_jsonl(d / "long.jsonl", [{"prompt": f"tell me about {i}", "rejected": "no",
                                    "chosen": f"{i}: " + "a long answer " * (20 if i % 2 else 2)} for i in range(20)])
    (d / "bad_line.jsonl").write_text((d / "prefs.jsonl").read_text() + "{not json\n")
    shutil.copytree(d / "pre", d / "truncated")
    weights = d / "truncated" / checkpoint.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    shutil.copytree(d / "pre", d / "no_tokenizer" / "pretrain")
    (d / "no_tokenizer" / "pretrain" / checkpoint.TOKENIZER).unlink()
    return d


def stopped(n_bad: int, n: int) -> str:
    return f"({n_bad} of the file's {n} records are bad; --on_bad_record skip leaves them out)"


# ---- the table: (name, argv with {files} and {out}, expected exit code, expected stderr) ----

SFT = ("train.py", "--stage", "sft", "--init_from", "{files}/pre", "--out_dir", "{out}", "--no_progress")
RM = ("train.py", "--stage", "rm", "--init_from", "{files}/sft", "--out_dir", "{out}", "--no_progress")
PPO = ("train.py", "--stage", "ppo", "--init_from", "{files}/sft", "--reward_pretrain", "{files}/rm",
       "--out_dir", "{out}", "--no_progress")

ERRORS = [
    ("sft: a missing prompt key names --input_key", SFT + ("--dataset", "{files}/qa.jsonl"),
     "{files}/qa.jsonl:1: missing key 'prompt' (record has: answer, question); set --input_key " + stopped(20, 20)),
    ("sft: a missing response key names --output_key", SFT + ("--dataset", "{files}/qa.jsonl", "--input_key", "question"),
     "{files}/qa.jsonl:1: missing key 'summary' (record has: answer, question); set --output_key " + stopped(20, 20)),
    ("rm: a missing chosen key names --chosen_key", RM + ("--dataset", "{files}/qa.jsonl"),
     "{files}/qa.jsonl:1: missing key 'chosen' (record has: answer, question); set --chosen_key " + stopped(20, 20)),
    ("rm: a missing prompt key names --prompt_key", RM + ("--dataset", "{files}/prefs.jsonl", "--prompt_key", "q"),
     "{files}/prefs.jsonl:1: missing key 'q' (record has: chosen, prompt, rejected); set --prompt_key "
     + stopped(20, 20)),
    ("ppo: a missing prompt key names --input_key", PPO + ("--dataset", "{files}/qa.jsonl"),
     "{files}/qa.jsonl:1: missing key 'prompt' (record has: answer, question); set --input_key " + stopped(20, 20)),
    ("rm: invalid JSON is located by line", RM + ("--dataset", "{files}/bad_line.jsonl"),
     "{files}/bad_line.jsonl:21: invalid JSON (Expecting property name enclosed in double quotes) " + stopped(1, 21)),
    ("rm: a JSON array on one line locates the record", RM + ("--dataset", "{files}/one_line.json"),
     "{files}/one_line.json: record 2 (line 1): chosen and rejected responses are identical " + stopped(1, 3)),
    ("sft: a file that is not there", SFT + ("--dataset", "{files}/nope.jsonl"), "{files}/nope.jsonl: no such file"),
    ("sft: an --init_from that is not there", SFT[:3] + ("--init_from", "{files}/nope", "--out_dir", "{out}"),
     "{files}/nope: no such checkpoint directory"),
    ("sft: truncated weights under --init_from", SFT[:3] + ("--init_from", "{files}/truncated", "--out_dir", "{out}",
                                                            "--dataset", "{files}/qa.jsonl"),
     "{files}/truncated/model.safetensors: unreadable weights (Error while deserializing header: {any})"),
    ("pretrain --resume of a checkpoint without its tokenizer",
     ("train.py", "--stage", "pretrain", "--resume", "--out_dir", "{files}/no_tokenizer"),
     "{files}/no_tokenizer/pretrain/tokenizer.json: missing (a checkpoint carries its tokenizer)"),
]

# Flags that cannot work: exit code 2, before anything is read.
FLAG_ERRORS = [
    ("a global batch of 0", SFT + ("--train_batch_size", "0"), "--train_batch_size must be > 0, got 0"),
    ("a negative learning rate", SFT + ("--learning_rate", "-1"), "--learning_rate must be >= 0, got -1.0"),
    ("rm with SFT's prompt flag", RM + ("--input_key", "q"),
     "--input_key is the SFT prompt field; for --stage rm use --prompt_key"),
    ("--resume under --stage all", ("train.py", "--stage", "all", "--resume"),
     "--resume applies to one stage; name it with --stage"),
    ("a chat template for sft", SFT + ("--apply_chat_template",),
     "--apply_chat_template only applies to --stage rm and ppo"),
]


@pytest.mark.parametrize("name, argv, message", FLAG_ERRORS, ids=[c[0] for c in FLAG_ERRORS])
def test_a_flag_that_cannot_work_is_one_line_and_exit_code_2(cli, files, tmp_path, name, argv, message):
    fill = lambda s: s.replace("{files}", str(files)).replace("{out}", str(tmp_path / "out"))  # noqa: E731
    assert cli(*map(fill, argv)) == (2, "", f"error: {message} (see train.py --help)\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, argv, message", ERRORS, ids=[c[0] for c in ERRORS])
def test_a_bad_input_is_one_line_and_exit_code_1(cli, files, tmp_path, name, argv, message):
    fill = lambda s: s.replace("{files}", str(files)).replace("{out}", str(tmp_path / "out"))  # noqa: E731
    code, _, err = cli(*map(fill, argv))
    assert code == 1
    # {any}: the words of a library's own error, which its versions phrase differently
    assert re.fullmatch(re.escape(f"error: {fill(message)}\n").replace(re.escape("{any}"), "[^\n]+"), err), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("model.safetensors"))


def test_under_torchrun_an_error_is_printed_once(cli, files, tmp_path):
    """Every process meets the same bad record (or the same contradictory flags): rank 0
    alone says so, in the one error style."""
    ranks = cli.torchrun(2, "train.py", "--stage", "sft", "--init_from", files / "pre", "--out_dir", tmp_path,
                         "--dataset", files / "qa.jsonl", "--no_progress")
    message = (f"error: {files}/qa.jsonl:1: missing key 'prompt' (record has: answer, question); set --input_key "
               + stopped(20, 20) + "\n")
    assert [(code, err) for code, _, err in ranks] == [(1, message), (1, "")]
    ranks = cli.torchrun(2, "train.py", "--stage", "all", "--resume")
    message = "error: --resume applies to one stage; name it with --stage (see train.py --help)\n"
    assert [(code, err) for code, _, err in ranks] == [(2, message), (2, "")]


def test_a_full_disk_during_a_save_keeps_the_checkpoint_saved_before(cli, files, tmp_path):
    """A second run into the same directory whose save cannot write its files (a file-size
    limit below the weights' size: the write fails as on a full disk) stops with one line,
    and the first run's checkpoint loads as it was."""
    argv = ("train.py", "--stage", "sft", "--init_from", files / "pre", "--out_dir", tmp_path, "--no_progress",
            "--dataset", files / "qa.jsonl", "--input_key", "question", "--output_key", "answer", "--max_steps", "1")
    assert cli(*argv)[0] == 0
    before = checkpoint.load_state_dict(tmp_path / "sft")
    assert (tmp_path / "sft" / checkpoint.WEIGHTS).stat().st_size > 20_000
    code, _, err = cli(*argv, "--seed", "1", max_file_bytes=20_000)
    assert code == 1
    assert err.startswith(f"error: {tmp_path / 'sft'}: could not write the checkpoint (") and \
        err.endswith("); the checkpoint saved there before is intact\n") and err.count("\n") == 1
    after = checkpoint.load_state_dict(tmp_path / "sft")
    assert all(torch.equal(before[k], after[k]) for k in before) and before.keys() == after.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # no unfinished save left behind


# ---- a new user's small files: each stage runs with no flag beyond the data keys, and says
# what it loaded, what it held out and where it saved ------------------------------------

RUNS = [
    ("sft", SFT + ("--dataset", "{files}/qa.jsonl", "--input_key", "question", "--output_key", "answer"),
     ["[sft] policy: {files}/pre (pretrain checkpoint)",
      "[sft] {files}/qa.jsonl: 2 of its 20 prompts held out for the eval loss (--eval_dataset names another file)",
      "[sft] 18 examples are fewer than one global batch (32): training with --train_batch_size 18 "
      "--micro_train_batch_size 9"]),
    ("rm: the prompt field is 'prompt' by default", RM + ("--dataset", "{files}/prefs.jsonl"),
     ["[rm] reward model: {files}/sft (sft checkpoint), with a new reward head",
      "[rm] 20 pairs are fewer than one global batch (32): training with --train_batch_size 20 "
      "--micro_train_batch_size 20"]),
    ("rm from a reward model", RM[:3] + ("--init_from", "{files}/rm", "--out_dir", "{out}", "--no_progress",
                                         "--dataset", "{files}/prefs.jsonl"),
     ["[rm] reward model: {files}/rm (rm checkpoint), trained further"]),
    ("ppo", PPO + ("--dataset", "{files}/prompts.jsonl", "--generate_max_len", "8"),
     ["[ppo] policy and KL reference: {files}/sft (sft checkpoint); reward model and critic: {files}/rm "
      "(rm checkpoint)",
      "[ppo] 20 prompts are fewer than one rollout batch: training with --rollout_batch_size 20 "
      "--train_batch_size 20 --micro_train_batch_size 10"]),
    ("ppo: chat-message prompts", PPO + ("--dataset", "{files}/chat.jsonl", "--apply_chat_template",
                                         "--generate_max_len", "8"),
     ["[ppo] prompts: {files}/chat.jsonl's 'prompt' in the built-in chat format (the policy's tokenizer has no chat "
      "template)"]),
]


@pytest.mark.parametrize("name, argv, lines", RUNS, ids=[c[0] for c in RUNS])
def test_a_small_file_runs_and_says_what_it_loaded_and_saved(cli, files, tmp_path, name, argv, lines):
    fill = lambda s: s.replace("{files}", str(files)).replace("{out}", str(tmp_path / "out"))  # noqa: E731
    stage = argv[2]
    code, out, err = cli(*map(fill, argv), "--max_steps", "1")
    assert (code, err) == (0, "")
    printed = out.splitlines()
    for line in lines:
        assert fill(line) in printed
    done = [line for line in printed if line.startswith(f"[{stage}] done in ")]
    assert len(done) == 1 and re.match(rf"\[{stage}\] done in \d+s, saved to {re.escape(fill('{out}'))}/{stage}: ",
                                       done[0])
    checkpoint.load_config(tmp_path / "out" / stage)  # there it is


def test_length_caps_follow_the_data_and_flags_win(cli, files, tmp_path):
    """On a file, SFT and RM cap prompts and responses at the data's longest (a response
    with its EOS), measured here with the tokenizer: long answers are kept whole. Caps
    given on the command line win, and the line counts what they cut."""
    tokenizer = checkpoint.load_tokenizer(files / "pre")
    records = [json.loads(line) for line in (files / "long.jsonl").read_text().splitlines()]
    prompts = [len(tokenizer.encode(r["prompt"])) for r in records]
    chosen = [len(tokenizer.encode(" " + r["chosen"].strip())) + 1 for r in records]  # data.response_ids
    responses = {"sft": chosen, "rm": chosen + [len(tokenizer.encode(" no")) + 1]}  # rm: the distinct responses
    longest_prompt, longest = max(prompts), max(chosen)
    assert longest > 48 and longest_prompt + longest <= 256  # longer than the TL;DR cap; fits the model
    for stage, argv in (("sft", SFT + ("--output_key", "chosen")), ("rm", RM)):
        argv = [a.replace("{files}", str(files)).replace("{out}", str(tmp_path / stage)) for a in argv]
        where = f"[{stage}] {files / 'long.jsonl'}: "
        code, out, _ = cli(*argv, "--dataset", files / "long.jsonl", "--max_steps", "1")
        assert code == 0 and where + f"--prompt_max_len {longest_prompt} (the data's longest), --generate_max_len " \
            f"{longest} (the data's longest); nothing cut" in out.splitlines()
        config = checkpoint.load_config(tmp_path / stage / stage)
        assert (config["prompt_max_len"], config["generate_max_len"]) == (longest_prompt, longest)

        code, out, _ = cli(*argv, "--dataset", files / "long.jsonl", "--max_steps", "1", "--prompt_max_len", "4",
                           "--generate_max_len", "48")
        cut_prompts, cut_responses = sum(n > 4 for n in prompts), sum(n > 48 for n in responses[stage])
        assert code == 0 and where + f"--prompt_max_len 4 (given), --generate_max_len 48 (given); {cut_prompts} of " \
            f"20 prompts cut to fit, {cut_responses} of {len(responses[stage])} responses cut without their EOS" \
            in out.splitlines()
        assert cut_prompts == 20 and cut_responses == 10

    # Answers longer than the model holds: the response cap is what the prompts leave of block_size.
    longer = write_jsonl(tmp_path / "longer.jsonl", [dict(r, chosen=r["chosen"] * 2) for r in records])
    lengths = [len(tokenizer.encode(" " + (r["chosen"] * 2).strip())) + 1 for r in records]
    code, out, _ = cli(*SFT[:3], "--init_from", files / "pre", "--out_dir", tmp_path / "longer", "--no_progress",
                       "--dataset", longer, "--output_key", "chosen", "--max_steps", "1")
    assert code == 0 and f"[sft] {longer}: --prompt_max_len {longest_prompt} (the data's longest), --generate_max_len " \
        f"{256 - longest_prompt} (what fits block_size 256); 0 of 20 prompts cut to fit, " \
        f"{sum(n > 256 - longest_prompt for n in lengths)} of 20 responses cut without their EOS" in out.splitlines()


def test_ppo_prompt_cap_follows_the_file(cli, files, tmp_path):
    """On a file, PPO caps its prompts at the file's longest (not the TL;DR setting's 200),
    within what block_size leaves beside --generate_max_len; the line counts what it cut."""
    tokenizer = checkpoint.load_tokenizer(files / "pre")
    for name, words, generate in (("fits", 60, 8), ("too_long", 120, 8)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", [{"prompt": f"tell me about {i}: " + "the story " * (
            words if i % 2 else 5)} for i in range(20)])
        lengths = [len(data.prompt_ids(tokenizer, json.loads(line), None, 10**9, "here"))
                   for line in path.read_text().splitlines()]
        room = 256 - generate
        argv = [a.replace("{files}", str(files)).replace("{out}", str(tmp_path / name)) for a in PPO]
        code, out, err = cli(*argv, "--dataset", path, "--generate_max_len", str(generate), "--max_steps", "1")
        assert (code, err) == (0, "")
        if max(lengths) <= room:
            assert max(lengths) > data.PROMPT_MAX_LEN  # the old fixed cap would have cut these
            line = f"[ppo] {path}: --prompt_max_len {max(lengths)} (the data's longest); nothing cut"
        else:
            line = (f"[ppo] {path}: --prompt_max_len {room} (what fits block_size 256 beside --generate_max_len "
                    f"{generate}); {sum(n > room for n in lengths)} of 20 prompts cut to fit")
            assert sum(n > room for n in lengths) == 10
        assert line in out.splitlines()
        assert checkpoint.load_config(tmp_path / name / "ppo")["prompt_max_len"] == min(max(lengths), room)


def test_help_shows_each_stages_defaults(cli):
    code, out, err = cli("train.py", "--help")
    assert (code, err) == (0, "")
    text = " ".join(out.split())  # argparse wraps the help to the terminal's width
    for flag, shown in [
        ("--learning_rate LEARNING_RATE", "default by stage: pretrain 0.003, sft 0.003, rm 0.0003, ppo 0.0001"),
        ("--train_batch_size TRAIN_BATCH_SIZE", "default by stage: pretrain 32, sft 32, rm 32, ppo 32"),
        ("--max_steps MAX_STEPS", "default by stage: pretrain 50, sft 950, ppo 24"),
        ("--ppo_epochs PPO_EPOCHS", "ppo: passes over each rollout batch; default by stage: ppo 2"),
    ]:
        assert shown in flag_help(text, flag), flag
    assert "sft on the built-in world 1700" in flag_help(text, "--max_steps MAX_STEPS")


def flag_help(text: str, flag: str) -> str:
    """The help of `flag` in --help's text: from the flag to the next flag with a value."""
    return re.split(r" --\w+ [A-Z_]+ ", text.split(f" {flag} ", 1)[1], maxsplit=1)[0]


# ---- eval.py on a new user's checkpoints: the data flags they trained with ----------------

def test_eval_reads_the_data_flags_a_checkpoint_trained_with(cli, files, tmp_path):
    """SFT on qa.jsonl holds 2 of its 20 prompts out of training; `eval.py --init_from` with
    no data flag evaluates the policy on those two (drawn here by the same permutation), with
    SFT's keys and prompt cap, and says which and how many in report.json and report.md. A
    reward model trained on a file with no held-out file is scored on that file, and the
    report says so."""
    out = tmp_path / "out"
    qa, prefs = files / "qa.jsonl", files / "prefs.jsonl"
    code, _, err = cli("train.py", "--stage", "sft", "--init_from", files / "pre", "--out_dir", out, "--no_progress",
                       "--dataset", qa, "--input_key", "question", "--output_key", "answer", "--prompt_max_len", "8",
                       "--max_steps", "1")
    assert (code, err) == (0, "")
    assert cli("eval.py", "--init_from", out / "sft", "--out_dir", out)[0] == 0
    report = json.loads((out / "eval" / "report.json").read_text())
    held = sorted(torch.randperm(20, generator=torch.Generator().manual_seed(0))[:2].tolist())  # data.hold_out's draw
    tokenizer = checkpoint.load_tokenizer(files / "pre")
    assert [(s["prompt"], s["reference"]) for s in report["samples"]["sft"]] == [
        (tokenizer.decode(tokenizer.encode(f"what is {i} plus one")[-8:]), f"it is {i + 1}") for i in held]
    source = "the prompts SFT held out of its training"
    assert (report["dataset"], report["n_eval"], report["prompts"], report["policy"]["sft"]["n"]) == (str(qa), 2,
                                                                                                      source, 2)
    assert (out / "eval" / "report.md").read_text().splitlines()[2] == \
        f"2 prompts from `{qa}` ({source}), temperature 0.7."

    assert cli("train.py", "--stage", "rm", "--init_from", files / "sft", "--out_dir", out, "--no_progress",
               "--dataset", prefs, "--max_steps", "1")[0] == 0
    code, printed, _ = cli("eval.py", "--init_from", out / "rm", "--out_dir", out)
    assert code == 0
    assert f"[eval] rm: no --eval_dataset, at training or here: scored on its training file {prefs}, which " \
           "measures fit, not generalization" in printed.splitlines()
    rm = json.loads((out / "eval" / "report.json").read_text())["reward_model"]
    assert (rm["dataset"], rm["n_pairs"], rm["held_out"]) == ("prefs", 20, False)
    assert "`prefs` is the file the model trained on (no held-out file was named): its figures measure fit, not " \
           "generalization." in (out / "eval" / "report.md").read_text().splitlines()
