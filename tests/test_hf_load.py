"""Hugging Face directories load into plus.gpt.GPT with transformers' numbers (plus/hf.py).

transformers is the reference here, a test-only dependency: tiny random models are built
with it and saved with save_pretrained (tests/hf_models.py), nothing is downloaded."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import hf_models  # noqa: E402  (tests/hf_models.py; needs transformers)

import sample  # noqa: E402
from plus import checkpoint  # noqa: E402
from plus.generate import generate  # noqa: E402
from plus.gpt import rope_cos_sin  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# fp32 logits of O(1-10) after two layers: each matmul sums <= 96 products whose rounding
# (unit 6e-8) grows like sqrt(K) * eps * |x| ~ 1e-6, and the SDPA kernel and transformers'
# eager attention sum in different orders. A few 1e-6 is what two exact implementations
# differ by; 1e-4 (absolute, plus 1e-4 relative) keeps a margin of ~30x, while any
# mapping error (a missing bias, a transposed weight, an unscaled rope frequency) moves
# the logits by 1e-2 or more (checked below for the rope scaling).
ATOL = RTOL = 1e-4

CASES = [  # (model_type, tied head, spare embedding rows as Qwen2.5 has, sharded)
    ("gpt2", True, 0, False),
    ("llama", False, 0, True),
    ("qwen2", True, 4, False),
    ("qwen2", False, 0, True),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for kind, tie, spare, shard in CASES:
        directory = tmp_path_factory.mktemp(f"{kind}_{'tied' if tie else 'untied'}")
        out[(kind, tie)] = directory, hf_models.build(kind, directory, tie=tie, shard=shard, spare_rows=spare)
    return out


@pytest.mark.parametrize("kind,tie", [(k, t) for k, t, _, _ in CASES])
def test_logits_equal_transformers_on_left_padded_batches(models, kind, tie):
    directory, hf = models[(kind, tie)]
    model, tokenizer, config = checkpoint.load_gpt(directory)
    assert config["hf"]["model_type"] == kind and model.config.tie_embeddings == tie
    ids, mask = hf_models.left_padded([40, 23, 7], hf.config.vocab_size, tokenizer.pad_id)
    expected = hf_models.hf_logits(hf, ids, mask)
    with torch.no_grad():
        logits = model.logits(model(ids, attention_mask=mask))
    real = mask.bool()
    # A pad the tokenizer lacked is one extra row: compare transformers' vocabulary.
    torch.testing.assert_close(logits[..., :hf.config.vocab_size][real], expected[real], atol=ATOL, rtol=RTOL)
    if model.config.vocab_size > hf.config.vocab_size:  # the added pad's logit is the mean one, never the argmax
        torch.testing.assert_close(logits[..., -1][real], expected[real].mean(-1), atol=ATOL, rtol=RTOL)


def test_llama3_rope_scaling_is_transformers_and_matters(models):
    """The scaled frequencies equal transformers' own rope init, and dropping the scaling
    moves the logits far beyond the tolerance (so the parity test can see it)."""
    directory, hf = models[("llama", False)]
    model, tokenizer, _ = checkpoint.load_gpt(directory)
    positions = torch.arange(200)[None]
    rotary = hf.model.rotary_emb
    cos_hf, sin_hf = rotary(torch.zeros(1, 1, dtype=torch.float32), positions)
    cos, sin = rope_cos_sin(positions, model.config.head_dim, model.config.rope_theta, model.config.rope_scaling)
    torch.testing.assert_close(cos[:, 0], cos_hf, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[:, 0], sin_hf, atol=1e-6, rtol=0)

    ids, mask = hf_models.left_padded([60, 41], hf.config.vocab_size, tokenizer.pad_id)
    with torch.no_grad():
        scaled = model.logits(model(ids, attention_mask=mask))
        model.config.rope_scaling = None
        plain = model.logits(model(ids, attention_mask=mask))
    assert (scaled - plain)[mask.bool()].abs().max() > 1e-2


@pytest.mark.parametrize("kind,tie", [(k, t) for k, t, _, _ in CASES])
def test_greedy_generation_equals_transformers(models, kind, tie):
    directory, hf = models[(kind, tie)]
    model, tokenizer, _ = checkpoint.load_gpt(directory)
    ids, mask = hf_models.left_padded([9, 5, 12], hf.config.vocab_size, tokenizer.pad_id, seed=1)
    ours = generate(model, ids, mask, 32, tokenizer.eos_id, tokenizer.pad_id, temperature=0.0).tokens
    with torch.no_grad():
        theirs = hf.generate(input_ids=ids.masked_fill(mask == 0, 0), attention_mask=mask, max_new_tokens=32,
                             do_sample=False, eos_token_id=tokenizer.eos_id, pad_token_id=0)[:, ids.shape[1]:]

    def until_eos(row):
        row = row.tolist()
        return row[:row.index(tokenizer.eos_id) + 1] if tokenizer.eos_id in row else row

    assert [until_eos(r) for r in ours] == [until_eos(r) for r in theirs]
    assert max(len(until_eos(r)) for r in ours) == 32  # at least one row decodes all 32 tokens


def test_sharded_and_single_file_give_the_same_weights(models, tmp_path):
    directory, hf = models[("llama", False)]
    assert (directory / "model.safetensors.index.json").is_file() and not (directory / "model.safetensors").exists()
    hf.save_pretrained(tmp_path, max_shard_size="5GB")
    shutil.copy(directory / "tokenizer.json", tmp_path)
    shutil.copy(directory / "tokenizer_config.json", tmp_path)
    sharded, single = checkpoint.load_gpt(directory)[0].state_dict(), checkpoint.load_gpt(tmp_path)[0].state_dict()
    assert sharded.keys() == single.keys()
    assert all(torch.equal(sharded[k], single[k]) for k in sharded)


def test_tokenizer_files_give_eos_pad_bos(models):
    directory, _ = models[("qwen2", True)]
    tokenizer = checkpoint.load_tokenizer(directory)  # Qwen2.5-Instruct's choice: end of turn, pad <|endoftext|>
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.pad_added) == ("<|im_end|>", "<|endoftext|>", False)
    directory, _ = models[("llama", False)]
    tokenizer = checkpoint.load_tokenizer(directory)
    assert tokenizer.eos_token == "<|eot_id|>" and tokenizer.pad_token == "<|pad|>" and tokenizer.pad_added
    assert tokenizer.bos_id == tokenizer.token_id("<|begin_of_text|>")


def test_a_trained_checkpoint_keeps_the_tokenizer_choices(models, tmp_path):
    """Saved as a plus checkpoint (what SFT from an HF directory writes), the model loads
    back with the same EOS, pad and chat template, and the same logits."""
    directory, _ = models[("qwen2", False)]
    model, tokenizer, config = checkpoint.load_gpt(directory)
    checkpoint.save_checkpoint(tmp_path / "sft", model, {"stage": "sft", "model": config["model"]}, tokenizer=tokenizer)
    again, tokenizer2, _ = checkpoint.load_gpt(tmp_path / "sft")
    assert (tokenizer2.eos_id, tokenizer2.pad_id) == (tokenizer.eos_id, tokenizer.pad_id)
    assert tokenizer2.chat_template.source == tokenizer.chat_template.source
    ids = torch.arange(20)[None]
    with torch.no_grad():
        assert torch.equal(again.logits(again(ids)), model.logits(model(ids)))


# ---- bad directories: one line, exit 1 -------------------------------------------------------
def _broken(directory: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    """A copy of `directory` broken in one way; the text the error line must contain."""
    bad = tmp_path / how
    shutil.copytree(directory, bad)
    config = (bad / "config.json").read_text()
    if how == "missing_tokenizer":
        (bad / "tokenizer.json").unlink()
        return bad, "tokenizer.json: missing"
    if how == "missing_shard":
        shard = sorted(bad.glob("model-*.safetensors"))[1]
        shard.unlink()
        return bad, f"{shard.name}: missing"
    if how == "unknown_model_type":
        (bad / "config.json").write_text(config.replace('"model_type": "qwen2"', '"model_type": "mistral"'))
        return bad, "model_type='mistral'"
    if how == "sliding_window":
        (bad / "config.json").write_text(config.replace('"use_sliding_window": false', '"use_sliding_window": true'))
        return bad, "use_sliding_window=True"
    if how == "yarn":
        (bad / "config.json").write_text(config.replace('"rope_type": "default"', '"rope_type": "yarn"'))
        return bad, "'yarn'"
    if how == "truncated":
        weights = bad / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return bad, "model.safetensors: unreadable weights"
    raise ValueError(how)


@pytest.mark.parametrize("how,source", [("missing_tokenizer", ("qwen2", True)), ("missing_shard", ("qwen2", False)),
                                        ("unknown_model_type", ("qwen2", True)), ("sliding_window", ("qwen2", True)),
                                        ("yarn", ("qwen2", True)), ("truncated", ("qwen2", True))])
def test_bad_directory_is_one_line_and_exit_1(models, tmp_path, capsys, how, source):
    assert '"rope_type": "default"' in (models[("qwen2", True)][0] / "config.json").read_text()
    bad, expected = _broken(models[source][0], tmp_path, how)
    assert sample.main(["--init_from", str(bad), "--n", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_bad_directory_through_the_command_line(models, tmp_path):
    bad, expected = _broken(models[("qwen2", True)][0], tmp_path, "unknown_model_type")
    run = subprocess.run([sys.executable, "train.py", "--stage", "sft", "--init_from", str(bad), "--max_steps", "1"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and expected in run.stderr, run.stderr
