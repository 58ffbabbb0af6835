"""The critic: the decoder with a per-token value head, started from the reward model.

PPO (Schulman et al. 2017) needs a value V(s_t) for every response token t: the expected
sum of future rewards from that point, used by GAE (plus/gae.py) to turn one reward at
the end of a summary into an advantage at every token. The critic is the same decoder
shape as the policy with a scalar head applied at *every* position: [B, T, C] -> [B, T].

Stiennon et al. 2020 (§3.4) keep the value function a separate network (no parameters
shared with the policy, so value updates cannot disturb the policy before PPO starts) and
initialize it from the reward model. Why the reward model: in the summary task the only
non-KL reward arrives at the EOS, so the right value there is the reward model's score,
and the reward model's features already encode what makes a summary good. A critic that
starts from it is right at the EOS from step one instead of spending the first PPO
updates fitting values from scratch while the advantages it feeds the policy are noise
(Huang et al. 2024 list this among the details that make PPO on TL;DR work).

`Critic.from_reward_model` copies the backbone and folds the reward head *including its
normalization* into the value head: the value head computes w'.h + b' with
w' = gain * w and b' = gain * b + bias, which is `gain * (w.h + b) + bias`, the
normalized reward that PPO actually receives. So at initialization the critic's value at
the EOS equals the reward model's reward (exactly so before normalization, when gain = 1
and bias = 0). The opt-in surprise term adds a sum over the response tokens that no
per-position head can hold; plus/surprise.py says what the critic takes in its place.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from plus.gpt import GPT, GPTConfig
from plus.reward_head import RewardModel, float32_linear, scalar_head
from plus.surprise import SurpriseRewardModel


class ValueHead(nn.Module):
    """Linear(n_embd, 1) applied at every position (same init as the reward head)."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.linear = scalar_head(n_embd)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, T], computed in float32 whatever the model dtype and autocast say."""
        return float32_linear(hidden, self.linear).squeeze(-1)


class Critic(nn.Module):
    """V(x, y_<=t): the decoder (`backbone`) and a `ValueHead` read at every token."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.dropout != 0.0:
            raise ValueError(f"a critic needs dropout=0 (got {config.dropout}): values must be deterministic")
        self.config = config
        self.backbone = GPT(config)
        self.head = ValueHead(config.n_embd)

    @classmethod
    @torch.no_grad()
    def from_reward_model(cls, reward_model: RewardModel) -> "Critic":
        """A critic initialized from `reward_model` (see the module docstring)."""
        critic = cls(reward_model.config)
        critic.backbone.load_state_dict(reward_model.backbone.state_dict())
        rm_head = reward_model.head
        bias = rm_head.linear.bias
        if isinstance(reward_model, SurpriseRewardModel):  # the term's reference mean in its place
            bias = bias + reward_model.reference_surprise_mean()
        critic.head.linear.weight.copy_(rm_head.gain * rm_head.linear.weight)
        critic.head.linear.bias.copy_(rm_head.gain * bias + rm_head.bias)
        weight = reward_model.backbone.tok_emb.weight
        return critic.to(device=weight.device, dtype=weight.dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values [B, T] at every position (those at padding are meaningless; mask them)."""
        hidden = self.backbone(input_ids, attention_mask=attention_mask)  # [B, T, C]
        return self.head(hidden)                                          # [B, T]
