"""Chat templates render as transformers renders them (plus/chat_template.py), and the
preference files' messages and sample.py's --prompt go through them.

transformers is the reference, a test-only dependency; the templates are written here
(tests/hf_models.py: Qwen2.5's ChatML layout and Llama 3's), so nothing is downloaded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")

import hf_models  # noqa: E402

from plus import preferences  # noqa: E402
from plus.chat_template import ChatTemplateError  # noqa: E402
from plus.data import DataError  # noqa: E402
from plus.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CONVERSATIONS = [
    [{"role": "system", "content": "You summarize posts."}, {"role": "user", "content": "My dog ate 3 socks. TL;DR:"},
     {"role": "assistant", "content": " Dog ate socks."}],
    [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi!"},
     {"role": "user", "content": "  What is 24 + 1?\n"}],
    [{"role": "user", "content": "One turn, <|im_end|> quoted as text"}],
]


@pytest.fixture(scope="module", params=["chatml", "llama3"])
def tokenizer_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "chatml":
        hf_models.write_tokenizer(directory, eos="<|im_end|>", pad="<|endoftext|>",
                                  chat_template=hf_models.CHATML_TEMPLATE)
    else:
        hf_models.write_tokenizer(directory, eos="<|eot_id|>", bos="<|begin_of_text|>",
                                  chat_template=hf_models.LLAMA3_TEMPLATE)
    return directory


def _hf_ids(hf_tokenizer, messages, add_generation_prompt):
    out = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_text_and_ids_equal_transformers(tokenizer_dir, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    ours = Tokenizer.load(tokenizer_dir)
    text = ours.chat_template.render(messages, add_generation_prompt)
    assert text == hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    ids = ours.apply_chat_template(messages, add_generation_prompt)
    assert ids == _hf_ids(hf, messages, add_generation_prompt)
    # The special tokens the template writes are single ids; the one quoted in a message is
    # split by transformers too, so the two agree on what the template means.
    assert ours.eos_id in ids or not text.count(ours.eos_token)


def test_the_template_refusing_a_conversation_is_one_line(tmp_path):
    hf_models.write_tokenizer(tmp_path, eos="<|eot_id|>", bos="<|begin_of_text|>",
                              chat_template=hf_models.LLAMA3_TEMPLATE)  # it raises on an unknown role
    ours = Tokenizer.load(tmp_path)
    with pytest.raises(ChatTemplateError, match=r"tokenizer_config.json: .*\(Unknown role: tool\)$"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])


def test_preference_messages_go_through_the_models_template(tokenizer_dir, tmp_path):
    """--apply_chat_template on a chat-message preference file: the prompt is the
    conversation before the reply in the model's template, with the generation prompt."""
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    ours = Tokenizer.load(tokenizer_dir)
    conversation = CONVERSATIONS[1]
    record = json.loads(json.dumps({"chosen": conversation + [{"role": "assistant", "content": "25"}],
                                    "rejected": conversation + [{"role": "assistant", "content": "twenty"}]}))
    file = tmp_path / "pairs.jsonl"
    file.write_text(json.dumps(record) + "\n")
    pairs, _ = preferences.load_preference_pairs(str(file), ours, apply_chat_template=True, prompt_max_len=512)
    assert pairs[0].prompt == _hf_ids(hf, conversation, True)

    # A conversation the template refuses is a bad record, file:line.
    record["chosen"][0]["role"] = record["rejected"][0]["role"] = "tool"
    file.write_text(json.dumps(record) + "\n")
    if "raise_exception" in ours.chat_template.source:
        with pytest.raises(DataError, match=r"pairs.jsonl:1: .*Unknown role"):
            preferences.load_preference_pairs(str(file), ours, apply_chat_template=True)


def test_preference_replies_are_the_templates_assistant_turn(tokenizer_dir, tmp_path):
    """--apply_chat_template: each reply is the assistant's turn as the template writes it
    after the generation prompt (no leading space), through the end-of-turn EOS."""
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    ours = Tokenizer.load(tokenizer_dir)
    conversation = CONVERSATIONS[1]
    file = tmp_path / "pairs.jsonl"
    file.write_text(json.dumps({"prompt": conversation, "chosen": "25", "rejected": "twenty five"}) + "\n")
    pairs, _ = preferences.load_preference_pairs(str(file), ours, apply_chat_template=True, prompt_max_len=512)
    prefix = _hf_ids(hf, conversation, True)
    for reply, ids in (("25", pairs[0].chosen), ("twenty five", pairs[0].rejected)):
        full = _hf_ids(hf, conversation + [{"role": "assistant", "content": reply}], False)
        if full[:len(prefix)] == prefix:  # ChatML; Llama 3's "\n\n" before the reply merges with it
            turn = full[len(prefix):]
            assert ids == turn[:turn.index(ours.eos_id) + 1]  # the reply, then <|im_end|>
        assert ours.decode(ids, skip_special_tokens=False) == reply + ours.eos_token


def test_ppo_prompts_go_through_the_models_template(tokenizer_dir, tmp_path):
    """train.py --stage ppo --apply_chat_template: a prompt field of chat messages, or a
    string as one user turn, becomes the conversation in the model's template up to the
    generation prompt, the ids transformers gives; --prompt_max_len keeps the end."""
    import train
    from plus import stage_flags
    from plus.distributed import Dist

    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    ours = Tokenizer.load(tokenizer_dir)
    file = tmp_path / "prompts.jsonl"
    file.write_text(json.dumps({"prompt": CONVERSATIONS[1]}) + "\n" + json.dumps({"prompt": "Sum up: 3 socks"}) + "\n")
    flags = ["--stage", "ppo", "--dataset", str(file), "--apply_chat_template", "--prompt_max_len", "512"]
    args = stage_flags.stage_args(stage_flags.build_parser().parse_args(flags), "ppo")
    expected = [_hf_ids(hf, CONVERSATIONS[1], True),
                _hf_ids(hf, [{"role": "user", "content": "Sum up: 3 socks"}], True)]
    assert train.ppo_prompts(args, ours, Dist(), block_size=1024) == expected
    args.prompt_max_len = 7
    assert train.ppo_prompts(args, ours, Dist(), block_size=1024) == [ids[-7:] for ids in expected]


def test_the_built_in_world_keeps_its_own_format():
    """A tokenizer without a template (the world's) renders render_chat's format, as before."""
    from plus.world import World

    ours = Tokenizer.train(World(0).corpus(200), vocab_size=400)
    messages = CONVERSATIONS[1]
    assert ours.chat_template is None
    assert preferences.chat_prompt_ids(ours, messages, 1000, "x") == ours.encode(preferences.render_chat(messages))


def test_sample_renders_the_prompt_in_the_template(tmp_path, capsys):
    """sample.py --apply_chat_template: the prompt printed back is the user's message in the
    model's template, and transformers' tokenizer gives the same ids for it."""
    import sample

    hf_models.build("qwen2", tmp_path / "qwen")
    assert sample.main(["--init_from", str(tmp_path / "qwen"), "--prompt", "Say hi", "--apply_chat_template",
                        "--generate_max_len", "4", "--temperature", "0"]) == 0
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "qwen")
    expected = hf.decode(_hf_ids(hf, [{"role": "user", "content": "Say hi"}], True), skip_special_tokens=True)
    assert expected == "system\nYou are a helpful assistant.\nuser\nSay hi\nassistant\n"
    assert capsys.readouterr().out.startswith(expected + "\n  ->")


def test_no_transformers_and_no_jinja2_unless_rendering(tmp_path):
    """The library and the entry points never import transformers; jinja2 is imported only
    when a template is rendered."""
    hf_models.write_tokenizer(tmp_path, eos="<|im_end|>", chat_template=hf_models.CHATML_TEMPLATE)
    code = ("import sys, plus.hf, plus.export, plus.checkpoint, plus.preferences, sample, train, eval\n"
            "from plus.tokenizer import Tokenizer\n"
            "t = Tokenizer.load(sys.argv[1])\n"
            "assert t.chat_template is not None\n"
            "assert 'transformers' not in sys.modules and 'jinja2' not in sys.modules, 'imported too early'\n"
            "t.apply_chat_template([{'role': 'user', 'content': 'x'}])\n"
            "assert 'jinja2' in sys.modules and 'transformers' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
