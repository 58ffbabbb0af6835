"""The PLUS authors' spelling, `train.py --stage ppo --train_reward --input_key
context_messages --apply_chat_template --dataset FILE`: on the plain context it is
`--stage plus --method plus` bit for bit; with the chat template the summarizer reads each
record's context_messages rendered as the template renders them; wrong combinations are
one-line flag errors."""

import json

import jinja2
import pytest
import torch

import train
from plus import checkpoint, plus_trainer, ppo
from plus.data import load_plus_records
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer
from plus.world import World
from plus.world.export import export_plus

# A chat template of its own shape (roles as headers), so the rendering is visibly the template's.
TEMPLATE = ("{% for m in messages %}### {{ m['role'] | upper }}\n{{ m['content'] | trim }}\n\n{% endfor %}"
            "{% if add_generation_prompt %}### ASSISTANT\n{% endif %}")
FLAGS = ["--max_steps", "2", "--rollout_batch_size", "2", "--train_batch_size", "2", "--micro_train_batch_size", "2",
         "--ppo_epochs", "1", "--generate_max_len", "8", "--prompt_max_len", "240", "--warm_start_steps", "0",
         "--grounding_steps", "0", "--no_progress"]


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    """A PLUS file exported from the world, and a tiny sft checkpoint whose tokenizer has a chat template."""
    root = tmp_path_factory.mktemp("fork")
    tok = Tokenizer.train(list(World(0).corpus(300)) + [plus_trainer.PREFERENCE_CUE.format(z="short")],
                          vocab_size=1000)
    tok.save(root / "tok")
    (root / "tok" / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": tok.eos_token, "pad_token": tok.pad_token, "chat_template": TEMPLATE}))
    chat_tok = Tokenizer.load(root / "tok")
    torch.manual_seed(0)
    policy = GPT(GPTConfig.gpt2_style(vocab_size=chat_tok.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=16))
    checkpoint.save_checkpoint(root / "sft", policy, {"stage": "sft", "model": policy.config.to_dict()},
                               tokenizer=chat_tok)
    export_plus(root / "files", "p2", n_train=2, n_new=0)
    return root, root / "files" / "p2_train.jsonl"


def run(root, out, *flags):
    return train.main(["--out_dir", str(root / out), "--init_from", str(root / "sft"), *flags, *FLAGS])


def test_the_fork_spelling_on_the_plain_context_is_stage_plus(world_files):
    root, file = world_files
    assert run(root, "plus", "--stage", "plus", "--method", "plus", "--dataset", str(file)) == 0
    assert run(root, "fork", "--stage", "ppo", "--train_reward", "--input_key", "context", "--dataset", str(file)) == 0
    a = checkpoint.load_state_dict(root / "plus" / "plus" / "p2_train" / "plus" / "reward_model")
    b = checkpoint.load_state_dict(root / "fork" / "plus" / "p2_train" / "plus" / "reward_model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = checkpoint.load_state_dict(root / "sft")
    assert any(not torch.equal(a[k], start[k.removeprefix("backbone.")]) for k in a if k.startswith("backbone."))
    config = checkpoint.load_config(root / "fork" / "plus" / "p2_train" / "plus" / "reward_model")
    assert config["summarizer_input"] == {"input_key": "context", "apply_chat_template": False}


def test_with_the_chat_template_the_summarizer_reads_the_rendered_messages(world_files, monkeypatch):
    root, file = world_files
    records, _ = load_plus_records(str(file), "error")
    tok = checkpoint.load_gpt(root / "sft")[1]
    # The template rendered here, by jinja2 alone, then encoded as plain text (it spells no special token).
    expected = [tok.encode(jinja2.Template(TEMPLATE).render(messages=r.context_messages, add_generation_prompt=True))
                for r in records]
    assert all(e[-3:] == tok.encode("### ASSISTANT\n")[-3:] for e in expected)
    assert plus_trainer.summarizer_prompts(tok, records, 10_000, "context_messages", True) == expected
    # The string context as one user turn; and the plain path is context_prompt_ids.
    assert plus_trainer.summarizer_prompts(tok, records[:1], 10_000, "context", True) == [tok.encode(
        jinja2.Template(TEMPLATE).render(messages=[{"role": "user", "content": records[0].context}],
                                         add_generation_prompt=True))]
    assert plus_trainer.summarizer_prompts(tok, records, 200) == [
        plus_trainer.context_prompt_ids(tok, r.context, 200) for r in records]

    seen = []
    real_train = ppo.train

    def recording_train(**kwargs):
        seen.append(kwargs["prompts"])
        return real_train(**kwargs)

    monkeypatch.setattr(ppo, "train", recording_train)
    assert run(root, "chat", "--stage", "ppo", "--train_reward", "--input_key", "context_messages",
               "--apply_chat_template", "--dataset", str(file)) == 0
    block = 256 - 8  # the summarizer's prompt budget: block_size less z's length
    assert seen == [[e[-block:] for e in expected]]
    config = checkpoint.load_config(root / "chat" / "plus" / "p2_train" / "plus" / "reward_model")
    assert config["summarizer_input"] == {"input_key": "context_messages", "apply_chat_template": True}
    assert config["summarizer_rendering"] == "'context_messages' in the policy tokenizer's chat template"


@pytest.mark.parametrize("argv, message", [
    (["--stage", "ppo", "--train_reward"],
     "--train_reward trains PLUS on a file (--dataset FILE); on the built-in world use --stage plus"),
    (["--stage", "plus", "--train_reward", "--dataset", "f.jsonl"], "--train_reward only applies to --stage ppo"),
    (["--stage", "ppo", "--train_reward", "--dataset", "f.jsonl", "--input_key", "context_messages"],
     "--input_key context_messages needs --apply_chat_template"),
    (["--stage", "ppo", "--train_reward", "--dataset", "f.jsonl", "--input_key", "prompt"],
     "--input_key prompt: the summarizer reads context or context_messages"),
    (["--stage", "ppo", "--train_reward", "--dataset", "f.jsonl", "--reward_pretrain", "rm"],
     "--reward_pretrain does not apply to --train_reward"),
    (["--stage", "ppo", "--train_reward", "--dataset", "f.jsonl", "--method", "bt"],
     "--method only applies to --stage plus"),
])
def test_bad_combinations_are_one_line_flag_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1
