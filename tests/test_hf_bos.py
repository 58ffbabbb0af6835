"""Plain prompts of a model whose tokenizer begins sequences with BOS start as transformers'
tokenizer(text) starts them: Llama 2's config says so ("add_bos_token": true), Llama 3's
tokenizer.json post-processor adds <|begin_of_text|>, Qwen2's adds none.

transformers is the reference, a test-only dependency; the tokenizers are built here
(tests/hf_models.py), so nothing is downloaded."""

import json

import pytest

transformers = pytest.importorskip("transformers")

import hf_models  # noqa: E402
from tokenizers import Tokenizer as RustTokenizer  # noqa: E402
from tokenizers import processors  # noqa: E402

from plus import data, plus_trainer, preferences  # noqa: E402
from plus.tokenizer import Tokenizer  # noqa: E402

BOS = "<|begin_of_text|>"
LONG = "My boyfriend [24M] forgot my birthday again and I am upset about it, what do I do now? " * 3


@pytest.fixture(scope="module", params=["add_bos_token", "post_processor", "none"])
def tokenizers_pair(request, tmp_path_factory):
    """(ours, transformers') for one way of adding BOS, and how many BOS ids lead a sequence."""
    directory = tmp_path_factory.mktemp(request.param)
    hf_models.write_tokenizer(directory, eos="<|eot_id|>" if request.param != "none" else "<|endoftext|>",
                              bos=BOS if request.param != "none" else None)
    kwargs = {}
    if request.param == "add_bos_token":  # Llama 2: the config's flag
        config = json.loads((directory / "tokenizer_config.json").read_text())
        (directory / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": True}))
        kwargs["add_bos_token"] = True  # as transformers' Llama tokenizer class reads the flag
    elif request.param == "post_processor":  # Llama 3: tokenizer.json's TemplateProcessing
        backend = RustTokenizer.from_file(str(directory / "tokenizer.json"))
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, backend.token_to_id(BOS))])
        backend.save(str(directory / "tokenizer.json"))
    hf = transformers.AutoTokenizer.from_pretrained(directory, **kwargs)
    return Tokenizer.load(directory), hf, int(request.param != "none")


def _cut(ids: list[int], n_bos: int, budget: int) -> list[int]:
    """transformers' ids cut to `budget` as a prompt keeps its end: the BOS stays."""
    return ids[:n_bos] + ids[n_bos:][-(budget - n_bos):]


def test_adds_bos_says_what_transformers_adds(tokenizers_pair):
    ours, hf, n_bos = tokenizers_pair
    assert ours.adds_bos == bool(n_bos)
    assert hf("x")["input_ids"][:n_bos] == ([ours.bos_id] if n_bos else [])
    assert ours.encode("x") == hf("x", add_special_tokens=False)["input_ids"]  # encode itself adds nothing


def test_sft_rm_and_ppo_prompts_equal_transformers_ids(tokenizers_pair, tmp_path):
    import train
    from plus import stage_flags
    from plus.distributed import Dist

    ours, hf, n_bos = tokenizers_pair
    short = "Sum up: 3 socks"
    file = tmp_path / "records.jsonl"
    file.write_text("".join(json.dumps({"prompt": p, "summary": "Dog ate socks.", "chosen": "Socks.",
                                        "rejected": "A dog."}) + "\n" for p in (short, LONG)))
    budget = 24
    expected = [hf(short)["input_ids"], _cut(hf(LONG)["input_ids"], n_bos, budget)]
    assert len(expected[0]) < budget and len(expected[1]) == budget

    sft, _ = data.load_sft_examples(str(file), ours, prompt_max_len=budget)
    assert [e.prompt for e in sft] == expected
    pairs, _ = preferences.load_preference_pairs(str(file), ours, prompt_max_len=budget)
    assert [p.prompt for p in pairs] == expected
    args = stage_flags.stage_args(stage_flags.build_parser().parse_args(
        ["--stage", "ppo", "--dataset", str(file), "--prompt_max_len", str(budget)]), "ppo")
    assert train.ppo_prompts(args, ours, Dist(), block_size=1024) == expected

    # The Stiennon query: its post loses its end, the BOS stays first and counts.
    record = {"subreddit": "relationships", "title": "Help", "post": LONG}
    query = data.format_query("relationships", "Help", LONG)
    assert data.prompt_ids(ours, record, None, 512, "x") == hf(query)["input_ids"]
    cut = data.prompt_ids(ours, record, None, 90, "x")
    assert len(hf(query)["input_ids"]) > 90 >= len(cut) and cut[:n_bos + 3] == hf(query)["input_ids"][:n_bos + 3]


def test_plus_prompts_and_pretraining_start_with_one_bos(tokenizers_pair):
    ours, hf, n_bos = tokenizers_pair
    bos = [ours.bos_id] * n_bos
    cue = plus_trainer.PREFERENCE_CUE.format(z="likes short summaries")
    conditioned = plus_trainer.conditioned_prompt_ids(ours, "likes short summaries", "Sum up: 3 socks", 512)
    assert conditioned == bos + ours.encode(cue) + ours.encode("Sum up: 3 socks")
    assert plus_trainer.conditioned_prompt_ids(ours, None, "Sum up: 3 socks", 512) == hf("Sum up: 3 socks")["input_ids"]
    context = "A\n\nB\n\n##Summary"
    assert plus_trainer.context_prompt_ids(ours, context, 512) == hf(context)["input_ids"]
    blocks = data.pretrain_blocks(ours, ["Dog ate socks.", "TL;DR: he forgot."], 8, 2)
    assert blocks[0].tolist()[: n_bos + 4] == hf("Dog ate socks.")["input_ids"][: n_bos + 4]
