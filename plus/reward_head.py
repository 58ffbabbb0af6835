"""The reward model of Stiennon et al. 2020: the decoder with a scalar head, read at the
last real token.

Stiennon et al. 2020 (§3.4, "Learning to summarize from human feedback") turn the
supervised policy into a reward model by replacing its output head with a linear layer
that maps one hidden state to one number:

    r(x, y) = w . h_EOS + b,

h_EOS the final hidden state of the token that ends the summary. The decoder is causal,
so only the hidden state of the *last* token has seen the whole post and the whole
summary. Batches are right-padded for scoring, so that token is the last non-pad one (the
EOS for a finished summary); `last_token_index` finds it from the attention mask.

The implementation details that matter (Huang et al. 2024, "The N+ implementation
details of RLHF with PPO"):

* The new head starts small, w ~ N(0, 1 / (n_embd + 1)) (std 1/sqrt(n_embd + 1)) and
  b = 0, so the first rewards are near 0 and the pretrained features are not swamped.
* Dropout is off: a reward must be a deterministic function of the text.
* Normalization. The Bradley-Terry loss only sees differences r(x, y_win) - r(x, y_lose),
  so the trained scale has no fixed zero. Afterwards the rewards are shifted so that the
  reference summaries score 0 on average (and, with `--normalize_reward`, also scaled to
  std 1). This is an affine map kept in two buffers of the head,

      normalized = gain * raw + bias,

  stored in model.safetensors beside the weights, so every later stage (PPO, eval) reads
  the same normalized reward from the checkpoint, while `raw_rewards` keeps the untouched
  score for renormalizing.

Rows that pack one prompt with several responses (`segment_ids`, plus/gpt.py; built by
`plus.data.collate_shared_prompts`) give one reward per response, read at the (row,
column) of each response's last token (`read_at`). The same forward pass can also give
log p(y_t | x, y_<t) of given response tokens through the decoder's own LM head: the
language-model loss of Cheng et al. 2023 that the reward trainer adds reads them
(`return_logprobs`). This project's extension of the reward, the surprise term, lives in
plus/surprise.py (on by default for the built-in world's reward model, off for a file's).

Checkpoints: `RewardModel.save` writes a checkpoint directory (plus/checkpoint.py) whose
config.json has "stage": "rm", the decoder's "model" config and a "reward" section;
`load_reward_model` reads one back, or builds a reward model with a new head from a
plain policy checkpoint. Either can therefore start the next reward model, which gives
the general -> customized chain of Cheng et al. 2023 ("Everyone deserves a reward").
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from kernels import token_logprobs
from plus import checkpoint
from plus.gpt import GPT, GPTConfig
from plus.tokenizer import Tokenizer

NORMALIZATION = "gain * raw + bias"  # written into config.json so the file explains itself


def scalar_head(n_embd: int) -> nn.Linear:
    """Linear(n_embd, 1) with the reward-head init of Stiennon et al. 2020: weight
    ~ N(0, std = 1/sqrt(n_embd + 1)), bias 0. Shared with the critic's value head."""
    linear = nn.Linear(n_embd, 1)
    nn.init.normal_(linear.weight, mean=0.0, std=1.0 / math.sqrt(n_embd + 1))
    nn.init.zeros_(linear.bias)
    return linear


def float32_linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """`linear(x)` in float32, with autocast off: the scalar heads' outputs (rewards,
    values) stay float32 under bf16 autocast and for bf16 weights alike."""
    with torch.autocast(x.device.type, enabled=False):
        bias = None if linear.bias is None else linear.bias.float()
        return nn.functional.linear(x.float(), linear.weight.float(), bias)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Column of the last real (mask = 1) token of each row: [B, T] -> [B] (long).

    For a right-padded batch this is length - 1, the EOS of a finished response; the rule
    "last 1 in the row" also holds for rows that are padded on both sides (a left-padded
    query followed by a right-padded response during PPO)."""
    real = attention_mask.bool()                                           # [B, T]
    empty = (~real.any(dim=-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"attention_mask rows {empty} are all padding: there is no token to read a reward at")
    positions = torch.arange(real.shape[-1], device=real.device)           # [T]
    return torch.where(real, positions, -1).amax(dim=-1)                   # [B]


def at_last_token(per_token: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each row's entry at its last real token: [B, T, ...] -> [B, ...]."""
    rows = torch.arange(per_token.shape[0], device=per_token.device)
    return per_token[rows, last_token_index(attention_mask)]


class RewardHead(nn.Module):
    """Scalar head plus the normalization `normalized = gain * raw + bias`.

    `gain` and `bias` are buffers, not parameters: they are set once from the reference
    summaries (`set_normalization`), never trained, yet saved with the weights.
    """

    def __init__(self, n_embd: int):
        super().__init__()
        self.linear = scalar_head(n_embd)
        self.register_buffer("gain", torch.tensor(1.0))
        self.register_buffer("bias", torch.tensor(0.0))
        # How gain/bias were chosen (reference statistics), for config.json; None until set.
        self.normalization: dict | None = None

    def raw(self, hidden: torch.Tensor) -> torch.Tensor:
        """Unnormalized score: [..., C] -> [...], computed in float32 whatever the model
        dtype and autocast say (a reward is compared across summaries and runs)."""
        return float32_linear(hidden, self.linear).squeeze(-1)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return self.gain.float() * raw + self.bias.float()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.raw(hidden))

    @torch.no_grad()
    def set_normalization(self, reference_rewards_raw: torch.Tensor, normalize_std: bool) -> dict:
        """Choose gain and bias so the given raw rewards of the reference summaries have
        mean 0 after normalization, and (population) std 1 when `normalize_std`.

        With mean m and population std s of the references: gain = 1/s (or 1), and
        bias = -m * gain, so gain * r + bias = (r - m) * gain. The population std (divide
        by n, not n - 1) is the one that comes out as exactly 1. Returns the statistics,
        which are also kept in `self.normalization` and saved to config.json.
        """
        r = reference_rewards_raw.detach().double().flatten()
        if r.numel() == 0:
            raise ValueError("set_normalization needs at least one reference reward")
        mean = r.mean()
        std = r.std(correction=0)
        if normalize_std and not std > 0:
            raise ValueError(f"the {r.numel()} reference rewards have std {float(std)}: cannot scale them to std 1")
        gain = 1.0 / std if normalize_std else torch.ones((), dtype=torch.float64)
        self.gain.fill_(float(gain))
        self.bias.fill_(float(-mean * gain))
        self.normalization = {
            "reference_mean_raw": float(mean),
            "reference_std_raw": float(std),
            "n_references": r.numel(),
            "normalize_std": normalize_std,
        }
        return self.normalization


class RewardModel(nn.Module):
    """r(x, y): the decoder (`backbone`) and a `RewardHead` read at the last real token."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.dropout != 0.0:
            raise ValueError(f"a reward model needs dropout=0 (got {config.dropout}): rewards must be deterministic")
        self.config = config
        self.backbone = GPT(config)
        self.head = RewardHead(config.n_embd)

    @classmethod
    def from_gpt(cls, gpt: GPT) -> "RewardModel":
        """A reward model whose backbone is a copy of `gpt` (the SFT policy) and whose head
        is new (Stiennon et al. 2020). Dropout is switched off; it has no weights, so the
        copy is exact."""
        model = cls(replace(gpt.config, dropout=0.0))
        model.backbone.load_state_dict(gpt.state_dict())
        weight = gpt.tok_emb.weight
        return model.to(device=weight.device, dtype=weight.dtype)

    # ---- the pieces of one forward pass ---------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's final hidden states [B, T, C] of right-padded rows, or of packed
        rows [R, T, C] when `segment_ids` is given (attention_mask None)."""
        if segment_ids is not None:
            return self.backbone(input_ids, segment_ids=segment_ids)
        return self.backbone(input_ids, attention_mask=attention_mask)

    def head_scores(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None,
                    read_at: torch.Tensor | None = None) -> torch.Tensor:
        """The head's raw score at each row's last real token [B], or at the (row, column)
        pairs of `read_at` [N, 2] in packed rows: [N]."""
        # The head runs at every position (C -> 1 costs nothing next to the backbone),
        # exactly as the critic's value head does, so a critic copied from this model
        # reproduces these numbers bit for bit at the last token.
        per_token = self.head.raw(hidden)                                # [B, T]
        if read_at is not None:
            return per_token[read_at[:, 0], read_at[:, 1]]               # [N]
        return at_last_token(per_token, attention_mask)                  # [B]

    def response_logits(self, hidden: torch.Tensor, response_at: torch.Tensor) -> torch.Tensor:
        """The LM head's logits [M, V] at the (row, column) pairs `response_at` [M, 2], the
        positions that predict the response tokens."""
        # Several tokens can be predicted at one column (every response's first, at the
        # prompt's end), and the backward of hidden[rows, cols] then sums into it in an
        # order that varies from run to run on CPU; index_select's backward sums in a
        # fixed order.
        flat = hidden.reshape(-1, hidden.shape[-1])                       # [R * T, C]
        return self.backbone.logits(flat.index_select(0, response_at[:, 0] * hidden.shape[1] + response_at[:, 1]))

    # ---- rewards ----------------------------------------------------------------------------
    def raw_rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                    segment_ids: torch.Tensor | None = None, read_at: torch.Tensor | None = None,
                    return_logprobs: bool = False):
        """Unnormalized rewards [B] of right-padded sequences [B, T]: the head's score at
        each one's last token.

        Rows packing a prompt and several responses (`segment_ids`, with attention_mask
        None; see `plus.data.collate_shared_prompts`) give one reward per response, read at
        the (row, column) pairs of `read_at` [N, 2], the responses' last tokens: [N].

        With `return_logprobs`, also log p(y_t | x, y_<t) [M] of the response tokens that
        `response_tokens` names, from the same forward pass: (at [M, 2] the (row, column)
        that predicts each, ids [M] the tokens, owner [M] the reward each belongs to;
        `plus.data.response_tokens` builds them for `collate_sft` rows, and
        `collate_shared_prompts` for packed ones)."""
        if return_logprobs and response_tokens is None:
            raise ValueError("return_logprobs needs response_tokens (which tokens are the response's): "
                             "see plus.data.response_tokens")
        hidden = self.hidden_states(input_ids, attention_mask, segment_ids)  # [B, T, C]
        raw = self.head_scores(hidden, attention_mask, read_at)              # [B]
        if not return_logprobs:
            return raw
        at, ids, _ = response_tokens
        return raw, token_logprobs(self.response_logits(hidden, at), ids)   # [B], [M]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                segment_ids: torch.Tensor | None = None, read_at: torch.Tensor | None = None,
                return_logprobs: bool = False):
        """Normalized rewards (gain * raw + bias; equal to raw until normalized); the
        arguments and the optional log-probs as in `raw_rewards`."""
        out = self.raw_rewards(input_ids, attention_mask, response_tokens, segment_ids, read_at, return_logprobs)
        raw, logprobs = out if return_logprobs else (out, None)
        rewards = self.head.normalize(raw)
        return (rewards, logprobs) if return_logprobs else rewards

    # ---- checkpoints ------------------------------------------------------------------------
    def checkpoint_config(self, extra_config: dict | None = None) -> dict:
        """config.json of this model: {"stage": "rm", **extra_config, "model", "reward"}.
        `extra_config` may override "stage" (a PLUS reward model), not the model sections."""
        reward = {
            "normalization": NORMALIZATION,
            "gain": float(self.head.gain),
            "bias": float(self.head.bias),
            "reference": self.head.normalization,
        }
        return {"stage": "rm", **(extra_config or {}), "model": self.config.to_dict(), "reward": reward}

    def save(self, path, tokenizer: Tokenizer | None = None, extra_config: dict | None = None, **resume) -> Path:
        """Write a checkpoint directory (atomically); `resume` is passed on to
        `checkpoint.save_checkpoint` (trainer_state, optimizer, metrics_file)."""
        config = self.checkpoint_config(extra_config)
        return checkpoint.save_checkpoint(path, self, config, tokenizer=tokenizer, **resume)


def load_reward_model(path, device="cpu") -> tuple[RewardModel, Tokenizer, dict]:
    """(RewardModel, Tokenizer, config) from a checkpoint directory.

    A reward checkpoint (config.json has a "reward" section) is restored whole: backbone,
    head and normalization, as the class its config names (a checkpoint of the
    extension of plus/surprise.py comes back as that file's model). A policy checkpoint
    (pretrain / sft / ppo) gives its decoder as the backbone and a newly initialized head,
    as `RewardModel.from_gpt` would."""
    path = checkpoint.resolve(path)
    config = checkpoint.load_config(path)
    if "model" not in config:
        raise checkpoint.CheckpointError(f"{path / checkpoint.CONFIG}: missing the \"model\" section")
    gpt_config = replace(GPTConfig.from_dict(config["model"]), dropout=0.0)
    state = checkpoint.load_state_dict(path)
    if "reward" in config:
        from plus.surprise import reward_model_class  # it builds on this file, so it is imported here

        model = reward_model_class(config["reward"])(gpt_config)
        checkpoint.load_into(model, state)
        model.head.normalization = config["reward"].get("reference")
    else:
        model = RewardModel(gpt_config)
        checkpoint.load_into(model.backbone, state)
    tokenizer = checkpoint.load_tokenizer(path)
    return model.to(device), tokenizer, config
