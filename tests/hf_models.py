"""Tiny random Hugging Face model directories for the tests/test_hf_*.py files, built
locally with transformers (a test-only dependency) and `tokenizers`: nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. My boyfriend [24M] forgot my birthday again.",
    "TL;DR: he forgot, I am upset, what do I do? Summaries should be short and say what happened.",
    "SUBREDDIT: r/relationships\n\nTITLE: Help\n\nPOST: We have been together for 3 years and it is hard.",
    "You are a helpful assistant. Answer the question in one sentence, please, with numbers 0123456789.",
]
# Qwen2.5's ChatML layout: a default system turn when the conversation has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama 3's layout: BOS, trimmed contents, and whitespace that trim_blocks/lstrip_blocks remove.
LLAMA3_TEMPLATE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('Unknown role: ' + message['role']) }}
    {% endif %}
    {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{% endif %}"""


def write_tokenizer(directory: Path, eos: str = "<|endoftext|>", pad: str | None = None,
                    bos: str | None = None, chat_template: str | None = None) -> int:
    """A byte-level BPE tokenizer.json and tokenizer_config.json in `directory`; returns its vocabulary size."""
    backend = RustTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS * 4, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "pad_token": pad, "bos_token": bos,
              "model_max_length": 1024, "clean_up_tokenization_spaces": False}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return backend.get_vocab_size()


def build(kind: str, directory: Path, tie: bool = True, shard: bool = False, spare_rows: int = 0,
          seed: int = 0, **config_overrides):
    """A random transformers model of `kind` (gpt2, llama, qwen2) saved in `directory` with a
    tokenizer; returns the transformers model (fp32, eval mode).

    Every weight is redrawn N(0, 0.1) (norm weights 1 + N(0, 0.1)), so biases and norm
    weights are not the zeros and ones of a fresh init and a wrong mapping shows."""
    import transformers

    pad = {"gpt2": None, "llama": None, "qwen2": "<|endoftext|>"}[kind]
    eos = {"gpt2": "<|endoftext|>", "llama": "<|eot_id|>", "qwen2": "<|im_end|>"}[kind]
    vocab = write_tokenizer(directory, eos=eos, pad=pad, bos="<|begin_of_text|>" if kind == "llama" else None,
                            chat_template=LLAMA3_TEMPLATE if kind == "llama" else CHATML_TEMPLATE)
    common = dict(vocab_size=vocab + spare_rows, tie_word_embeddings=tie, bos_token_id=None,
                  eos_token_id=SPECIALS.index(eos))
    if kind == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **common)
        cls = transformers.GPT2LMHeadModel
    elif kind == "llama":  # GQA, head_dim 16, and Llama 3.1's rope scaling over a short "original" context
        config = transformers.LlamaConfig(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=256, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64}, **common)
        cls = transformers.LlamaForCausalLM
    else:
        config = transformers.Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, rope_theta=1e6,
                                          max_position_embeddings=256, **common)
        cls = transformers.Qwen2ForCausalLM
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.1)
            if ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.add_(1.0)
    model.save_pretrained(directory, max_shard_size="20KB" if shard else "5GB")
    return model


def left_padded(lengths: list[int], vocab: int, pad_id: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids [B, T] left-padded with `pad_id`, and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), T), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, T - n:] = torch.randint(0, vocab, (n,), generator=g)
        mask[row, T - n:] = 1
    return ids, mask


def hf_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' logits of a left-padded batch, positions counted over real tokens as
    in generation (the padding is fed as id 0, which transformers' vocabulary has)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids.masked_fill(mask == 0, 0), attention_mask=mask, position_ids=positions).logits
