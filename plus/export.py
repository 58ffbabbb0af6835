"""A plus checkpoint out as a Hugging Face directory that transformers loads as it is.

    python -m plus.export runs/demo/ppo runs/demo/ppo-hf     # a policy -> *ForCausalLM
    python -m plus.export runs/demo/rm runs/demo/rm-hf       # a reward model -> *ForSequenceClassification

    transformers.AutoModelForCausalLM.from_pretrained("runs/demo/ppo-hf")   # the same logits

The decoder's config becomes the model type that computes the same function (the
mapping of plus/hf.py, run backwards):

  LayerNorm, GELU, learned positions, biases            -> gpt2  (each block matrix transposed
                                                            to Conv1D's [in, out]; q, k, v joined
                                                            into c_attn)
  RMSNorm, SwiGLU, rope, a bias on every layer or none  -> llama (Llama 3.1's rope_scaling as it
                                                            writes it)
  RMSNorm, SwiGLU, rope, a bias on q, k, v only         -> qwen2

and any other mix is a one-line error naming the field. The directory holds config.json,
model.safetensors (`--dtype` float32, the training weights, or bfloat16, half the size),
generation_config.json, tokenizer.json and tokenizer_config.json (EOS, pad, BOS, the chat
template), so that AutoTokenizer gives the same ids.

Reward models. plus/reward_head.py's reward is r = gain * (w . h + b) + bias, with h the
final hidden state at the last real token. transformers' *ForSequenceClassification
computes v . h with a linear layer without bias, at the last token that is not
`pad_token_id`: the same token, since plus pads with its own pad id, distinct from EOS,
and config.json's pad_token_id is that id. The export writes v = gain * w, and the
constant that is left,

    offset = gain * b + bias,

goes into config.json as "plus_reward": {"offset": ...}, so that

    reward = model(input_ids, attention_mask).logits[:, 0] + config.plus_reward["offset"]

is plus's reward (normalized: reference summaries score 0). A difference of two rewards,
all a Bradley-Terry preference reads, needs no offset; a library that scores PPO rollouts
with the exported model adds it to keep references at 0. plus/hf.py reads the offset
back, so the directory also loads here as the same reward model. The opt-in surprise term
(plus/surprise.py) has no transformers equivalent and is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from plus import checkpoint
from plus.checkpoint import CheckpointError
from plus.cli import ArgumentParser, print_error
from plus.gpt import GPTConfig
from plus.hf import is_conv1d, weight_names
from plus.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ARCHITECTURE = {"gpt2": "GPT2", "llama": "Llama", "qwen2": "Qwen2"}


def model_type(config: GPTConfig, source) -> str:
    """The HF model_type that computes what `config` describes, or a CheckpointError naming the field."""
    family = (config.norm, config.mlp, config.pos)
    if family == ("layernorm", "gelu", "learned"):
        if not (config.bias and config.qkv_bias and config.n_kv_head == config.n_head):
            field = "bias" if not config.bias else "qkv_bias" if not config.qkv_bias else "n_kv_head"
            raise CheckpointError(f"{source}: {field}={getattr(config, field)!r}: GPT-2 has biases everywhere and "
                                  "plain multi-head attention")
        return "gpt2"
    if family == ("rmsnorm", "swiglu", "rope"):
        return "qwen2" if config.qkv_bias and not config.bias else "llama"
    field = "norm" if config.norm != "rmsnorm" and family[1:] == ("swiglu", "rope") else \
        "mlp" if (config.norm, config.pos) in (("rmsnorm", "rope"), ("layernorm", "learned")) else "pos"
    raise CheckpointError(f"{source}: {field}={getattr(config, field)!r} with {family}: no transformers model "
                          "computes this mix (gpt2: layernorm, gelu, learned; llama/qwen2: rmsnorm, swiglu, rope)")


def hf_config(config: GPTConfig, tokenizer: Tokenizer, kind: str, source, dtype: str) -> dict:
    """config.json of the exported model; `kind` "policy" or "reward"."""
    mtype = model_type(config, source)
    head = "ForSequenceClassification" if kind == "reward" else ("LMHeadModel" if mtype == "gpt2" else "ForCausalLM")
    out = {"model_type": mtype, "architectures": [ARCHITECTURE[mtype] + head], "vocab_size": config.vocab_size,
           "tie_word_embeddings": config.tie_embeddings, "bos_token_id": tokenizer.bos_id,
           "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id, "torch_dtype": dtype,
           "use_cache": True}
    if kind == "reward":
        out.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    if mtype == "gpt2":
        return {**out, "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head,
                "n_positions": config.block_size, "n_inner": config.intermediate_size,
                "activation_function": "gelu_new", "layer_norm_epsilon": config.norm_eps,
                "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "summary_first_dropout": 0.0,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False}
    out.update(hidden_size=config.n_embd, intermediate_size=config.intermediate_size,
               num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
               num_key_value_heads=config.n_kv_head, head_dim=config.head_dim,
               max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps, hidden_act="silu",
               rope_theta=config.rope_theta, rope_scaling=config.rope_scaling, attention_dropout=0.0)
    if mtype == "llama":
        out.update(attention_bias=config.bias, mlp_bias=config.bias)
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.n_layer)
    return out


def hf_state_dict(state: dict[str, torch.Tensor], config: GPTConfig, mtype: str,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The decoder's weights (plus names) under HF names: GPT-2's block matrices transposed
    to Conv1D, its q, k, v joined into c_attn."""
    grouped: dict[str, list[str]] = {}  # HF name -> its plus names (three for c_attn)
    for name, hf_name in weight_names(config, mtype).items():
        grouped.setdefault(hf_name, []).append(name)
    out = {}
    for hf_name, names in grouped.items():
        tensor = torch.cat([state[n].detach().to(dtype) for n in names])
        out[hf_name] = (tensor.t() if is_conv1d(mtype, names[0]) else tensor).contiguous().cpu()
    return out


def tokenizer_config(tokenizer: Tokenizer, block_size: int) -> dict:
    """tokenizer_config.json: the loaded model's own (EOS and pad as chosen), or a minimal one
    that AutoTokenizer reads for a tokenizer trained here."""
    base = tokenizer.config or {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
                                "clean_up_tokenization_spaces": False}
    out = {**base, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
           "bos_token": tokenizer.bos_token}
    if tokenizer.chat_template is not None:
        out["chat_template"] = tokenizer.chat_template.source
    return out


def export(source, out, dtype: str = "float32") -> Path:
    """Write checkpoint `source` (a policy or a reward model) as an HF directory `out`
    (module docstring); returns `out`. `out` must not exist or be empty; it appears whole
    or not at all."""
    from plus.reward_head import load_reward_model

    source, out = checkpoint.resolve(source), Path(out)
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out}: exists and is not empty; give a new directory")
    config = checkpoint.load_config(source)
    if "reward" in config:
        if config["reward"].get("token_surprise"):
            raise CheckpointError(f"{source}: a reward model with the surprise term (plus/surprise.py) has no "
                                  "transformers equivalent")
        model, tokenizer, _ = load_reward_model(source)
        gpt, head = model.backbone, model.head
        gain, w, b = float(head.gain), head.linear.weight.detach().double(), float(head.linear.bias.detach())
        extra = {"score.weight": (gain * w).to(DTYPES[dtype])}
        reward = {"offset": gain * b + float(head.bias), "equation": "reward = logits[:, 0] + offset",
                  "read_at": "the last token that is not pad_token_id (the EOS of a finished response)",
                  "reference": config["reward"].get("reference")}
        kind = "reward"
    else:
        gpt, tokenizer, _ = checkpoint.load_gpt(source)
        extra, reward, kind = {}, None, "policy"
    hf = hf_config(gpt.config, tokenizer, kind, source / checkpoint.CONFIG, dtype)
    if reward is not None:
        hf["plus_reward"] = reward
    state = hf_state_dict(gpt.state_dict(), gpt.config, hf["model_type"], DTYPES[dtype])
    if kind == "reward" and not gpt.config.tie_embeddings:
        state.pop("lm_head.weight")  # a classifier has no LM head
    state.update(extra)

    staging = out.with_name(out.name + ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    def write(name: str, obj: dict) -> None:
        (staging / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    write("config.json", hf)
    write("generation_config.json", {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    tokenizer.save(staging / TOKENIZER_FILE)
    write(TOKENIZER_CONFIG_FILE, tokenizer_config(tokenizer, gpt.config.block_size))
    if out.exists():
        out.rmdir()
    os.replace(staging, out)
    return out


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       prog="python -m plus.export")
    p.add_argument("checkpoint", help="a plus checkpoint directory (a policy or a reward model)")
    p.add_argument("out", help="the Hugging Face directory to write (new or empty)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    args = p.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out, args.dtype)
    except (CheckpointError, ValueError) as e:
        print_error(str(e))
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
