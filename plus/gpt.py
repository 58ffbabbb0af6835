"""A GPT-style decoder-only transformer, written to be read.

One file holds the whole model: the config, attention (with a preallocated KV cache),
the MLP, the block, and the model. The same code covers the two families that the rest
of the project loads weights for:

* GPT-2 style  (Radford et al. 2019): LayerNorm, GELU MLP, learned absolute positions,
  biases everywhere, the output head tied to the token embedding.
* Llama / Qwen2 style (Touvron et al. 2023; Qwen2 2024): RMSNorm, SwiGLU MLP, rotary
  position embeddings (Su et al. 2021) with a configurable base `rope_theta`,
  grouped-query attention (`n_kv_head` < `n_head`, Ainslie et al. 2023), optional bias on
  the q/k/v projections only (Qwen2), an untied output head.

Rotary positions rotate each pair (i, i + D/2) of a query or key at position p by the angle
p * w_i, w_i = theta^(-2i/D), so the attention score depends on the distance between two
tokens only. Llama 3.1 stretches the slow frequencies to reach a longer context than it was
pretrained on (`rope_scaling`, Meta's "llama3" rule): with wavelength l_i = 2 pi / w_i, the
pretraining context L, a factor s and the bounds lo < hi (`low_freq_factor`,
`high_freq_factor`),

    w_i' = w_i                                 if l_i < L / hi   (fast: kept)
    w_i' = w_i / s                             if l_i > L / lo   (slow: stretched s times)
    w_i' = (1 - a) w_i / s + a w_i,  a = (L / l_i - lo) / (hi - lo)   in between,

so positions a few tokens apart are told apart as before while the slowest rotations stay
below one turn over s times the old context. Without `rope_scaling`, w_i' = w_i.

`forward` returns the final hidden states; `.logits(hidden)` applies the output head
separately, so that the loss code can fuse the head with the log-softmax and never hold
the full `[tokens, vocab]` logits (see `kernels/`).

Padding. RLHF batches are *left*-padded for generation (so every prompt ends at the same
column and new tokens are appended on the right) and right-padded for scoring. Both are
handled by an `attention_mask` [B, T] (1 = real token): a query never attends to padding,
and position ids are counted over real tokens only (`cumsum(mask) - 1`), so a left-padded
sequence sees exactly the positions it would see alone.

Shared prompts. A reward model compares several responses to one prompt, and the prompt
is usually most of the tokens. `segment_ids` [B, T] packs one prompt and several
continuations of it into a single row (0 = the prompt, k = 1, 2, ... the k-th
continuation, -1 = padding): a token sees the prompt and the earlier tokens of its own
continuation, and nothing else, so each continuation is computed exactly as if it
followed the prompt alone, while the prompt is computed once (`shared_prefix_layout`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    block_size: int = 512            # the longest sequence the model can see (positions / rope table)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None     # None -> n_head (plain multi-head attention); fewer -> GQA
    n_embd: int = 256
    intermediate_size: int | None = None  # MLP width; None -> 4 * n_embd
    norm: str = "layernorm"          # "layernorm" (GPT-2) | "rmsnorm" (Llama/Qwen)
    norm_eps: float = 1e-5
    mlp: str = "gelu"                # "gelu" (GPT-2, tanh approximation) | "swiglu" (Llama/Qwen)
    pos: str = "learned"             # "learned" (GPT-2) | "rope" (Llama/Qwen)
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # Llama 3.1's frequency scaling (module docstring): {"rope_type": "llama3",
                                      # "factor", "low_freq_factor", "high_freq_factor",
                                      # "original_max_position_embeddings"}; None: plain rope
    bias: bool = True                # biases on every linear layer and norm (GPT-2)
    qkv_bias: bool | None = None     # bias on q/k/v only; None -> follow `bias` (Qwen2: True with bias=False)
    tie_embeddings: bool = True      # output head shares the token-embedding matrix (GPT-2)
    dropout: float = 0.0             # RLHF wants dropout off everywhere (Huang et al. 2024)
    init_std: float = 0.02

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        if self.qkv_bias is None:
            self.qkv_bias = self.bias
        checks = [
            (self.norm in ("layernorm", "rmsnorm"), f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}"),
            (self.mlp in ("gelu", "swiglu"), f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}"),
            (self.pos in ("learned", "rope"), f"pos must be 'learned' or 'rope', got {self.pos!r}"),
            (self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}"),
            (self.n_head % self.n_kv_head == 0, f"n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}"),
            (self.pos != "rope" or (self.n_embd // self.n_head) % 2 == 0, "rope needs an even head dimension"),
            (self.rope_scaling is None or (self.pos == "rope" and isinstance(self.rope_scaling, dict)
                                           and self.rope_scaling.get("rope_type") == "llama3"
                                           and set(LLAMA3_SCALING_KEYS) <= set(self.rope_scaling)),
             f"rope_scaling must be None or {{'rope_type': 'llama3', {', '.join(map(repr, LLAMA3_SCALING_KEYS))}}} "
             f"with pos='rope', got {self.rope_scaling!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"GPTConfig: {message}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"GPTConfig: unknown keys {unknown}")
        return cls(**d)

    @classmethod
    def gpt2_style(cls, **kw) -> "GPTConfig":
        return cls(**{**dict(norm="layernorm", mlp="gelu", pos="learned", bias=True, tie_embeddings=True), **kw})

    @classmethod
    def llama_style(cls, **kw) -> "GPTConfig":
        base = dict(norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", pos="rope", bias=False, tie_embeddings=False)
        return cls(**{**base, **kw})


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight  (Zhang & Sennrich 2019), computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    # The "half split" rotary layout used by the Llama/Qwen checkpoints: the head dimension
    # is viewed as two halves (x1, x2) and rotated to (-x2, x1).
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


LLAMA3_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def llama3_scaled(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.1's rotary frequencies w_i' from w_i (module docstring), in float32."""
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    stretched = torch.where(wavelen > context / lo, inv_freq / factor, inv_freq)
    a = (context / wavelen - lo) / (hi - lo)
    between = (1 - a) * stretched / factor + a * stretched
    in_between = ~(wavelen < context / hi) & ~(wavelen > context / lo)
    return torch.where(in_between, between, stretched)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float,
                 scaling: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for rotary embeddings at the given positions: [B, T] -> two [B, 1, T, head_dim]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    if scaling is not None:
        inv_freq = llama3_scaled(inv_freq, scaling)
    angles = position_ids.float()[..., None] * inv_freq  # [B, T, head_dim/2]
    angles = torch.cat((angles, angles), dim=-1)         # [B, T, head_dim]
    return angles.cos()[:, None], angles.sin()[:, None]


def shared_prefix_layout(segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention mask [B, 1, T, T] bool, position ids [B, T]) of rows packing one prompt
    and several continuations of it; `segment_ids` [B, T]: 0 on the prompt, k >= 1 on the
    k-th continuation, -1 on padding, the prompt first.

    Query t may attend to key s <= t when s is a prompt token or belongs to t's own
    continuation. A token's position is then the number of tokens it sees, minus one: the
    prompt counts 0, 1, ..., P-1 and every continuation counts on from P, as it would
    directly after the prompt. (The same rule, "position = visible tokens - 1", is what
    `cumsum(mask) - 1` computes for a padded row.) Padding sees the prompt and itself,
    which keeps its softmax finite; its outputs are never read.
    """
    B, T = segment_ids.shape
    seg_q = segment_ids[:, :, None]                                            # [B, T, 1]
    seg_k = segment_ids[:, None, :]                                            # [B, 1, T]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    visible = causal & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))        # [B, T, T]
    position_ids = visible.sum(-1) - 1                                         # [B, T]
    visible = visible | torch.eye(T, dtype=torch.bool, device=segment_ids.device)
    return visible[:, None], position_ids.clamp(min=0)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on `tensor` runs in at this point: autocast's, where autocast is
    on for the tensor's device, else the tensor's own."""
    kind = tensor.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return tensor.dtype


class KVCache:
    """Preallocated keys and values for incremental decoding.

    Sampling appends one token per step; re-running the whole sequence each step would
    cost O(T^2) forward passes. Instead each layer writes its new keys/values into a
    buffer allocated once for the longest sequence and attends over the filled part.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0  # how many positions are filled (same for every layer once a forward ends)
        # `GPT.decode_step` writes one position held in this tensor and reads whole buffers,
        # so its shapes never change (what CUDA-graph capture needs); None otherwise.
        self.write_at: torch.Tensor | None = None  # [1] long

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, H_kv, T, D] after the filled part; return all keys/values so far.
        In a `decode_step` (T = 1): write at `write_at`, return the whole [.., max_len, D] buffers."""
        if self.write_at is not None:
            self.k[layer].index_copy_(2, self.write_at, k)
            self.v[layer].index_copy_(2, self.write_at, v)
            return self.k[layer], self.v[layer]
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache: {end} positions exceed the preallocated {self.max_len}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.config, self.layer = config, layer
        hd = config.head_dim
        self.q_proj = nn.Linear(config.n_embd, config.n_head * hd, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * hd, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * hd, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.n_head * hd, config.n_embd, bias=config.bias)
        self.o_proj.residual_projection = True  # scaled init, see GPT._init_weights

    def forward(self, x, rope, attn_mask, kv_cache: KVCache | None):
        B, T, _ = x.shape
        cfg = self.config
        q = self.q_proj(x).view(B, T, cfg.n_head, cfg.head_dim).transpose(1, 2)      # [B, H, T, D]
        k = self.k_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)   # [B, Hkv, T, D]
        v = self.v_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q = (q * cos + rotate_half(q) * sin).to(v.dtype)
            k = (k * cos + rotate_half(k) * sin).to(v.dtype)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=attn_mask,
            is_causal=attn_mask is None,  # fast path: plain causal attention, no padding, no cache
            dropout_p=cfg.dropout if self.training else 0.0,
            enable_gqa=cfg.n_kv_head != cfg.n_head,
        )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, cfg.n_embd))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        width = config.intermediate_size
        self.up_proj = nn.Linear(config.n_embd, width, bias=config.bias)
        if self.swiglu:
            self.gate_proj = nn.Linear(config.n_embd, width, bias=config.bias)
        self.down_proj = nn.Linear(width, config.n_embd, bias=config.bias)
        self.down_proj.residual_projection = True

    def forward(self, x):
        if self.swiglu:  # Shazeer 2020: silu(x W_gate) * (x W_up)
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.norm2 = make_norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope, attn_mask, kv_cache):
        x = x + self.dropout(self.attn(self.norm1(x), rope, attn_mask, kv_cache))
        return x + self.dropout(self.mlp(self.norm2(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2 init: N(0, 0.02) everywhere, zero biases; the projections that write into the
        # residual stream get std / sqrt(2 * n_layer) so the stream's variance does not grow
        # with depth (each block adds two such terms).
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            if getattr(module, "residual_projection", False):
                std = std / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    # ----------------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,                          # [B, T] token ids
        attention_mask: torch.Tensor | None = None,  # [B, T_past + T], 1 = real token
        kv_cache: KVCache | None = None,
        segment_ids: torch.Tensor | None = None,     # [B, T] shared-prompt packing (module docstring)
    ) -> torch.Tensor:                              # [B, T, n_embd] final hidden states
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.config.block_size and segment_ids is None:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size={self.config.block_size}")
        if attention_mask is not None and attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, past + T)}")

        attn_mask = None
        if segment_ids is not None:
            if kv_cache is not None or attention_mask is not None:
                raise ValueError("segment_ids defines the attention itself: pass no attention_mask or kv_cache with it")
            if segment_ids.shape != (B, T):
                raise ValueError(f"segment_ids has shape {tuple(segment_ids.shape)}, expected {(B, T)}")
            attn_mask, position_ids = shared_prefix_layout(segment_ids)
            # A packed row may be longer than block_size; its positions may not.
            if int(position_ids.max()) + 1 > self.config.block_size:
                raise ValueError(f"prompt + continuation of {int(position_ids.max()) + 1} tokens is longer than "
                                 f"block_size={self.config.block_size}")
        # Positions count real tokens only, so left padding does not shift them.
        elif attention_mask is None:
            position_ids = torch.arange(past, past + T, device=idx.device).expand(B, T)
        else:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]

        x, rope = self._embed(idx, position_ids)
        x = self.dropout(x)

        if segment_ids is None and (attention_mask is not None or past > 0):
            attn_mask = self._attention_bias(attention_mask, B, T, past, idx.device)
        for block in self.blocks:
            x = block(x, rope, attn_mask, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        return self.norm_f(x)

    def _embed(self, idx: torch.Tensor, position_ids: torch.Tensor):
        """Token embeddings, plus learned positions (GPT-2) or the rotary (cos, sin) the
        attention applies (Llama): (x [B, T, C], rope or None)."""
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            return x + self.pos_emb(position_ids), None
        return x, rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, self.config.rope_scaling)

    def decode_step(self, idx: torch.Tensor, position_ids: torch.Tensor, key_mask: torch.Tensor,
                    kv_cache: KVCache) -> torch.Tensor:
        """One new token per row with fixed shapes, for decoding under a CUDA graph:
        idx, position_ids [B, 1]; key_mask [B, max_len] bool, the cache columns each row's
        token may attend to (its real tokens, and the column it is written to); the token's
        keys and values go to column `kv_cache.write_at`. Returns the logits [B, V]: those of
        `forward` + `logits` on the cache's filled part, the same to round-off (the extra
        columns are masked out, but the attention reads a longer row)."""
        x, rope = self._embed(idx, position_ids)
        attn_mask = key_mask[:, None, None, :]                      # [B, 1, 1, max_len]
        for block in self.blocks:
            x = block(x, rope, attn_mask, kv_cache)
        return self.logits(self.norm_f(x))[:, -1]

    @staticmethod
    def _attention_bias(attention_mask, B, T, past, device) -> torch.Tensor:
        """Boolean [B, 1, T, past+T]: causal, never attending to padding.

        A padding query (left padding) would have no key to attend to, and softmax over an
        empty set is NaN; letting every query see itself keeps those rows finite. Their
        outputs are never used.
        """
        S = past + T
        q_pos = torch.arange(past, S, device=device)[:, None]
        k_pos = torch.arange(S, device=device)[None, :]
        allowed = (k_pos <= q_pos)[None, None]                      # [1, 1, T, S]
        if attention_mask is not None:
            key_real = attention_mask.bool()[:, None, None, :]       # [B, 1, 1, S]
            allowed = (allowed & key_real) | (k_pos == q_pos)[None, None]
        return allowed.expand(B, 1, T, S)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head: [..., n_embd] -> [..., vocab_size]."""
        return self.lm_head(hidden)

    def new_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        """A cache in the dtype the keys and values come in: autocast's where autocast is on
        (bf16 keys in a float32 cache would double its memory for nothing), else the weights'."""
        p = self.tok_emb.weight
        return KVCache(self.config, batch_size, max_len, p.device, compute_dtype(p))

    # ----------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without the embedding lookups (as in the scaling-law
        papers). A tied token embedding stays in: it is also the output head's matmul."""
        n = sum(p.numel() for p in self.parameters())  # a tied head is counted once
        if non_embedding:
            if not self.config.tie_embeddings:
                n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B:
        6 N for the weight matmuls plus 12 * L * n_embd * T for attention scores and values."""
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * seq_len

    def estimate_mfu(self, tokens_per_second: float, seq_len: int, peak_flops: float) -> float:
        """Model FLOPs utilization: achieved training FLOP/s over the hardware peak."""
        return self.flops_per_token(seq_len) * tokens_per_second / peak_flops
