"""Hugging Face model directories read into `plus.gpt.GPT`, without `transformers`.

    model, tokenizer, config = plus.checkpoint.load_gpt("models/Qwen2.5-0.5B-Instruct")

A directory as the Hub publishes it: config.json (with "model_type"), model.safetensors
or the shards model-0000k-of-0000n.safetensors that model.safetensors.index.json lists,
tokenizer.json and tokenizer_config.json. plus/checkpoint.py's loaders recognize one by
the "model_type" in its config.json and come here, so such a directory goes wherever a
checkpoint goes (--init_from, --reward_pretrain, sample.py, eval.py). Nothing is
downloaded: the user fetches the directory.

Three model types are the two families of plus/gpt.py:

  gpt2   LayerNorm, GELU (tanh), learned positions, biases. OpenAI's Conv1D stores a
         weight as [in, out], the transpose of nn.Linear's, and c_attn holds q, k, v
         side by side: each is transposed, c_attn then split in three.
  llama  RMSNorm, SwiGLU, rotary positions (rope_theta; Llama 3.1's "llama3"
         rope_scaling), grouped-query attention.
  qwen2  llama with a bias on q, k and v only.

Exactness. Every config field that changes the function the network computes is mapped
to a GPTConfig field or checked to hold the value the decoder implements; anything else
(another model_type, a rope scaling other than "llama3", sliding-window attention on, a
head_dim that is not hidden_size / heads, quantized weights) is a one-line
CheckpointError naming the file and the field, never a silently different model.
Dropout rates are training settings and are ignored: RLHF trains with dropout off.

Vocabulary. The pad token must differ from EOS (plus/tokenizer.py); EOS, pad and BOS come
from tokenizer_config.json. A tokenizer without such a pad (GPT-2, Qwen2.5 base models)
gets one; where it falls past the embedding matrix, the matrix grows by rows equal to the
mean of the others (as transformers' resize does), so the pad's logit is the mean logit,
never the greedy choice, and the other logits are unchanged. A line on stderr says what
was chosen.

Reward models. A `*ForSequenceClassification` directory with one label is a reward model:
its `score` (a linear map without bias, read at the last non-pad token, which is where
plus/reward_head.py reads: the last real token) becomes the reward head's weight. A
config.json written by plus/export.py also carries the reward's constant offset
("plus_reward", documented there), so the reward comes back exactly. A classifier has no
LM head; an untied one (read only by the reward trainer's LM loss) starts as a copy of
the token embedding.

Memory. Weights are read through safetensors' memory map, shard by shard and tensor by
tensor, converted to the requested dtype as they are read; `load_gpt` puts them into a
model built on the meta device, so the peak is the model once in that dtype, never a
randomly initialized copy beside it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open

from plus.checkpoint import CheckpointError
from plus.gpt import GPT, LLAMA3_SCALING_KEYS, GPTConfig
from plus.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, Tokenizer

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MODEL_TYPES = ("gpt2", "llama", "qwen2")
# Buffers some files carry that the decoder computes itself: GPT-2's causal mask, the
# rotary frequencies of older Llama files.
COMPUTED = re.compile(r".*\.(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)")

# plus/gpt.py name -> HF name, without the "model." (llama, qwen2) or "transformer." (gpt2)
# prefix of the base model. One table serves loading and plus/export.py; in GPT-2 three
# plus weights (q, k, v) are one HF weight (c_attn).
LLAMA_NAMES = [
    (r"tok_emb\.weight", "embed_tokens.weight"),
    (r"norm_f\.weight", "norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"blocks\.(\d+)\.norm1\.weight", r"layers.\1.input_layernorm.weight"),
    (r"blocks\.(\d+)\.norm2\.weight", r"layers.\1.post_attention_layernorm.weight"),
    (r"blocks\.(\d+)\.attn\.(.*)", r"layers.\1.self_attn.\2"),
    (r"blocks\.(\d+)\.mlp\.(.*)", r"layers.\1.mlp.\2"),
]
GPT2_NAMES = [
    (r"tok_emb\.weight", "wte.weight"),
    (r"pos_emb\.weight", "wpe.weight"),
    (r"norm_f\.(.*)", r"ln_f.\1"),
    (r"lm_head\.weight", "lm_head.weight"),
    (r"blocks\.(\d+)\.norm1\.(.*)", r"h.\1.ln_1.\2"),
    (r"blocks\.(\d+)\.norm2\.(.*)", r"h.\1.ln_2.\2"),
    (r"blocks\.(\d+)\.attn\.[qkv]_proj\.(.*)", r"h.\1.attn.c_attn.\2"),
    (r"blocks\.(\d+)\.attn\.o_proj\.(.*)", r"h.\1.attn.c_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.up_proj\.(.*)", r"h.\1.mlp.c_fc.\2"),
    (r"blocks\.(\d+)\.mlp\.down_proj\.(.*)", r"h.\1.mlp.c_proj.\2"),
]
BASE_PREFIX = {"gpt2": "transformer.", "llama": "model.", "qwen2": "model."}
SCORE = "score.weight"  # a *ForSequenceClassification head: Linear(hidden, num_labels, bias=False)

_noted: set[str] = set()  # directories whose pad choice was already reported


def is_hf_dir(path) -> bool:
    """A directory whose config.json names a "model_type" (and is not a plus checkpoint's)."""
    file = Path(path) / CONFIG
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config and config.get("format") != "plus"


def _read_json(file: Path) -> dict:
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: should hold a JSON object")
    return value


class _Fields:
    """config.json's fields, each refusal naming the file and the field."""

    def __init__(self, config: dict, file: Path):
        self.config, self.file = config, file

    def get(self, key: str, default=None):
        value = self.config.get(key)
        return default if value is None else value

    def need(self, key: str):
        if self.config.get(key) is None:
            raise CheckpointError(f"{self.file}: missing the field {key!r}")
        return self.config[key]

    def expect(self, key: str, allowed: tuple, default=None):
        value = self.get(key, default)
        if value not in allowed:
            raise CheckpointError(f"{self.file}: {key}={value!r} is not supported (the decoder implements "
                                  f"{' or '.join(map(repr, allowed))})")
        return value

    def refuse(self, key: str, why: str):
        raise CheckpointError(f"{self.file}: {key}={self.config.get(key)!r}: {why}")


def gpt_config(config: dict, file: Path) -> GPTConfig:
    """The GPTConfig of an HF config.json, or a CheckpointError naming the field that has
    no exact equivalent (module docstring)."""
    f = _Fields(config, file)
    model_type = f.get("model_type")
    if model_type not in MODEL_TYPES:
        f.refuse("model_type", f"not supported (supported: {', '.join(MODEL_TYPES)})")
    if f.get("quantization_config") is not None:
        f.refuse("quantization_config", "quantized weights are not supported; give the unquantized model")
    if model_type == "gpt2":
        f.expect("activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
        f.expect("scale_attn_weights", (True,), True)
        f.expect("scale_attn_by_inverse_layer_idx", (False,), False)
        f.expect("reorder_and_upcast_attn", (False,), False)
        f.expect("add_cross_attention", (False,), False)
        n_embd = f.need("n_embd")
        return GPTConfig.gpt2_style(
            vocab_size=f.need("vocab_size"), block_size=f.need("n_positions"), n_layer=f.need("n_layer"),
            n_head=f.need("n_head"), n_embd=n_embd, intermediate_size=f.get("n_inner", 4 * n_embd),
            norm_eps=f.get("layer_norm_epsilon", 1e-5), tie_embeddings=f.get("tie_word_embeddings", True))

    f.expect("hidden_act", ("silu",), "silu")
    hidden, heads = f.need("hidden_size"), f.need("num_attention_heads")
    f.expect("head_dim", (None, hidden // heads))
    if model_type == "llama":
        bias = f.expect("attention_bias", (False, True), False)
        f.expect("mlp_bias", (bias,), False)  # one `bias` switch covers attention and MLP
        qkv_bias = bias
    else:
        if f.get("use_sliding_window", False):
            f.refuse("use_sliding_window", "sliding-window attention is not implemented")
        bias, qkv_bias = False, True
    if any(t != "full_attention" for t in f.get("layer_types", [])):
        f.refuse("layer_types", "only full attention is implemented")
    theta, scaling = _rope(f)
    return GPTConfig.llama_style(
        vocab_size=f.need("vocab_size"), block_size=f.need("max_position_embeddings"),
        n_layer=f.need("num_hidden_layers"), n_head=heads, n_kv_head=f.get("num_key_value_heads", heads),
        n_embd=hidden, intermediate_size=f.need("intermediate_size"), norm_eps=f.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta), rope_scaling=scaling, bias=bias, qkv_bias=qkv_bias,
        tie_embeddings=f.get("tie_word_embeddings", False))


def _rope(f: _Fields) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from the older fields (rope_theta, rope_scaling) or the
    newer one (rope_parameters, which holds both)."""
    key = "rope_parameters" if isinstance(f.get("rope_parameters"), dict) else "rope_scaling"
    params = f.get(key) or {}
    if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
        f.refuse(key, "per-layer rope parameters are not supported")
    theta = params.get("rope_theta", f.get("rope_theta", 10000.0))
    if params.get("partial_rotary_factor", f.get("partial_rotary_factor", 1.0)) != 1.0:
        f.refuse("partial_rotary_factor", "rope on part of the head is not implemented")
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        f.refuse(key, f"rope type {kind!r} is not implemented (plain rope and 'llama3' are)")
    missing = [k for k in LLAMA3_SCALING_KEYS if k not in params]
    if missing:
        f.refuse(key, f"a 'llama3' scaling needs {', '.join(missing)}")
    return theta, {"rope_type": "llama3", **{k: params[k] for k in LLAMA3_SCALING_KEYS}}


def _architecture(f: _Fields) -> str:
    """"policy" or "reward" from config.json's "architectures"."""
    arch = (f.get("architectures") or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        labels = len(f.get("id2label", {})) or f.get("num_labels", 2)  # transformers' default is 2 labels
        if labels != 1:
            f.refuse("id2label", f"a reward model has one label, this classifier has {labels}")
        return "reward"
    if arch and not arch.endswith(("ForCausalLM", "LMHeadModel", "Model")):
        f.refuse("architectures", "not a causal language model or a one-label sequence classifier")
    return "policy"


def weight_names(gpt: GPTConfig, model_type: str) -> dict[str, str]:
    """{plus name: HF name} of every weight of the decoder `gpt` describes, the HF name
    with its base-model prefix (the output head has none); a tied head is left out."""
    table = GPT2_NAMES if model_type == "gpt2" else LLAMA_NAMES
    with torch.device("meta"):
        names = [k for k in GPT(gpt).state_dict() if not (k == "lm_head.weight" and gpt.tie_embeddings)]
    out = {}
    for name in names:
        pattern, hf_name = next((p, h) for p, h in table if re.fullmatch(p, name))
        prefix = "" if name == "lm_head.weight" else BASE_PREFIX[model_type]
        out[name] = prefix + re.sub(f"^{pattern}$", hf_name, name)
    return out


def is_conv1d(model_type: str, plus_name: str) -> bool:
    """GPT-2's block matrices are Conv1D, stored [in, out]: the transpose of nn.Linear's."""
    return model_type == "gpt2" and plus_name.startswith("blocks.") and plus_name.endswith("proj.weight")


def load_tokenizer(path) -> Tokenizer:
    """The directory's tokenizer (EOS, pad, BOS and chat template from tokenizer_config.json);
    one line on stderr, once per directory, when the pad had to be chosen here."""
    path = Path(path)
    if not (path / TOKENIZER_FILE).is_file():
        raise CheckpointError(f"{path / TOKENIZER_FILE}: missing (the model's tokenizer; fetch it with the model)")
    try:
        tokenizer = Tokenizer.load(path / TOKENIZER_FILE)
    except ValueError as e:  # TokenizerError, or the chat template's
        raise CheckpointError(str(e)) from None
    configured = (tokenizer.config or {}).get("pad_token")
    configured = configured.get("content") if isinstance(configured, dict) else configured
    if configured != tokenizer.pad_token and str(path) not in _noted:
        _noted.add(str(path))
        print(f"note: {path / TOKENIZER_CONFIG_FILE}: no pad token distinct from EOS {tokenizer.eos_token!r}; "
              f"padding with {tokenizer.pad_token!r} (id {tokenizer.pad_id}"
              f"{', added to the vocabulary' if tokenizer.pad_added else ''})", file=sys.stderr)
    return tokenizer


def _read(path) -> tuple[dict, Tokenizer]:
    """(plus config dict, tokenizer) of an HF directory."""
    path = Path(path)
    file = path / CONFIG
    raw = _read_json(file)
    f = _Fields(raw, file)
    try:
        gpt = gpt_config(raw, file)
    except ValueError as e:  # GPTConfig's own checks (e.g. heads that do not divide the width)
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{file}: {e}") from None
    kind = _architecture(f)
    tokenizer = load_tokenizer(path)
    gpt = replace(gpt, vocab_size=max(gpt.vocab_size, tokenizer.vocab_size))
    config = {"stage": "hf", "model": gpt.to_dict(),
              "hf": {"model_type": raw["model_type"], "vocab_size": raw.get("vocab_size", raw.get("n_vocab"))}}
    if kind == "reward":
        from plus.reward_head import NORMALIZATION

        extra = f.get("plus_reward", {})
        config["reward"] = {"normalization": NORMALIZATION, "gain": 1.0, "bias": float(extra.get("offset", 0.0)),
                            "reference": extra.get("reference")}
    return config, tokenizer


def load_config(path) -> dict:
    """A plus-style config dict ({"stage": "hf", "model": GPTConfig fields, "hf": ...,
    and "reward" for a reward model}) of an HF directory."""
    return _read(path)[0]


def _weight_files(path: Path) -> list[Path]:
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if (path / INDEX).is_file():
        weight_map = _read_json(path / INDEX).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{path / INDEX}: no \"weight_map\"")
        files = [path / name for name in dict.fromkeys(weight_map.values())]
        for shard in files:
            if not shard.is_file():
                raise CheckpointError(f"{shard}: missing (a shard listed in {INDEX})")
        return files
    if (path / "pytorch_model.bin").is_file() or (path / "pytorch_model.bin.index.json").is_file():
        raise CheckpointError(f"{path}: only safetensors weights are read (pytorch_model.bin is a pickle)")
    raise CheckpointError(f"{path}: no {WEIGHTS} or {INDEX}")


def _hf_tensors(path: Path, dtype: torch.dtype):
    """(file, name, tensor in `dtype`) for every stored weight, one at a time."""
    for file in _weight_files(path):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield file, name, f.get_tensor(name).to(dtype)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors' own error type: bad header, file shorter than its header says
            raise CheckpointError(f"{file}: unreadable weights ({_first_line(e)})") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_state_dict(path, device="cpu", dtype: torch.dtype = torch.float32, config: dict | None = None) -> dict:
    """The directory's weights under plus names, in `dtype` on `device`: GPT's names for a
    policy, RewardModel's (backbone.*, head.*) for a reward model."""
    path = Path(path)
    config = config or load_config(path)
    gpt = GPTConfig.from_dict(config["model"])
    model_type, reward = config["hf"]["model_type"], "reward" in config
    names = weight_names(gpt, model_type)
    plus_names: dict[str, list[str]] = {}  # HF name -> the plus names it holds
    for name, hf_name in names.items():
        plus_names.setdefault(hf_name, []).append(name)
    state: dict[str, torch.Tensor] = {}
    for file, hf_name, tensor in _hf_tensors(path, dtype):
        if hf_name == SCORE and reward:
            state["head.linear.weight"] = tensor
            continue
        if COMPUTED.fullmatch(hf_name) or (hf_name == "lm_head.weight" and gpt.tie_embeddings):
            continue  # buffers the decoder computes; a tied head some files store twice
        # A file of the base model alone names its weights without the prefix.
        targets = plus_names.get(hf_name) or plus_names.get(BASE_PREFIX[model_type] + hf_name)
        if targets is None:
            raise CheckpointError(f"{file}: unexpected weight {hf_name!r} for this config.json ({model_type})")
        if is_conv1d(model_type, targets[0]):
            tensor = tensor.t()
        for name, part in zip(targets, tensor.split(tensor.shape[0] // len(targets))):  # c_attn -> q, k, v
            state[name] = part.contiguous()
    if reward and not gpt.tie_embeddings and "lm_head.weight" not in state:
        # A classifier has no LM head; the reward model's (read only by the reward trainer's
        # LM loss) starts as the token embedding, the tied head a classifier would have had.
        state["lm_head.weight"] = state["tok_emb.weight"].clone()
    for name in ("tok_emb.weight", "lm_head.weight"):
        if name in state and state[name].shape[0] < gpt.vocab_size:  # rows for a pad the tokenizer added
            grow = gpt.vocab_size - state[name].shape[0]
            state[name] = torch.cat([state[name], state[name].mean(0, keepdim=True).expand(grow, -1)])
    _check_complete(path, state, gpt, reward, {**names, "head.linear.weight": SCORE})
    if reward:
        state = {("" if k.startswith("head.") else "backbone.") + k: v for k, v in state.items()}
        state["head.linear.bias"] = torch.zeros(1, dtype=dtype)
        state["head.gain"] = torch.tensor(1.0)
        state["head.bias"] = torch.tensor(config["reward"]["bias"])
    return {k: v.to(device) for k, v in state.items()}


def _check_complete(path: Path, state: dict, gpt: GPTConfig, reward: bool, names: dict[str, str]) -> None:
    """Every weight the config implies, in its shape; `names`: plus -> HF names, for the message."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in GPT(gpt).state_dict().items()}
    if gpt.tie_embeddings:
        expected.pop("lm_head.weight")
    if reward:
        expected["head.linear.weight"] = torch.Size([1, gpt.n_embd])
    missing = [names.get(k, k) for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{path}: the weights lack {missing[0]!r}" + (f" and {len(missing) - 1} more"
                                                                            if len(missing) > 1 else ""))
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise CheckpointError(f"{path}: {names.get(k, k)!r} has shape {tuple(state[k].shape)}, config.json "
                                  f"implies {tuple(shape)}")


def load_gpt(path, device="cpu", dtype: torch.dtype = torch.float32) -> tuple[GPT, Tokenizer, dict]:
    """(GPT, Tokenizer, config dict) of an HF causal-LM directory, built on the meta device
    and filled with the weights as read (module docstring, "Memory")."""
    path = Path(path)
    config, tokenizer = _read(path)
    if "reward" in config:
        raise CheckpointError(f"{path / CONFIG}: a *ForSequenceClassification model is a reward model; it has no "
                              "LM head to generate with")
    gpt = GPTConfig.from_dict(config["model"])
    with torch.device("meta"):
        model = GPT(gpt)
    model.load_state_dict(load_state_dict(path, device, dtype, config), strict=False, assign=True)
    if gpt.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight  # assign=True replaced the shared parameter
    return model, tokenizer, config
