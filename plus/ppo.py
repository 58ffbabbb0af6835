"""PPO from a reward: the reinforcement-learning stage of Stiennon et al. 2020.

The policy pi_RL starts as the supervised (SFT) model and is trained to maximize, per
post x and sampled summary y (Stiennon et al. 2020, eq. 2),

    R(x, y) = r(x, y) - beta * log(pi_RL(y | x) / pi_SFT(y | x)),

with PPO (Schulman et al. 2017). r is the reward model's score; the KL term keeps the
policy near the supervised one, where the reward model's judgements can be trusted.
Each summary token is one action. The log-ratio is a sum over tokens, so the penalty is
paid per token and the score once, at the end:

    reward_t = -beta * KL_t                  for every response token t,
    reward_T = -beta * KL_T + score          on the last response token T (its EOS).

(A scorer may also say which part of the score single tokens earned; each such part is
then paid at its token and the rest at the EOS: `per_token_rewards`.)

One PPO update, in the order of the paper (and of CleanRL's ppo.py):

  1. rollout   sample one summary per prompt from pi_RL (or n, `n_samples_per_prompt`);
               record its log-probabilities, those of the frozen SFT policy, the
               critic's values and the score;
  2. rewards   the per-token rewards above; GAE turns them into advantages and returns;
  3. optimize  `ppo_epochs` passes over the rollout in minibatches: the clipped policy
               loss for pi_RL, the clipped value loss for the critic;
  4. adapt     the KL coefficient (fixed, or Ziegler et al. 2019's adaptive controller).

The implementation details that make PPO on summaries work (Huang et al. 2024, "The N+
implementation details of RLHF with PPO: the case of TL;DR summarization") are named in
comments where they happen, as "Detail: ...":

  * left-padded queries; pad distinct from EOS (the sampler, plus/generate.py);
  * dropout off in all four models;
  * sampling at temperature 0.7, and every log-probability (policy, reference, PPO
    ratio) computed at that same temperature;
  * responses truncated after the first EOS; the score read at that EOS;
  * a fixed penalty score for responses that never produce EOS;
  * the reward model normalized so reference summaries score 0 (plus/reward_head.py);
  * the critic a separate network initialized from the reward model (plus/value_head.py);
  * per-token KL penalty (k1 by default), reward clipping, optional reward whitening;
  * GAE with gamma 1, lambda 0.95; advantage whitening;
  * 4 epochs, policy and value clipping 0.2, value coefficient 0.1, AdamW eps 1e-5.

With n samples per prompt, `group_baseline` pays each response its score less the mean
score of its prompt's other samples (`plus.gae.leave_one_out`, as OpenRLHF's RLOO) before
GAE: what a critic cannot see, such as the comparison PLUS scores all of a user's z on,
cancels within the group. It is off by default; Stiennon et al. sample once per prompt.

The reward is pluggable: `train` takes any `ScoreFn` that maps a batch of (prompt,
response) token lists to scores [B] (and, optionally, their per-token parts);
`reward_model_scorer` wraps a reward model, the default. An `on_update` callback runs
after every PPO update; PLUS (Nam et al. 2025) trains its summarizer with this loop,
rewarded by a reward model that the callback updates on the same rollout between PPO
updates.

With torchrun, each process samples its own share of the prompts; policy and critic are
wrapped in DDP, so their gradients are averaged over processes; only rank 0 writes. With
`strategy="fsdp"` policy, critic and reference are sharded instead (plus/fsdp.py), and
the rollout, whose sampling loop may run a different number of steps on each process,
runs on weights gathered once for it.
Whitening (of advantages, and of rewards when on) uses each process's own rollout.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from kernels import token_logprobs
from plus import checkpoint
from plus.data import IGNORE_INDEX, RESPONSE_MAX_LEN, SFTExample
from plus.distributed import (Dist, all_reduce_sum, barrier, clip_grad_norm, full_params, gather_for_save,
                               load_optimizer_state, print0, rank_slice, wrap_model)
from plus.gae import compute_gae, leave_one_out, whiten
from plus.generate import generate, left_pad
from plus.kl_controller import AdaptiveKLController, FixedKLController, kl_penalty
from plus.metrics import explained_variance, masked_mean
from plus.ppo_loss import policy_loss, value_loss
from plus.training import (Preempted, StopOnSignal, append_metrics, autocast, check_finite, epoch_order,
                           full_precision, load_resume_state, lr_at, make_optimizer, set_lr, truncate_metrics, unwrap)

SNAPSHOTS = "checkpoints"  # <out_dir>/checkpoints/step_N: the policy along the run (for eval's over-optimization view)
CRITIC = "critic"          # <out_dir>/critic: the critic and its optimizer, for --resume


@dataclass
class PPOConfig:
    """Hyperparameters of one PPO run. The names are the command-line flags of train.py;
    the defaults are the paper's (Stiennon et al. 2020; Huang et al. 2024)."""

    max_steps: int = 20               # PPO updates; each samples one rollout batch
    rollout_batch_size: int = 64      # prompts per update, all processes together
    n_samples_per_prompt: int = 1     # responses sampled per prompt: the rollout holds rollout_batch_size x this
    group_baseline: bool = False      # each score less the mean of its prompt's other samples' (plus.gae.leave_one_out)
    train_batch_size: int = 32        # responses per optimizer step (the minibatch), all processes
    micro_train_batch_size: int = 16  # responses per forward/backward in one process (gradient accumulation)
    ppo_epochs: int = 4               # passes over each rollout batch
    learning_rate: float = 1e-5       # policy (actor) learning rate
    critic_learning_rate: float = 1e-5
    warmup_ratio: float = 0.0         # linear warmup over this fraction of the optimizer steps, then constant
    weight_decay: float = 0.0
    adam_eps: float = 1e-5            # Detail: AdamW eps 1e-5, not the default 1e-8
    max_grad_norm: float = 1.0        # each network's gradient is clipped to this norm
    temperature: float = 0.7          # Detail: sampling and every log-probability at this temperature
    generate_max_len: int = RESPONSE_MAX_LEN  # response tokens at most (Stiennon: summaries under 48 tokens)
    missing_eos_penalty: float = -3.0  # score of a response that never ended (see `apply_missing_eos_penalty`)
    reward_clip: float = 10.0         # scores are clipped to [-reward_clip, reward_clip]
    whiten_rewards: bool = False      # Detail: reward whitening off by default
    init_kl_coef: float = 0.05        # beta (Stiennon et al. 2020)
    kl_target: float | None = None   # set: adaptive beta steering the KL (nats per response) to this target
    kl_horizon: float = 10000.0       # adaptive controller horizon, in episodes (Ziegler et al. 2019)
    kl_estimator: str = "k1"          # per-token KL estimate in the reward: k1 | k2 | k3
    gamma: float = 1.0                # discount (1: a summary is one short episode)
    lambd: float = 0.95               # GAE lambda
    eps_clip: float = 0.2             # policy ratio clip
    value_clip: float = 0.2           # value clip around the rollout-time values
    vf_coef: float = 0.1              # weight of the value loss in the summed loss
    save_steps: int = 0               # every N updates: a resumable <out_dir> and the policy in checkpoints/step_N
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"               # bf16: forwards under bf16 autocast (train.py: default bf16 on CUDA)
    strategy: str = "ddp"             # ddp: replicate policy and critic; fsdp: shard them (and the reference)
    no_progress: bool = False


# A reward function: (prompt token lists, response token lists ending in EOS when the
# response ended, the prompts' dataset indices) -> scores [B]. Text-based scorers decode
# the lists with the tokenizer; the indices let a scorer look up per-example data (PLUS:
# the user's recorded choice). A scorer may instead return (scores [B], token_scores):
# token_scores[i] [len(response i)] the part of score i that each response token earned,
# which PPO pays at that token (`per_token_rewards`).
ScoreFn = Callable[[list[list[int]], list[list[int]], list[int]],
                   "torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]"]
# Runs after each PPO update: (step, rollout, logged stats) -> extra stats to log, or None.
UpdateCallback = Callable[[int, "Rollout", dict], "dict | None"]


def reward_model_scorer(reward_model, pad_id: int, batch_size: int, device) -> ScoreFn:
    """The default reward: the reward model's normalized score, read at the last token of
    each right-padded (prompt + response) sequence, i.e. at the EOS of a finished summary
    (Detail: reward read at the EOS; right padding as in reward-model training). A reward
    model with the opt-in surprise term scores with `plus.surprise.token_scorer`, which
    also gives the term's part of each score per token."""
    from plus.reward_trainer import score
    from plus.surprise import SurpriseRewardModel, token_scorer

    if isinstance(reward_model, SurpriseRewardModel):
        return token_scorer(reward_model, pad_id, batch_size, device)
    reward_model.requires_grad_(False)

    def score_fn(prompts: list[list[int]], responses: list[list[int]], indices: list[int]) -> torch.Tensor:
        examples = [SFTExample(p, r) for p, r in zip(prompts, responses)]
        return score(reward_model, examples, pad_id, batch_size, device).float()  # [B]

    return score_fn


# ----------------------------------------------------------------------------------------
# Per-token quantities of a batch of (left-padded prompt + response) sequences

def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, responses: torch.Tensor,
                      response_mask: torch.Tensor, temperature: float, return_entropy: bool = False):
    """log pi(y_t | x, y_<t) at `temperature` for each response token: [B, N], 0 where
    response_mask is 0 (and, with `return_entropy`, the entropy of pi(. | x, y_<t) [B, N]).

    input_ids [B, P + N] is the prompt (left-padded, P columns) followed by the response
    [B, N]; the hidden state at column P - 1 + t predicts response token t. `model` is a
    GPT, possibly inside DDP. The same function gives the rollout's log-probabilities, the
    reference's and those of every PPO minibatch, so the ratio is exactly 1 before the
    first update (Detail: one temperature everywhere).

    Under bf16 autocast the decoder runs in bf16, but the output head runs in float32:
    the PPO ratio, the KL penalty and the entropy compare log-probabilities across
    models and steps, and bf16 logits (8 bits of mantissa: 0.125 apart at 16) would blur
    them."""
    P = input_ids.shape[1] - responses.shape[1]
    hidden = model(input_ids, attention_mask=attention_mask)           # [B, P + N, C]
    weight = unwrap(model).lm_head.weight                              # after the forward: FSDP gathers it there
    with full_precision(hidden.device):                                # [B, N, V]: where a response token is predicted
        logits = torch.nn.functional.linear(hidden[:, P - 1:-1].float(), weight.float())
    labels = responses.masked_fill(response_mask == 0, IGNORE_INDEX)   # [B, N]
    return token_logprobs(logits, labels, temperature=temperature, return_entropy=return_entropy)


def response_values(critic, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int) -> torch.Tensor:
    """V(x, y_<t) for each response token t: [B, N], read at column P - 1 + t (the state
    just before token t is chosen). Entries past a response's end are meaningless; mask them."""
    values = critic(input_ids, attention_mask)                         # [B, P + N]
    return values[:, -n_response - 1:-1]                               # [B, N]


def fit_rollout_to_prompts(cfg: "PPOConfig", n_prompts: int, world_size: int) -> "PPOConfig":
    """The batch sizes shrunk to fit fewer prompts than one rollout batch: the rollout to
    the largest multiple of the processes that fits, the minibatch to the largest divisor
    of it (a multiple of the processes) not above its setting, the micro-batch to a
    divisor of each process's share of the minibatch."""
    from dataclasses import replace

    rollout = n_prompts // world_size * world_size
    if rollout == 0:
        raise ValueError(f"{n_prompts} prompts cannot give each of the {world_size} processes one")
    if cfg.train_batch_size < world_size:
        raise ValueError(f"--train_batch_size {cfg.train_batch_size} cannot give each of the {world_size} processes "
                         f"one response per minibatch: use at least {world_size}")
    minibatch = max(b for b in range(world_size, min(cfg.train_batch_size, rollout) + 1, world_size)
                    if rollout % b == 0)
    share = minibatch // world_size
    micro = max(m for m in range(1, min(cfg.micro_train_batch_size, share) + 1) if share % m == 0)
    return replace(cfg, rollout_batch_size=rollout, train_batch_size=minibatch, micro_train_batch_size=micro)


def apply_missing_eos_penalty(scores: torch.Tensor, ended: torch.Tensor, penalty: float) -> torch.Tensor:
    """Detail: a response that never produced EOS gets the fixed score `penalty` instead of
    the reward model's. Its last token is not an EOS, so the reward model never learned to
    score it, and without the penalty the policy can learn to ramble past the length limit.
    Choose it below the scores of ended responses: with references normalized to mean 0
    (and std 1 with --normalize_reward), -3 is a bad summary. scores, ended: [B]."""
    return torch.where(ended, scores, torch.full_like(scores, penalty))


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor,
                      kl_coef: float, token_scores: torch.Tensor | None = None) -> torch.Tensor:
    """The RLHF reward of every response token: -kl_coef * KL_t on each token, plus the
    score [B] on the last response token (the EOS); 0 on padding. kl, mask: [B, N].

    With `token_scores` [B, N], the parts of each score that single tokens earned, each
    token also gets its part and the last token only the rest of the score: the same
    total reward, each part paid where it was earned."""
    mask = response_mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask                                     # [B, N]
    if token_scores is not None:
        token_scores = token_scores.to(rewards.dtype) * mask
        rewards += token_scores
        scores = scores.to(rewards.dtype) - token_scores.sum(1)       # [B] what is left for the EOS
    last = (mask.sum(1).long() - 1).clamp(min=0)                       # [B] the response is a prefix run of 1s
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype) * mask[rows, last]
    return rewards


# ----------------------------------------------------------------------------------------
# Step 1: the rollout

@dataclass
class Rollout:
    """One process's share of a rollout batch; per-token tensors are [B, N]."""

    prompt_indices: list[int]      # which prompts (positions in the prompt list)
    input_ids: torch.Tensor        # [B, P + N] left-padded prompt, then the response (pad after EOS)
    attention_mask: torch.Tensor   # [B, P + N]
    responses: torch.Tensor        # [B, N] sampled tokens, truncated after the first EOS
    response_mask: torch.Tensor    # [B, N] 1 on response tokens up to and including EOS
    ended: torch.Tensor            # [B] bool: the response produced EOS
    logprobs: torch.Tensor         # [B, N] log pi_RL at sampling time (the PPO "old" policy)
    ref_logprobs: torch.Tensor     # [B, N] log pi_SFT of the same tokens
    values: torch.Tensor           # [B, N] the critic's values at sampling time
    scores: torch.Tensor           # [B] float32 from the score function (step 2 clips it, applies the penalty)
    entropy: float                 # mean per-token entropy of pi_RL on this rollout
    token_scores: torch.Tensor | None = None  # [B, N] the scores' per-token parts, when the scorer gives them
    rewards: torch.Tensor | None = None     # [B, N] per-token RLHF reward   } set in step 2
    advantages: torch.Tensor | None = None  # [B, N] whitened GAE advantages }
    returns: torch.Tensor | None = None     # [B, N] critic targets           }

    def response_lists(self) -> list[list[int]]:
        """Each response as a token list (ending with EOS when it ended)."""
        return response_lists(self.responses, self.response_mask)


def response_lists(responses: torch.Tensor, response_mask: torch.Tensor) -> list[list[int]]:
    """[B, N] sampled tokens and their mask -> each response as a token list."""
    return [row[:int(m.sum())].tolist() for row, m in zip(responses, response_mask)]


@torch.no_grad()
def rollout(policy, ref_policy, critic, score_fn: ScoreFn, tokenizer, prompts: list[list[int]],
            prompt_indices: list[int], cfg: PPOConfig, generator: torch.Generator) -> Rollout:
    """Sample one response per prompt and record everything PPO needs about it."""
    device = torch.device(cfg.device)
    policy.eval()
    prompt_ids, prompt_mask = left_pad(prompts, tokenizer.pad_id, device)       # Detail: left-padded queries
    with autocast(device, cfg.dtype):
        # Detail: sample at temperature 0.7; each row stops at its first EOS (the sampler
        # masks everything after it, so the response is truncated there).
        samples = generate(policy, prompt_ids, prompt_mask, cfg.generate_max_len, tokenizer.eos_id,
                           tokenizer.pad_id, temperature=cfg.temperature, generator=generator)
        input_ids = torch.cat([prompt_ids, samples.tokens], dim=1)            # [B, P + N]
        attention_mask = torch.cat([prompt_mask, samples.mask], dim=1)        # [B, P + N]
        # The sampler's log-probs equal a full forward's (tests/test_generate.py), but the
        # PPO ratio compares against *this* function's numbers, so recompute them with it.
        logprobs, entropy = response_logprobs(policy, input_ids, attention_mask, samples.tokens, samples.mask,
                                              cfg.temperature, return_entropy=True)
        # Detail: the reference log-probs at the same temperature as the policy's.
        ref_logprobs = response_logprobs(ref_policy, input_ids, attention_mask, samples.tokens, samples.mask,
                                         cfg.temperature)
        values = response_values(critic, input_ids, attention_mask, samples.tokens.shape[1])
    policy.train()
    scores = score_fn(prompts, response_lists(samples.tokens, samples.mask), prompt_indices)  # [B]
    token_scores = None
    if isinstance(scores, tuple):  # (scores, each response's per-token parts) -> [B], [B, N]
        scores, parts = scores
        token_scores = torch.zeros(samples.tokens.shape, device=device)
        for i, part in enumerate(parts):
            token_scores[i, :len(part)] = part
    return Rollout(prompt_indices, input_ids, attention_mask, samples.tokens, samples.mask, samples.ended,
                   logprobs.float(), ref_logprobs.float(), values.float(), scores.to(device).float(),
                   float(masked_mean(entropy.float(), samples.mask)), token_scores)


# ----------------------------------------------------------------------------------------
# The loop

def update_generator(seed: int, step: int, stream: int, device="cpu") -> torch.Generator:
    """The random numbers of one update: a generator seeded by (seed, update, stream)
    alone, so a run resumed at update k draws exactly what the uninterrupted run drew
    from k on. Stream 0 shuffles the minibatches; stream 1 + rank samples that
    process's responses."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_000 + step) * 1_000 + stream)


def train(
    *,
    policy,                    # GPT: the SFT model, trained in place
    ref_policy,                # GPT: the frozen SFT model
    critic,                    # Critic: from the reward model (Critic.from_reward_model)
    score_fn: ScoreFn,         # the reward of a response (reward_model_scorer by default)
    tokenizer,
    prompts: list[list[int]],  # the training prompts (token lists, already cut to prompt_max_len)
    out_dir: Path,
    config: dict,              # config.json of the saved policy (model config, provenance)
    cfg: PPOConfig,
    ctx: Dist = Dist(),
    on_update: UpdateCallback | None = None,
    stop: StopOnSignal | None = None,  # entered by the caller: SIGTERM ends the run after the current update
    resume: bool = False,      # continue from the resumable checkpoint in out_dir
) -> dict:
    """Run `cfg.max_steps` PPO updates, save the policy to `out_dir`; returns the last
    logged metrics. A SIGTERM that `stop` caught (a cluster's notice before it kills a job)
    lets the update finish, saves a resumable checkpoint and raises `Preempted`.

    The checkpoint in `out_dir` is a plain policy checkpoint (what eval.py loads) that
    also holds what `resume` needs: the policy's optimizer, the step, the KL coefficient
    and the global RNG states (trainer_state.json, optimizer.pt, rng.pt), and in
    `out_dir/critic` the critic with its optimizer. Each update's own random numbers come
    from `update_generator`, so nothing more is needed to continue bit for bit."""
    device = torch.device(cfg.device)

    # ---- derived sizes ----------------------------------------------------------------
    if len(prompts) < cfg.rollout_batch_size:
        cfg = fit_rollout_to_prompts(cfg, len(prompts), ctx.world_size)
        print0(ctx, f"[ppo] {len(prompts)} prompts are fewer than one rollout batch: training with "
                    f"--rollout_batch_size {cfg.rollout_batch_size} --train_batch_size {cfg.train_batch_size} "
                    f"--micro_train_batch_size {cfg.micro_train_batch_size}")
    config = {**config, "ppo": {f.name: getattr(cfg, f.name) for f in fields(cfg)}}  # what runs, after any shrink
    if cfg.rollout_batch_size % ctx.world_size or cfg.train_batch_size % ctx.world_size:
        raise ValueError(f"--rollout_batch_size {cfg.rollout_batch_size} and --train_batch_size "
                         f"{cfg.train_batch_size} must be multiples of the {ctx.world_size} processes")
    n_samples = cfg.n_samples_per_prompt
    if n_samples < 1 or (cfg.group_baseline and n_samples < 2):
        raise ValueError(f"--n_samples_per_prompt {n_samples}: it must be >= 1, and >= 2 for --group_baseline "
                         f"(a baseline from the prompt's other samples)")
    # Each process samples all n responses of its own prompts, so a prompt's group never spans processes.
    local_rollout = cfg.rollout_batch_size // ctx.world_size * n_samples  # responses sampled by this process
    local_minibatch = cfg.train_batch_size // ctx.world_size        # responses per optimizer step, this process
    if local_rollout % local_minibatch or local_minibatch % cfg.micro_train_batch_size:
        raise ValueError(
            f"--rollout_batch_size {cfg.rollout_batch_size} x --n_samples_per_prompt {n_samples} must be a multiple "
            f"of --train_batch_size {cfg.train_batch_size}, and that of --micro_train_batch_size "
            f"{cfg.micro_train_batch_size} x {ctx.world_size} processes")

    longest = max(len(p) for p in prompts) + cfg.generate_max_len
    if longest > policy.config.block_size:
        raise ValueError(f"a prompt plus {cfg.generate_max_len} response tokens is {longest} tokens, more than "
                         f"the model's block_size={policy.config.block_size}")
    minibatches_per_epoch = local_rollout // local_minibatch
    optimizer_steps = cfg.max_steps * cfg.ppo_epochs * minibatches_per_epoch
    warmup = max(1, int(cfg.warmup_ratio * optimizer_steps))
    steps_per_epoch = len(prompts) // cfg.rollout_batch_size

    def prompt_batch(step: int) -> list[int]:
        """The global batch of prompt indices of update `step`: a permutation per pass
        over the prompts, a function of (seed, pass)."""
        epoch, offset = divmod(step, steps_per_epoch)
        return epoch_order(len(prompts), cfg.seed, epoch)[offset * cfg.rollout_batch_size:
                                                          (offset + 1) * cfg.rollout_batch_size]

    # ---- the four models --------------------------------------------------------------
    for model in (policy, ref_policy, critic):
        _disable_dropout(model)                                      # Detail: dropout off everywhere
    policy.to(device).train()
    critic.to(device).train()
    stage = config.get("stage", "ppo")
    start = 0
    if resume:  # the weights before wrapping (FSDP shards them); the optimizers' states after
        state, policy_opt_state, rng = load_resume_state(out_dir, stage)
        critic_state, critic_opt_state, _ = checkpoint.load_trainer_state(out_dir / CRITIC)
        if critic_state.get("step") != state["step"]:
            raise checkpoint.CheckpointError(f"{out_dir / CRITIC}: the critic is from update {critic_state.get('step')}, "
                                             f"the policy from update {state['step']}; the checkpoint cannot resume")
        checkpoint.load_into(policy, checkpoint.load_state_dict(out_dir, device))
        checkpoint.load_into(critic, checkpoint.load_state_dict(out_dir / CRITIC, device))
        checkpoint.set_rng_state(rng)
        start = state["step"]
        print0(ctx, f"[ppo] resuming {out_dir} from update {start} of {cfg.max_steps}")
    ref_policy.to(device).eval().requires_grad_(False)
    if not critic.config.tie_embeddings:
        # The critic never calls its LM head; a parameter without a gradient would stall DDP.
        critic.backbone.lm_head.weight.requires_grad_(False)
    n_params = policy.num_params()
    bf16 = cfg.dtype == "bf16"
    # DDP or FSDP (cfg.strategy). FSDP swaps the parameters for shards, so the optimizers
    # are built after wrapping. The frozen reference has no gradients for DDP to average;
    # FSDP shards it too, to save its memory.
    param_dtype = torch.bfloat16 if bf16 else None
    ddp_policy = wrap_model(policy, ctx, cfg.strategy, param_dtype)
    ddp_critic = wrap_model(critic, ctx, cfg.strategy, param_dtype)
    sharded_ref = wrap_model(ref_policy, ctx, "fsdp", param_dtype) if cfg.strategy == "fsdp" else ref_policy
    # Two networks, two optimizers (Stiennon et al.: no parameters shared).
    policy_optimizer = make_optimizer(policy, cfg.learning_rate, cfg.weight_decay, eps=cfg.adam_eps)
    critic_optimizer = make_optimizer(critic, cfg.critic_learning_rate, cfg.weight_decay, eps=cfg.adam_eps)
    kl_controller = (AdaptiveKLController(cfg.init_kl_coef, cfg.kl_target, cfg.kl_horizon)
                     if cfg.kl_target is not None else FixedKLController(cfg.init_kl_coef))
    if resume:
        load_optimizer_state(ddp_policy, policy_optimizer, policy_opt_state)
        load_optimizer_state(ddp_critic, critic_optimizer, critic_opt_state)
        kl_controller.value = state["kl_coef"]

    metrics_path = out_dir / checkpoint.METRICS
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(metrics_path, start)  # forget what was logged after the checkpoint
    saved = {"last": out_dir if resume else None}  # the newest checkpoint, named by the NaN guard

    def save(step: int, snapshot: bool = False):
        """The resumable checkpoint in <out_dir> (with `snapshot`, the policy in
        checkpoints/step_N too). The critic is written first, then the policy's directory
        swaps in, keeping critic/ and the snapshots; both record the step, so a crash
        between the two is found on resume."""
        weights, policy_opt = gather_for_save(ddp_policy, policy_optimizer)  # FSDP: every process takes part
        critic_weights, critic_opt = gather_for_save(ddp_critic, critic_optimizer)
        if ctx.is_main:
            snapshots = out_dir / SNAPSHOTS
            if saved["last"] is None and snapshots.exists():
                shutil.rmtree(snapshots)  # an earlier run's snapshots: not this run's curve
            if snapshot:
                checkpoint.save_checkpoint(snapshots / f"step_{step}", policy, {**config, "step": step},
                                           tokenizer=tokenizer, state_dict=weights)
            trainer_state = {"stage": stage, "step": step, "max_steps": cfg.max_steps, "seed": cfg.seed,
                             "kl_coef": kl_controller.value}
            checkpoint.save_checkpoint(out_dir / CRITIC, critic, {"stage": stage, "model": critic.config.to_dict()},
                                       trainer_state=trainer_state, optimizer=critic_opt, state_dict=critic_weights)
            checkpoint.save_checkpoint(out_dir, policy, {**config, "step": step}, tokenizer=tokenizer,
                                       state_dict=weights, trainer_state=trainer_state, optimizer=policy_opt,
                                       metrics_file=metrics_path, keep=(SNAPSHOTS, CRITIC))
        saved["last"] = out_dir
        barrier(ctx)

    def guard(step: int, **quantities: float) -> None:
        check_finite(ctx, "ppo", step, saved["last"], **quantities)

    rollouts = (f"{cfg.rollout_batch_size} rollouts" if n_samples == 1 else
                f"{cfg.rollout_batch_size} prompts x {n_samples} samples" + (" (group baseline)" if cfg.group_baseline
                                                                             else ""))
    print0(ctx, f"[ppo] {len(prompts)} prompts, {cfg.max_steps} updates of {rollouts}, "
                f"{cfg.ppo_epochs} epochs x {minibatches_per_epoch} minibatches of {cfg.train_batch_size} "
                f"({cfg.micro_train_batch_size} x {local_minibatch // cfg.micro_train_batch_size} accumulation x "
                f"{ctx.world_size} processes{'' if ctx.world_size == 1 else ', ' + cfg.strategy}), "
                f"{n_params / 1e6:.2f}M parameters per model")
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="ppo",
               disable=not ctx.is_main or cfg.no_progress, dynamic_ncols=True)
    last = {}
    optimizer_step = start * cfg.ppo_epochs * minibatches_per_epoch
    for step in bar:
        t0 = time.perf_counter()
        generator = update_generator(cfg.seed, step, 1 + ctx.rank, device)  # each process its own samples
        shuffle = update_generator(cfg.seed, step, 0)

        # ---- 1. rollout: sample, then score with the reward and both policies ------------
        indices = [i for i in prompt_batch(step)[rank_slice(ctx, cfg.rollout_batch_size)] for _ in range(n_samples)]
        with full_params(ddp_policy), full_params(sharded_ref), full_params(ddp_critic):
            batch = rollout(policy, ref_policy, critic, score_fn, tokenizer, [prompts[i] for i in indices], indices,
                            cfg, generator)
        guard(step + 1, score=float(batch.scores.sum()))
        t_rollout = time.perf_counter() - t0
        mask = batch.response_mask

        # ---- 2. rewards, advantages, returns --------------------------------------------
        # Clip the scorer's output (a guard against outliers), then give unfinished
        # responses the fixed penalty, which is a choice of the user, not a score to clip.
        batch.scores = batch.scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        batch.scores = apply_missing_eos_penalty(batch.scores, batch.ended, cfg.missing_eos_penalty)
        kl = kl_penalty(batch.logprobs, batch.ref_logprobs, cfg.kl_estimator) * mask  # [B, N]
        # Per-token parts of a score go to their tokens, except in a response that never
        # ended: the penalty replaced its whole score.
        token_scores = None if batch.token_scores is None else batch.token_scores * batch.ended[:, None]
        # With the group baseline the EOS is paid what the score beat its prompt's other samples by.
        paid = leave_one_out(batch.scores, n_samples) if cfg.group_baseline else batch.scores
        batch.rewards = per_token_rewards(paid, kl, mask, kl_controller.value, token_scores)
        guard(step + 1, reward=float(batch.rewards.sum()))
        gae_rewards = whiten(batch.rewards, mask, shift_mean=False) if cfg.whiten_rewards else batch.rewards
        advantages, batch.returns = compute_gae(gae_rewards, batch.values, mask, cfg.gamma, cfg.lambd)
        batch.advantages = whiten(advantages, mask)                   # Detail: advantage whitening

        # ---- 3. optimize: ppo_epochs x minibatches of clipped policy and value updates ---
        sums = defaultdict(float)  # token-weighted sums of the losses and their statistics
        for epoch in range(cfg.ppo_epochs):
            order = torch.randperm(local_rollout, generator=shuffle)
            for start in range(0, local_rollout, local_minibatch):
                rows = order[start:start + local_minibatch]
                # One schedule scales both rates: warmup, then constant (no decay: a short
                # run needs its last updates as much as its first).
                schedule = lr_at(optimizer_step, optimizer_steps, 1.0, warmup, min_lr_ratio=1.0)
                set_lr(policy_optimizer, cfg.learning_rate * schedule)
                set_lr(critic_optimizer, cfg.critic_learning_rate * schedule)
                # The losses are token means over the *whole* minibatch (all processes), so
                # each micro-batch's mean is weighted by its share of the tokens.
                n_tokens = float(all_reduce_sum(ctx, mask[rows].sum().double()))
                micro = rows.split(cfg.micro_train_batch_size)
                minibatch = defaultdict(float)
                for i, mb in enumerate(micro):
                    with ExitStack() as stack:
                        if ctx.enabled and i < len(micro) - 1:  # all-reduce gradients on the last micro-step only
                            stack.enter_context(ddp_policy.no_sync())
                            stack.enter_context(ddp_critic.no_sync())
                        with autocast(device, cfg.dtype):  # the forwards and the losses; backward outside
                            pg_loss, vf_loss, stats = minibatch_losses(ddp_policy, ddp_critic, batch, mb, cfg)
                        tokens = float(mask[mb].sum())
                        weight = tokens / n_tokens * ctx.world_size  # DDP averages over processes
                        ((pg_loss + cfg.vf_coef * vf_loss) * weight).backward()
                    for name, value in stats.items():
                        minibatch[name] += value * tokens / n_tokens  # summed over processes below
                policy_norm = clip_grad_norm(ddp_policy, cfg.max_grad_norm)
                critic_norm = clip_grad_norm(ddp_critic, cfg.max_grad_norm)
                guard(step + 1, policy_loss=minibatch["policy_loss"], value_loss=minibatch["value_loss"],
                             policy_grad_norm=policy_norm, critic_grad_norm=critic_norm)
                policy_optimizer.step()
                critic_optimizer.step()
                policy_optimizer.zero_grad(set_to_none=True)
                critic_optimizer.zero_grad(set_to_none=True)
                optimizer_step += 1
                for name, value in minibatch.items():
                    sums[name] += value
                sums["policy_grad_norm"] += policy_norm / ctx.world_size  # the same on every process
                sums["critic_grad_norm"] += critic_norm / ctx.world_size

        # ---- 4. adapt the KL coefficient; log --------------------------------------------
        n_minibatches = cfg.ppo_epochs * minibatches_per_epoch
        update = {name: value / n_minibatches for name, value in _all_reduce(ctx, sums).items()}  # means
        episodes = _all_reduce(ctx, {  # sums over the responses of all processes
            "kl": float(kl.sum()), "rlhf_reward": float(batch.rewards.sum()), "score": float(batch.scores.sum()),
            "eos_rate": float(batch.ended.sum()), "response_length": float(mask.sum()),
            "explained_variance": explained_variance(batch.values, batch.returns, mask) * local_rollout,
            "entropy": batch.entropy * local_rollout, "tokens": float(batch.attention_mask.sum())})
        n = cfg.rollout_batch_size * n_samples
        kl_coef = kl_controller.value                             # the coefficient this rollout's rewards used
        kl_controller.update(episodes["kl"] / n, n)
        dt = time.perf_counter() - t0
        last = {"step": step + 1, "loss": update["policy_loss"] + cfg.vf_coef * update["value_loss"], **update,
                **{name: value / n for name, value in episodes.items() if name != "tokens"},
                "kl_coef": kl_coef, "lr": cfg.learning_rate * schedule,
                "tokens_per_s": episodes["tokens"] / dt, "rollout_s": t_rollout, "step_s": dt}
        if on_update is not None:
            last.update(on_update(step + 1, batch, last) or {})
        if ctx.is_main:
            append_metrics(metrics_path, last)
            bar.set_postfix(score=f"{last['score']:.2f}", kl=f"{last['kl']:.2f}", eos=f"{last['eos_rate']:.2f}",
                            clip=f"{last['clipfrac']:.2f}", tok_s=f"{last['tokens_per_s']:.0f}")
        periodic = bool(cfg.save_steps) and (step + 1) % cfg.save_steps == 0 and step + 1 < cfg.max_steps
        if periodic:
            save(step + 1, snapshot=True)
        if stop is not None and step + 1 < cfg.max_steps and stop.requested(ctx):
            bar.close()
            if not periodic:
                save(step + 1)
            raise Preempted(f"[ppo] stopped by SIGTERM after update {step + 1} of {cfg.max_steps}; saved to "
                            f"{out_dir}: continue with the same flags and --stage {stage} --resume")
    bar.close()
    save(cfg.max_steps)
    return last


def minibatch_losses(policy, critic, batch: Rollout, rows: torch.Tensor, cfg: PPOConfig):
    """PPO's clipped policy loss and clipped value loss on the responses `rows` of a
    rollout (token means over those rows), and their statistics as floats."""
    mask = batch.response_mask[rows]
    input_ids, attention_mask = batch.input_ids[rows], batch.attention_mask[rows]
    logprobs = response_logprobs(policy, input_ids, attention_mask, batch.responses[rows], mask, cfg.temperature)
    pg_loss, pg_stats = policy_loss(logprobs, batch.logprobs[rows], batch.advantages[rows], mask, cfg.eps_clip)
    values = response_values(critic, input_ids, attention_mask, mask.shape[1])
    vf_loss, vf_stats = value_loss(values, batch.values[rows], batch.returns[rows], mask, cfg.value_clip)
    stats = {"policy_loss": float(pg_loss.detach()), "value_loss": float(vf_loss.detach()), **pg_stats, **vf_stats}
    return pg_loss, vf_loss, stats


def _all_reduce(ctx: Dist, sums: dict[str, float]) -> dict[str, float]:
    """Sum each named number over all processes."""
    totals = all_reduce_sum(ctx, torch.tensor(list(sums.values()), dtype=torch.float64)).tolist()
    return dict(zip(sums, totals))


def _disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off (Huang et al. 2024): with it, the log-probs of the rollout and of the
    update would differ by noise, and the PPO ratio would not start at 1."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.config.dropout = 0.0
