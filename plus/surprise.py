"""The surprise term: this project's extension of the reward of Stiennon et al. (`--token_surprise`).

A summary that states a wrong value ("for 3 years" where the post says 8 months) differs
from a right one in a single token, and the reward head of plus/reward_head.py, read at
the EOS, has to learn to compare that token with the post. The policy the reward model
starts from already does that comparison every time it predicts a token: a value that
contradicts the post is a *surprise* to it, -log p(y_t | x, y_<t) high, at a place where
it was sure of the next token, its *entropy* H_t low. So this reward adds, summed over
the response tokens, a small learned function of those two numbers, both read from the
model's own language-model head:

    r(x, y) = w . h_EOS + b + sum_t g(-log p(y_t | x, y_<t), H_t),

g a two-layer MLP (2 -> 16 -> 1, SiLU) whose last layer starts at zero, so a new term
changes no reward: the model starts as the reward model of Stiennon et al. and learns how
much to trust its own surprise. The normalization of plus/reward_head.py applies to the
whole sum. Everything stays differentiable: the Bradley-Terry loss trains the backbone
through g as well, so it also shapes the model's next-token predictions, much as direct
preference optimization (Rafailov et al. 2023) turns a policy's log-likelihoods into an
implicit reward; the trainer's language-model loss (Cheng et al. 2023, `--lm_loss_coeff`)
keeps the LM head that g reads a language model.

Scoring with the term needs to know which tokens are the response's: `response_tokens` =
(at [M, 2], ids [M], owner [M]), the (row, column) whose output predicts each response
token, the token, and which of the rewards it belongs to (`plus.data.response_tokens`
builds them from SFT-style labels, `plus.data.collate_shared_prompts` for packed rows).

How the rest of the pipeline accounts for the term:

* The critic (plus/value_head.py) starts from the reward model with one head at every
  position, which can hold w . h_EOS + b but not a sum over the tokens. In place of the
  term it takes the term's mean over the reference summaries, s, measured when the reward
  is normalized (`SurpriseRewardModel.set_normalization`) and kept with the normalization
  statistics in config.json: its bias is gain * (b + s) + bias. On the references the
  critic's value at the EOS then averages what the reward averages, 0; on one summary it
  is off by that summary's term minus s, which the first value updates learn.
* PPO (plus/ppo.py) receives the term token by token: `token_scorer` returns, beside
  each response's normalized reward, gain * g_t for each of its tokens, which PPO pays at
  token t, and the rest of the reward at the EOS. The total is the same; the part that
  judges a token arrives at that token.
* Checkpoints have "token_surprise": true in config.json's "reward" section and the
  term's weights under `surprise.mlp.*`; `load_reward_model` restores them, and
  `apply_token_surprise` adds a new term to a reward model without one (never drops one).

What the term does on the built-in world (gold agreement, minimal pairs, PPO, and its
cost: the reward grows with length, an incentive PPO can follow) is measured in
BENCHMARKS.md, "The reward model's surprise term".
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from kernels import token_logprobs
from plus import checkpoint
from plus.data import SFTExample, collate_sft, response_tokens
from plus.gpt import GPTConfig
from plus.reward_head import RewardModel, float32_linear

SURPRISE_HIDDEN = 16  # width of the term's MLP


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


class SurpriseRewardModel(RewardModel):
    """r(x, y): the reward model of plus/reward_head.py plus the `SurpriseTerm`
    (`surprise`) summed over the response tokens."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.surprise = SurpriseTerm()

    @classmethod
    def from_reward_model(cls, model: RewardModel) -> "SurpriseRewardModel":
        """A copy of `model` (backbone, head and normalization) with a new term, which
        starts at zero and so changes no reward. `model` itself is left as it was."""
        grown = copy.deepcopy(model)
        grown.__class__ = cls  # the same modules; the subclass adds only `surprise`
        weight = model.backbone.tok_emb.weight
        grown.surprise = SurpriseTerm().to(device=weight.device, dtype=weight.dtype)
        return grown

    def raw_parts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                  segment_ids: torch.Tensor | None = None, read_at: torch.Tensor | None = None,
                  return_logprobs: bool = False):
        """(the head's raw score at the last token [B], the term g_t of each response
        token [M], log p of those tokens [M] or None without `return_logprobs`), from one
        forward pass; the arguments as in `RewardModel.raw_rewards`. Token m's term belongs
        to reward response_tokens[2][m]."""
        if response_tokens is None:
            raise ValueError("the surprise term needs response_tokens (which tokens are the response's): "
                             "see plus.data.response_tokens")
        hidden = self.hidden_states(input_ids, attention_mask, segment_ids)       # [B, T, C]
        head = self.head_scores(hidden, attention_mask, read_at)                  # [B]
        at, ids, _ = response_tokens
        logprobs, entropy = token_logprobs(self.response_logits(hidden, at), ids, return_entropy=True)  # [M], [M]
        return head, self.surprise(logprobs, entropy), (logprobs if return_logprobs else None)

    def raw_rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    response_tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                    segment_ids: torch.Tensor | None = None, read_at: torch.Tensor | None = None,
                    return_logprobs: bool = False):
        """The head's score plus each reward's sum of the term over its response tokens,
        [B] (and log p [M] with `return_logprobs`, as in `RewardModel.raw_rewards`)."""
        head, terms, logprobs = self.raw_parts(input_ids, attention_mask, response_tokens, segment_ids, read_at,
                                               return_logprobs)
        raw = head.index_add(0, response_tokens[2], terms)                        # [B]
        return (raw, logprobs) if return_logprobs else raw

    @torch.no_grad()
    def set_normalization(self, reference_head_raw: torch.Tensor, reference_surprise_raw: torch.Tensor,
                          normalize_std: bool) -> dict:
        """Normalize on the references' raw rewards, head [n] + term sum [n]
        (`RewardHead.set_normalization`), and keep the term's mean over them, the critic's
        stand-in for the term, with the statistics."""
        stats = self.head.set_normalization(reference_head_raw.double() + reference_surprise_raw.double(),
                                            normalize_std)
        stats["reference_surprise_mean_raw"] = float(reference_surprise_raw.double().mean())
        return stats

    def reference_surprise_mean(self) -> float:
        """s, the term's mean over the reference summaries (0 before normalization): what
        the critic takes in place of the term (the module docstring)."""
        return (self.head.normalization or {}).get("reference_surprise_mean_raw", 0.0)

    def checkpoint_config(self, extra_config: dict | None = None) -> dict:
        config = super().checkpoint_config(extra_config)
        config["reward"] = {"token_surprise": True, **config["reward"]}
        return config


def reward_model_class(reward_config: dict) -> type[RewardModel]:
    """The class of the reward model a checkpoint holds, from config.json's "reward"
    section."""
    return SurpriseRewardModel if reward_config.get("token_surprise") else RewardModel


def apply_token_surprise(model: RewardModel, token_surprise: bool | None, source) -> RewardModel:
    """`model` as `--token_surprise` asks (`source`, its checkpoint, names it in errors).

    None keeps what the model has. True on a model without the term adds a new one, which
    starts at zero and so changes no reward. False on a model with a trained term is an
    error: dropping it would change every reward."""
    has_term = isinstance(model, SurpriseRewardModel)
    if token_surprise is False and has_term:
        raise checkpoint.CheckpointError(
            f"{source}: this reward model was trained with its surprise term; it cannot be dropped "
            f"(start from a policy checkpoint for a reward model without one)")
    if token_surprise and not has_term:
        return SurpriseRewardModel.from_reward_model(model)
    return model


def token_scorer(model: SurpriseRewardModel, pad_id: int, batch_size: int, device):
    """PPO's score function (`plus.ppo.ScoreFn`) for a reward model with the term: for B
    (prompt, response) token lists, (the normalized rewards [B], and for each response
    the part of its reward that each of its tokens earned, gain * g_t [len(response)]).
    Each batch of `batch_size` sequences is scored right-padded, in one forward pass."""
    model.requires_grad_(False)

    @torch.no_grad()
    def score_fn(prompts: list[list[int]], responses: list[list[int]], indices: list[int]):
        was_training = model.training
        model.eval()
        scores, token_scores = [], []
        for start in range(0, len(prompts), batch_size):
            examples = [SFTExample(p, r) for p, r in zip(prompts[start:start + batch_size],
                                                         responses[start:start + batch_size])]
            batch = collate_sft(examples, pad_id)
            tokens = response_tokens(batch["labels"].to(device))                 # row-major: each response in order
            head, terms, _ = model.raw_parts(batch["input_ids"].to(device), batch["attention_mask"].to(device), tokens)
            scores.append(model.head.normalize(head.index_add(0, tokens[2], terms)))  # [b]
            token_scores += list((model.head.gain.float() * terms).split([len(e.response) for e in examples]))
        model.train(was_training)
        return torch.cat(scores).float(), token_scores

    return score_fn
