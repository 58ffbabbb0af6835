"""plus checkpoints exported as Hugging Face directories (plus/export.py) load in
transformers with the same logits and rewards, and load back here unchanged.

transformers is the reference, a test-only dependency; nothing is downloaded."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import hf_models  # noqa: E402

from plus import checkpoint  # noqa: E402
from plus.export import export  # noqa: E402
from plus.gpt import GPT, GPTConfig  # noqa: E402
from plus.reward_head import RewardModel, load_reward_model  # noqa: E402
from plus.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# fp32 on both sides, the same arithmetic in a different order: see tests/test_hf_load.py
# for the size of the rounding (~1e-6) against which 1e-4 is set.
ATOL = RTOL = 1e-4

CONFIGS = {  # the demo's decoder, and the other two families with what each exercises
    "demo_llama_tied": GPTConfig.llama_style(vocab_size=400, block_size=96, n_layer=2, n_head=4, n_embd=32,
                                             intermediate_size=96, tie_embeddings=True),
    "gpt2": GPTConfig.gpt2_style(vocab_size=400, block_size=96, n_layer=2, n_head=4, n_embd=32),
    "qwen2_gqa_scaled_untied": GPTConfig.llama_style(
        vocab_size=404, block_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, intermediate_size=96,
        qkv_bias=True, rope_theta=5e5, tie_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}),
}


@pytest.fixture(scope="module")
def tokenizer():
    from plus.world import World

    return Tokenizer.train(World(0).corpus(300), vocab_size=400)


def _randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight N(0, 0.1), norm weights 1 + N(0, 0.1): no zero bias or unit norm hides a mapping error."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0.0, 0.1)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return module.eval()


def _batch(tokenizer, lengths, seed=0, vocab=None):
    return hf_models.left_padded(lengths, vocab or tokenizer.vocab_size, tokenizer.pad_id, seed)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_exported_policy_has_transformers_logits(tmp_path, tokenizer, name):
    model = _randomized(GPT(CONFIGS[name]), seed=1)
    checkpoint.save_checkpoint(tmp_path / "ckpt", model, {"stage": "sft", "model": model.config.to_dict()},
                               tokenizer=tokenizer)
    export(tmp_path / "ckpt", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert hf.config.model_type == {"demo_llama_tied": "llama", "gpt2": "gpt2"}.get(name, "qwen2")
    ids, mask = _batch(tokenizer, [70, 33, 5])
    with torch.no_grad():
        ours = model.logits(model(ids, attention_mask=mask))
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    real = mask.bool()
    torch.testing.assert_close(theirs[real], ours[real], atol=ATOL, rtol=RTOL)

    # AutoTokenizer reads the exported tokenizer as ours: the same ids, EOS and pad.
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "SUBREDDIT: r/relationships\n\nTITLE: My boyfriend [24M] forgot\n\nPOST: 3 years, 2 months.\n\nTL;DR:"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
    assert (hf_tok.eos_token_id, hf_tok.pad_token_id) == (tokenizer.eos_id, tokenizer.pad_id)


def test_round_trip_from_transformers_and_back(tmp_path):
    """A GPT-2 directory (its tokenizer gains a pad, the embedding a row) loads, exports, and
    transformers reads back the original logits on the original vocabulary."""
    original = hf_models.build("gpt2", tmp_path / "gpt2")
    model, tokenizer, config = checkpoint.load_gpt(tmp_path / "gpt2")
    checkpoint.save_checkpoint(tmp_path / "sft", model, {"stage": "sft", "model": config["model"]}, tokenizer=tokenizer)
    export(tmp_path / "sft", tmp_path / "out")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    ids, mask = _batch(tokenizer, [40, 12], vocab=original.config.vocab_size)
    expected = hf_models.hf_logits(original, ids, mask)
    got = hf_models.hf_logits(again, ids, mask)[..., :original.config.vocab_size]
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=RTOL)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out").pad_token == "<|pad|>"


@pytest.mark.parametrize("name", ["gpt2", "qwen2_gqa_scaled_untied"])
def test_exported_reward_model_scores_the_same(tmp_path, tokenizer, name):
    """transformers' *ForSequenceClassification logit plus the documented offset is the
    normalized reward; and the exported directory loads back here as the same reward model."""
    model = _randomized(RewardModel(CONFIGS[name]), seed=2)
    references, _ = _batch(tokenizer, [20, 9, 14, 30], seed=3)
    references = references.flip(-1)  # right-padded, as the reward is scored
    ref_mask = (references != tokenizer.pad_id).long()
    with torch.no_grad():
        model.head.set_normalization(model.raw_rewards(references, ref_mask), normalize_std=True)
    assert float(model.head.gain) != 1.0 and float(model.head.bias) != 0.0
    model.save(tmp_path / "rm", tokenizer=tokenizer)
    export(tmp_path / "rm", tmp_path / "hf")

    ids, _ = _batch(tokenizer, [25, 7, 16], seed=4)
    ids = ids.flip(-1)
    mask = (ids != tokenizer.pad_id).long()
    with torch.no_grad():
        rewards = model(ids, mask)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(input_ids=ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(logits + hf.config.plus_reward["offset"], rewards, atol=ATOL, rtol=RTOL)

    loaded, loaded_tokenizer, config = load_reward_model(tmp_path / "hf")
    assert loaded_tokenizer.pad_id == tokenizer.pad_id and config["reward"]["bias"] != 0.0
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids, mask), rewards, atol=ATOL, rtol=RTOL)


def test_export_refusals_are_one_line_and_exit_1(tmp_path, tokenizer, capsys):
    from plus.export import main

    odd = GPTConfig(vocab_size=400, block_size=32, n_layer=1, n_head=2, n_embd=16, norm="layernorm", mlp="swiglu",
                    pos="rope", bias=False)
    checkpoint.save_checkpoint(tmp_path / "odd", GPT(odd), {"stage": "sft", "model": odd.to_dict()},
                               tokenizer=tokenizer)
    run = subprocess.run([sys.executable, "-m", "plus.export", str(tmp_path / "odd"), str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr
    assert "config.json: norm='layernorm'" in run.stderr
    assert main([str(tmp_path / "none"), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none'}: no such checkpoint directory"
    assert not (tmp_path / "out").exists()


def test_sft_rm_ppo_from_a_transformers_directory(tmp_path):
    """The README's path: SFT, RM (chat-message pairs in the model's template) and PPO
    start from an HF directory through train.py, and what they write exports back to
    transformers with the same logits and rewards."""
    import json

    import train

    hf_models.build("qwen2", tmp_path / "qwen", tie=True, spare_rows=4)
    turn = lambda role, text: {"role": role, "content": text}  # noqa: E731
    with open(tmp_path / "sft.jsonl", "w") as f, open(tmp_path / "pairs.jsonl", "w") as g:
        for i in range(8):
            f.write(json.dumps({"prompt": f"Post {i}: my dog ate {i} socks. TL;DR:", "summary": f"dog ate {i} socks"})
                    + "\n")
            ask = turn("user", f"Summarize: the dog ate {i} socks")
            g.write(json.dumps({"chosen": [ask, turn("assistant", f"dog ate {i} socks")],
                                "rejected": [ask, turn("assistant", "a cat slept")]}) + "\n")
    common = ["--out_dir", str(tmp_path / "run"), "--train_batch_size", "4", "--micro_train_batch_size", "4",
              "--no_progress"]
    assert train.main(["--stage", "sft", "--init_from", str(tmp_path / "qwen"),
                       "--dataset", str(tmp_path / "sft.jsonl"), "--eval_dataset", str(tmp_path / "sft.jsonl"),
                       "--input_key", "prompt", "--max_steps", "2", *common]) == 0
    assert train.main(["--stage", "rm", "--dataset", str(tmp_path / "pairs.jsonl"), "--apply_chat_template",
                       *common]) == 0
    assert train.main(["--stage", "ppo", "--dataset", str(tmp_path / "sft.jsonl"), "--input_key", "prompt",
                       "--max_steps", "1", "--rollout_batch_size", "4", "--generate_max_len", "8", *common]) == 0
    assert checkpoint.load_tokenizer(tmp_path / "run" / "ppo").eos_token == "<|im_end|>"  # the chat model's EOS kept

    export(tmp_path / "run" / "ppo", tmp_path / "ppo_hf")
    export(tmp_path / "run" / "rm", tmp_path / "rm_hf")
    policy, tokenizer, _ = checkpoint.load_gpt(tmp_path / "run" / "ppo")
    reward_model, _, _ = load_reward_model(tmp_path / "run" / "rm")
    ids = torch.tensor([tokenizer.encode("Post 3: my dog ate 3 socks. TL;DR: dog ate 3 socks") + [tokenizer.eos_id]])
    mask = torch.ones_like(ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ppo_hf", dtype=torch.float32).eval()
    hf_rm = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm_hf", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, policy.logits(policy(ids)), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(hf_rm.eval()(ids).logits[:, 0] + hf_rm.config.plus_reward["offset"],
                                   reward_model.eval()(ids, mask), atol=ATOL, rtol=RTOL)
