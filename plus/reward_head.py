"""The reward model: the decoder with a scalar head, read at the last real token.

Stiennon et al. 2020 (§3.4, "Learning to summarize from human feedback") turn the
supervised policy into a reward model r(x, y) by replacing its output head with a linear
layer that maps one hidden state to one number. The number is read at the token that
ends the summary: the decoder is causal, so only the hidden state of the *last* token has
seen the whole post and the whole summary. Batches are right-padded for scoring, so that
token is the last non-pad one (the EOS for a finished summary); `last_token_index` finds
it from the attention mask.

The implementation details that matter (Huang et al. 2024, "The N+ implementation
details of RLHF with PPO"):

* The new head starts small, weight ~ N(0, 1 / (n_embd + 1)) (std 1/sqrt(n_embd + 1))
  and bias 0, so the first rewards are near 0 and the pretrained features are not swamped.
* Dropout is off: a reward must be a deterministic function of the text.
* Normalization. The Bradley-Terry loss only sees differences r(x, y_win) - r(x, y_lose),
  so the trained scale has no fixed zero. Afterwards the rewards are shifted so that the
  reference summaries score 0 on average (and, with `--normalize_reward`, also scaled to
  std 1). This is an affine map kept in two buffers of the head,

      normalized = gain * raw + bias,

  stored in model.safetensors beside the weights, so every later stage (PPO, eval) reads
  the same normalized reward from the checkpoint, while `raw_rewards` keeps the untouched
  score for renormalizing.

The surprise term (this project's addition; `--no-token_surprise` leaves the reward of
Stiennon et al. as it is). A summary that states a wrong value ("for 3 years" where the
post says 8 months) differs from a right one in a single token, and the EOS hidden state
has to learn to compare that token with the post. The policy the reward model starts from
already does that comparison every time it predicts a token: a value that contradicts the
post is a *surprise* to it, -log p(y_t | x, y_<t) high, at a place where it was sure of
the next token, its *entropy* H_t low. So the reward adds, summed over the response
tokens, a small learned function of those two numbers, both read from the model's own
language-model head:

    r(x, y) = w . h_EOS + b + sum_t g(-log p(y_t | x, y_<t), H_t),

g a two-layer MLP (2 -> 16 -> 1, SiLU) whose last layer starts at zero, so a new reward
model starts as exactly the reward model of Stiennon et al. and learns how much to trust
its own surprise. Everything stays differentiable: the Bradley-Terry loss trains the
backbone through g as well (with g's inputs detached the gain was about a sixth as
large), so it also shapes the model's next-token predictions, much as direct preference
optimization (Rafailov et al. 2023) turns a policy's log-likelihoods into an implicit
reward. On the built-in world, in the same training budget, it lifted agreement with the
gold judge from 72% to 80% (one seed), and to 80.7-83.5% (two seeds) with the trainer's
default language-model loss, which keeps the LM head that g reads a language model; a
reference against a copy with one wrong value went from chance to 99% (BENCHMARKS.md,
"The reward model's surprise term"). A cost to watch: g learns to pay a little for every
fluent token, so the reward grows with length, an incentive PPO can follow (the demo's
PPO summaries run 34-35 tokens, against 33.5 with the EOS head alone and 29 for SFT).

Scoring with the term needs to know which tokens are the response's: `response_tokens` =
(at [M, 2], ids [M], owner [M]), the (row, column) whose output predicts each response
token, the token, and which of the rewards it belongs to (`plus.data.response_tokens`
builds them from SFT-style labels, `plus.data.collate_shared_prompts` for packed rows).

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
SURPRISE_HIDDEN = 16  # width of the surprise term's MLP


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
    def set_normalization(self, reference_rewards_raw: torch.Tensor, normalize_std: bool,
                          reference_surprise_raw: torch.Tensor | None = None) -> dict:
        """Choose gain and bias so the given raw rewards of the reference summaries have
        mean 0 after normalization, and (population) std 1 when `normalize_std`.

        With mean m and population std s of the references: gain = 1/s (or 1), and
        bias = -m * gain, so gain * r + bias = (r - m) * gain. The population std (divide
        by n, not n - 1) is the one that comes out as exactly 1. Returns the statistics,
        which are also kept in `self.normalization` and saved to config.json; with
        `reference_surprise_raw` (the surprise term's part of each raw reward), also its
        mean, which the critic takes in place of the term (plus/value_head.py).
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
        if reference_surprise_raw is not None:
            self.normalization["reference_surprise_mean_raw"] = float(reference_surprise_raw.double().mean())
        return self.normalization


class SurpriseTerm(nn.Module):
    """g(surprise, entropy) of each response token (see the module docstring): a
    Linear(2, hidden) -> SiLU -> Linear(hidden, 1) whose last layer starts at zero."""

    def __init__(self, hidden: int = SURPRISE_HIDDEN):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, logprobs: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        """[M] log p(y_t) and [M] entropies -> [M] per-token terms, in float32."""
        features = torch.stack([-logprobs.float(), entropy.float()], dim=-1)   # [M, 2]
        with torch.autocast(features.device.type, enabled=False):
            hidden = nn.functional.silu(float32_linear(features, self.mlp[0]))  # [M, hidden]
            return float32_linear(hidden, self.mlp[2]).squeeze(-1)


class RewardModel(nn.Module):
    """r(x, y): the decoder (`backbone`) and a `RewardHead` read at the last real token,
    plus, with `token_surprise`, the `SurpriseTerm` summed over the response tokens."""

    def __init__(self, config: GPTConfig, token_surprise: bool = False):
        super().__init__()
        if config.dropout != 0.0:
            raise ValueError(f"a reward model needs dropout=0 (got {config.dropout}): rewards must be deterministic")
        self.config = config
        self.backbone = GPT(config)
        self.head = RewardHead(config.n_embd)
        self.surprise = SurpriseTerm() if token_surprise else None

    @property
    def token_surprise(self) -> bool:
        return self.surprise is not None

    @classmethod
    def from_gpt(cls, gpt: GPT, token_surprise: bool = False) -> "RewardModel":
        """A reward model whose backbone is a copy of `gpt` (the SFT policy) and whose head
        (and surprise term) is new (Stiennon et al. 2020). Dropout is switched off; it has
        no weights, so the copy is exact."""
        model = cls(replace(gpt.config, dropout=0.0), token_surprise)
        model.backbone.load_state_dict(gpt.state_dict())
        weight = gpt.tok_emb.weight
        return model.to(device=weight.device, dtype=weight.dtype)

    def _parts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
               segment_ids: torch.Tensor | None, read_at: torch.Tensor | None, return_logprobs: bool):
        """(the head's raw score at the last token [B], the surprise term of each response
        token [M] or None without the term, log p of the response tokens [M] or None),
        from one forward pass."""
        if (self.token_surprise or return_logprobs) and response_tokens is None:
            raise ValueError("this reward needs response_tokens (which tokens are the response's): "
                             "see plus.data.response_tokens")
        if segment_ids is not None:
            hidden = self.backbone(input_ids, segment_ids=segment_ids)  # [R, T, C]
        else:
            hidden = self.backbone(input_ids, attention_mask=attention_mask)  # [B, T, C]
        # The head runs at every position (C -> 1 costs nothing next to the backbone),
        # exactly as the critic's value head does, so a critic copied from this model
        # reproduces these numbers bit for bit at the last token.
        per_token = self.head.raw(hidden)                                # [B, T]
        if read_at is not None:
            head = per_token[read_at[:, 0], read_at[:, 1]]               # [N]
        else:
            head = at_last_token(per_token, attention_mask)              # [B]
        terms = logprobs = None
        if response_tokens is not None and (self.token_surprise or return_logprobs):
            at, ids, _ = response_tokens
            # The hidden states that predict the response tokens, [M, C]. Several tokens can
            # be predicted at one column (every response's first, at the prompt's end), and
            # the backward of hidden[rows, cols] then sums into it in an order that varies
            # from run to run on CPU; index_select's backward sums in a fixed order.
            flat = hidden.reshape(-1, hidden.shape[-1])                     # [R * T, C]
            logits = self.backbone.logits(flat.index_select(0, at[:, 0] * hidden.shape[1] + at[:, 1]))  # [M, V]
            if self.token_surprise:
                logprobs, entropy = token_logprobs(logits, ids, return_entropy=True)  # [M], [M]
                terms = self.surprise(logprobs, entropy)                    # [M]
            else:
                logprobs = token_logprobs(logits, ids)                      # [M]
        return head, terms, logprobs

    def raw_parts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                  segment_ids: torch.Tensor | None = None, read_at: torch.Tensor | None = None,
                  return_logprobs: bool = False):
        """(the head's raw score at the last token [B], the surprise term's sum over the
        response tokens [B] or None without the term, log p of the response tokens [M] or
        None without `return_logprobs`), from one forward pass; see `raw_rewards`."""
        head, terms, logprobs = self._parts(input_ids, attention_mask, response_tokens, segment_ids, read_at,
                                            return_logprobs)
        surprise = None if terms is None else torch.zeros_like(head).index_add(0, response_tokens[2], terms)
        return head, surprise, (logprobs if return_logprobs else None)

    def raw_rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                    segment_ids: torch.Tensor | None = None, read_at: torch.Tensor | None = None,
                    return_logprobs: bool = False):
        """Unnormalized rewards [B] of right-padded sequences [B, T]: the head's score at
        the last token, plus the surprise term's sum when the model has one.

        `response_tokens` (at [M, 2], ids [M], owner [M]) name the response tokens (see the
        module docstring); the surprise term needs them. With `return_logprobs`, also
        log p of each of those tokens [M], from the same forward pass: the language-model
        loss of Cheng et al. 2023 uses them, so reward and LM loss cost one pass.

        Rows packing a prompt and several responses (`segment_ids`, with attention_mask
        None; see `plus.data.collate_shared_prompts`) give one reward per response, read at
        the (row, column) pairs of `read_at` [N, 2], the responses' last tokens: [N]."""
        head, terms, logprobs = self._parts(input_ids, attention_mask, response_tokens, segment_ids, read_at,
                                            return_logprobs)
        raw = head if terms is None else head.index_add(0, response_tokens[2], terms)  # the head plus each row's terms
        return (raw, logprobs) if return_logprobs else raw

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

    # ----------------------------------------------------------------------------------
    def checkpoint_config(self, extra_config: dict | None = None) -> dict:
        """config.json of this model: {"stage": "rm", **extra_config, "model", "reward"}.
        `extra_config` may override "stage" (a PLUS reward model), not the model sections."""
        reward = {
            "token_surprise": self.token_surprise,
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


def load_reward_model(path, device="cpu", token_surprise: bool | None = None) -> tuple[RewardModel, Tokenizer, dict]:
    """(RewardModel, Tokenizer, config) from a checkpoint directory.

    A reward checkpoint (config.json has a "reward" section) is restored whole: backbone,
    head, surprise term and normalization. A policy checkpoint (pretrain / sft / ppo)
    gives its decoder as the backbone and a newly initialized head, as
    `RewardModel.from_gpt` would, with a new surprise term if `token_surprise`.

    `token_surprise` None keeps what the checkpoint has. True on a reward checkpoint
    without the term adds a new one, which starts at zero and so changes no reward; False
    on one with a trained term is an error: dropping it would change every reward."""
    path = checkpoint.resolve(path)
    config = checkpoint.load_config(path)
    if "model" not in config:
        raise checkpoint.CheckpointError(f"{path / checkpoint.CONFIG}: missing the \"model\" section")
    gpt_config = replace(GPTConfig.from_dict(config["model"]), dropout=0.0)
    state = checkpoint.load_state_dict(path)
    if "reward" in config:
        has_term = bool(config["reward"].get("token_surprise", False))
        if token_surprise is False and has_term:
            raise checkpoint.CheckpointError(
                f"{path}: this reward model was trained with its surprise term; it cannot be dropped "
                f"(start from a policy checkpoint for a reward model without one)")
        model = RewardModel(gpt_config, token_surprise=has_term)
        checkpoint.load_into(model, state)
        model.head.normalization = config["reward"].get("reference")
        if token_surprise and not has_term:
            model.surprise = SurpriseTerm()
    else:
        model = RewardModel(gpt_config, token_surprise=bool(token_surprise))
        checkpoint.load_into(model.backbone, state)
    tokenizer = Tokenizer.load(path / checkpoint.TOKENIZER)
    return model.to(device), tokenizer, config
