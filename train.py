"""Train one stage of the pipeline, or all of them in order.

    python train.py --stage all                       # the demo on the built-in world
    python train.py --stage sft --dataset my_tldr.jsonl --init_from runs/demo/pretrain
    torchrun --nproc_per_node=2 train.py --stage sft --max_steps 20
    torchrun --nproc_per_node=2 train.py --stage sft --strategy fsdp   # sharded (plus/fsdp.py)
    python train.py --stage rm --dataset comparisons.jsonl --eval_dataset a.jsonl b.jsonl
    python train.py --stage plus --population p2 --method all   # PLUS and its baselines (plus/plus_trainer.py)

Stage X writes <out_dir>/X/ and, unless --init_from says otherwise, starts from the
stage before it under the same --out_dir (ARCHITECTURE.md). Flags follow OpenRLHF's names.
A flag left unset takes the stage's own default (see STAGE_DEFAULTS), so one command
line can drive `--stage all`.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from plus import checkpoint, data, preferences
from plus.cli import ArgumentParser, print_error
from plus.distributed import STRATEGIES, Dist, init, print0, teardown
from plus.preference_flags import PREFERENCE_FLAGS, add_preference_args, preference_options
from plus.training import DTYPES, Preempted, StopOnSignal, resolve_dtype
from plus.world import TRAIN_REFERENCES_PER_POST, TRAIN_SUMMARIES_PER_POST, World

STAGES = ("pretrain", "sft", "rm", "ppo")  # in pipeline order; later stages join this list
OTHER_STAGES = ("plus",)  # run on their own, never by --stage all

# Per-stage defaults: the demo, sized for a 2-core CPU. Of the 6 minutes pretraining and SFT
# share, pretraining is a short warm start and SFT gets the rest, because SFT steps are what
# teach the small model to copy a value from the post (BENCHMARKS.md, "Why the demo model
# is Llama-style").
# SFT's batch counts prompts (on a file, usually one example each); on the built-in world
# see sft_world_defaults.
STAGE_DEFAULTS = {
    "pretrain": dict(learning_rate=3e-3, max_steps=50, train_batch_size=32, micro_train_batch_size=16,
                     warmup_ratio=0.05, max_len=256, eval_steps=100),
    "sft": dict(learning_rate=3e-3, max_steps=950, train_batch_size=32, micro_train_batch_size=16,
                warmup_ratio=0.05, max_len=256, eval_steps=50),
    # No max_steps: one epoch (Stiennon et al. 2020) over a file, or over RM_WORLD_PAIRS.
    # The LM loss on the chosen responses is at Cheng et al.'s default, 0.1, which also
    # keeps the LM head that --token_surprise's term reads a language model.
    "rm": dict(learning_rate=3e-4, train_batch_size=32, micro_train_batch_size=32, warmup_ratio=0.05,
               eval_steps=200, lm_loss_coeff=0.1),
    # PPO: the paper's hyperparameters live in plus.ppo.PPOConfig; the demo's differ because a
    # 1M-parameter model takes a larger rate, 2 epochs per rollout leave time for more updates,
    # and 24 updates stop about where the gold score stops following the proxy reward
    # (BENCHMARKS.md, "How long PPO runs"). save_steps keeps the policies along the run for
    # eval.py's over-optimization view.
    "ppo": dict(learning_rate=1e-4, critic_learning_rate=1e-4, max_steps=24, rollout_batch_size=64,
                train_batch_size=32, micro_train_batch_size=16, ppo_epochs=2, warmup_ratio=0.0, save_steps=4),
    # PLUS (Nam et al. 2025): the summarizer's KL coefficient is the paper's 0.01 (k1); the
    # reward model learns at the critic's rate, larger than PPO's critic because its head is
    # new; 120 updates of 32 users (the reward model's pass over their 32 pairs each) are
    # about four passes over the 1,000 pairs of PLUS_WORLD_USERS.
    "plus": dict(learning_rate=1e-4, critic_learning_rate=3e-4, max_steps=120, rollout_batch_size=32,
                 train_batch_size=16, micro_train_batch_size=16, ppo_epochs=2, warmup_ratio=0.0,
                 init_kl_coef=0.01, kl_estimator="k1"),
}
# The demo's reward model carries the surprise term (plus/surprise.py): on the built-in
# world its PPO policy won more often against the references and the SFT policy in two
# seeds, with longer summaries (BENCHMARKS.md, "The surprise term, two seeds"). A file's
# reward model is the paper's plain one: the term is measured on the world only.
WORLD_TOKEN_SURPRISE = True
# PLUS on the built-in world: seen users (each gives two training pairs) and new users.
PLUS_WORLD_USERS = 500
PLUS_NEW_USERS = 64
# The summarizer's warm start on the corpus's self-descriptions (plus_trainer.warm_start),
# at SFT's learning rate.
PLUS_WARM_START = dict(documents=800, steps=300, batch_size=16, learning_rate=3e-3)
# SFT on the built-in world packs each post with its several TL;DRs in one row, so the post
# is computed once for all of them and the time saved buys more steps of 32 summaries, as
# on a file (BENCHMARKS.md, "The demo policy: a tied head, and four references per post").
SFT_WORLD_REFERENCES_PER_POST = TRAIN_REFERENCES_PER_POST  # what --export writes
SFT_WORLD_SUMMARIES_PER_STEP = 32
SFT_WORLD_STEPS = 1700


def sft_world_defaults(references_per_post: int) -> dict:
    """The world's SFT batch in posts: 32 summaries a step whatever the references per post
    (k = 4: 8 posts, micro-batches of 8; k = 1: 32 posts, micro-batches of 16 as on a file)."""
    k = references_per_post
    batch = max(1, SFT_WORLD_SUMMARIES_PER_STEP // k)
    return dict(train_batch_size=batch, micro_train_batch_size=max(1, SFT_WORLD_SUMMARIES_PER_STEP // max(k, 2)),
                max_steps=SFT_WORLD_STEPS)


# Comparisons the built-in world generates for --stage rm unless --max_samples says otherwise,
# and how many summaries of each post they compare (all pairs among them, each labeled
# separately); a post is computed once for all of its comparisons, so several per post are
# cheap (BENCHMARKS.md, "Reward-model training: each prompt computed once").
RM_WORLD_PAIRS = 48000
RM_WORLD_SUMMARIES_PER_POST = TRAIN_SUMMARIES_PER_POST  # what --export writes

# The demo model is Llama-style (RoPE, RMSNorm, SwiGLU) because rotary positions are what
# let a model this small learn to copy from the post in a few CPU minutes (BENCHMARKS.md,
# "Why the demo model is Llama-style"), and its output head is tied to the token embedding
# (as in Qwen2's smallest models) so that copying a number is reading back the embedding
# attention found (BENCHMARKS.md, "The demo policy: a tied head, and four references per
# post").
MODEL_DEFAULTS = dict(model_family="llama", n_layer=4, n_head=4, n_embd=128, vocab_size=2048, tie_embeddings=True)


def mlp_width(family: str, n_embd: int) -> int | None:
    """The default MLP width: GPT-2's 4d (None: GPTConfig's default), or for SwiGLU, which
    has three matrices, 8/3 d rounded up to a multiple of 32 (as Llama sizes it), so both
    MLPs cost about the same."""
    return None if family == "gpt2" else -(-8 * n_embd // 3 // 32) * 32


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--stage", choices=STAGES + OTHER_STAGES + ("all",), required=True)
    p.add_argument("--out_dir", default="runs/demo", help="stage X writes <out_dir>/X")
    p.add_argument("--init_from", "--pretrain", dest="init_from", default=None,
                   help="checkpoint directory to start from (default: the previous stage under --out_dir)")
    p.add_argument("--dataset", default="synthetic", help="'synthetic' (the built-in world) or a .jsonl/.json/.csv file")
    p.add_argument("--eval_dataset", nargs="+", default=None,
                   help="held-out files (default: the world's valid split; sft on a file: a tenth of its prompts, "
                        "held out of training)")
    p.add_argument("--input_key", default=None,
                   help="prompt field; default: the Stiennon query from subreddit/title/post, else 'prompt' "
                        "(pretrain: the text field, default 'text')")
    p.add_argument("--output_key", default="summary", help="SFT target field")
    p.add_argument("--on_bad_record", choices=("error", "skip"), default="error")
    add_preference_args(p)
    p.add_argument("--max_samples", type=int, default=None,
                   help="rm: at most this many training pairs; the built-in world generates this many "
                        f"(default {RM_WORLD_PAIRS}; a file is read whole)")
    p.add_argument("--summaries_per_post", type=int, default=None,
                   help="rm on the built-in world: compare all pairs among this many summaries of each post "
                        f"(default {RM_WORLD_SUMMARIES_PER_POST}; 2: one comparison per post)")
    p.add_argument("--references_per_post", type=int, default=None,
                   help="sft on the built-in world: train on this many TL;DRs of each post, by different writers "
                        f"(default {SFT_WORLD_REFERENCES_PER_POST}; --train_batch_size counts posts)")
    p.add_argument("--lm_loss_coeff", type=float, default=None,
                   help="rm: weight of the language-model loss on the chosen responses (default 0.1, as Cheng et al. "
                        "2023; 0 turns it off)")
    p.add_argument("--token_surprise", action=argparse.BooleanOptionalAction, default=None,
                   help="rm: add the surprise term to the reward, a learned function of each response token's "
                        "log-probability and entropy under the model's own LM head (plus/surprise.py). Default: on "
                        "for a new reward model on the built-in world, where it is measured to make a better PPO "
                        "policy; a file's new reward model is the plain one of Stiennon et al.; a reward model "
                        "trained further keeps what it has")
    p.add_argument("--normalize_reward", action="store_true",
                   help="rm: also scale rewards so the reference summaries have std 1 (they always get mean 0)")
    # sizes and schedule (None -> the stage default)
    p.add_argument("--train_batch_size", type=int, default=None, help="global batch (all processes, all micro-steps)")
    p.add_argument("--micro_train_batch_size", type=int, default=None, help="per process per forward")
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--warmup_ratio", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--max_epochs", type=int, default=1)
    p.add_argument("--max_steps", type=int, default=None, help="optimizer steps (default: the stage's demo length; rm: --max_epochs passes)")
    p.add_argument("--max_len", type=int, default=None, help="pretrain block length; SFT prompt+response cap")
    p.add_argument("--prompt_max_len", type=int, default=None,
                   help="prompt tokens at most (default: sft and rm on a file, its longest prompt within the model's "
                        f"block_size, see README; else {data.PROMPT_MAX_LEN})")
    p.add_argument("--generate_max_len", type=int, default=None,
                   help="response tokens at most, EOS included (default: sft and rm on a file, its longest response "
                        f"within the model's block_size; else {data.RESPONSE_MAX_LEN}, the TL;DR setting)")
    p.add_argument("--n_eval", type=int, default=128, help="held-out examples for the periodic eval loss")
    p.add_argument("--eval_steps", type=int, default=None, help="eval loss every N steps (0: never)")
    # the model (pretrain stage only: later stages read it from the checkpoint)
    p.add_argument("--model_family", choices=("gpt2", "llama"), default=None, help="default: llama")
    p.add_argument("--n_layer", type=int, default=None)
    p.add_argument("--n_head", type=int, default=None)
    p.add_argument("--n_kv_head", type=int, default=None)
    p.add_argument("--n_embd", type=int, default=None)
    p.add_argument("--intermediate_size", type=int, default=None, help="MLP width (llama: SwiGLU's hidden size)")
    p.add_argument("--vocab_size", type=int, default=None, help="BPE vocabulary trained for the world")
    p.add_argument("--tie_embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="share the token embedding with the output head (default: yes; --no-tie_embeddings "
                        "for a separate head, as in the larger Llama/Qwen models)")
    p.add_argument("--tokenizer", default=None, help="a tokenizer.json to use instead of training one")
    add_ppo_args(p)
    add_plus_args(p)
    # bookkeeping
    p.add_argument("--save_steps", type=int, default=None,
                   help="also save every N steps (for --resume; ppo: the policy snapshots, default 4)")
    p.add_argument("--resume", action="store_true", help="continue the stage from its saved checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="bf16: the forward pass under bf16 autocast (on --device, CPU or CUDA), float32 master "
                        "weights; default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--strategy", choices=STRATEGIES, default="ddp",
                   help="ddp: every process holds the whole model; fsdp: parameters, gradients and optimizer "
                        "state are sharded over the processes (plus/fsdp.py)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_stage_defaults_to_help(p)
    return p


def add_stage_defaults_to_help(p: argparse.ArgumentParser) -> None:
    """Each flag that STAGE_DEFAULTS sets per stage says, in --help, what each stage takes."""
    world_sft = sft_world_defaults(SFT_WORLD_REFERENCES_PER_POST)
    for action in p._actions:
        per_stage = [f"{stage} {values[action.dest]}" for stage, values in STAGE_DEFAULTS.items()
                     if action.dest in values]
        if action.dest in world_sft:
            per_stage.append(f"sft on the built-in world {world_sft[action.dest]}")
        if per_stage:
            action.help = f"{action.help}; " if action.help else ""
            action.help += f"default by stage: {', '.join(per_stage)}"


PPO_FLAGS = ("reward_pretrain", "rollout_batch_size", "ppo_epochs", "critic_learning_rate", "temperature",
             "missing_eos_penalty", "reward_clip", "whiten_rewards", "init_kl_coef", "kl_target", "kl_horizon",
             "kl_estimator", "gamma", "lambd", "eps_clip", "value_clip", "vf_coef")


def add_ppo_args(p: argparse.ArgumentParser) -> None:
    """--stage ppo (defaults: plus.ppo.PPOConfig, the paper's values, unless STAGE_DEFAULTS says otherwise)."""
    p.add_argument("--reward_pretrain", default=None, help="ppo: the reward model (default <out_dir>/rm); "
                                                           "it also initializes the critic")
    p.add_argument("--rollout_batch_size", type=int, default=None, help="ppo: prompts per update, all processes")
    p.add_argument("--ppo_epochs", type=int, default=None, help="ppo: passes over each rollout batch")
    p.add_argument("--critic_learning_rate", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None, help="ppo: sampling temperature (0.7)")
    p.add_argument("--missing_eos_penalty", type=float, default=None,
                   help="ppo: score of a response without EOS (-3: references score 0, std ~1)")
    p.add_argument("--reward_clip", type=float, default=None, help="ppo: clip scores to [-x, x] (10)")
    p.add_argument("--whiten_rewards", action="store_true", help="ppo: whiten the per-token rewards")
    p.add_argument("--init_kl_coef", type=float, default=None, help="ppo: KL coefficient beta (0.05)")
    p.add_argument("--kl_target", type=float, default=None, help="ppo: adaptive beta towards this KL (nats)")
    p.add_argument("--kl_horizon", type=float, default=None, help="ppo: adaptive controller horizon (episodes)")
    p.add_argument("--kl_estimator", choices=("k1", "k2", "k3"), default=None, help="ppo: per-token KL (k1)")
    p.add_argument("--gamma", type=float, default=None)
    p.add_argument("--lambd", type=float, default=None, help="ppo: GAE lambda (0.95)")
    p.add_argument("--eps_clip", type=float, default=None, help="ppo: policy ratio clip (0.2)")
    p.add_argument("--value_clip", type=float, default=None, help="ppo: value clip (0.2)")
    p.add_argument("--vf_coef", type=float, default=None, help="ppo: value loss weight (0.1)")


PLUS_FLAGS = ("population", "method", "n_users", "warm_start_steps")


def add_plus_args(p: argparse.ArgumentParser) -> None:
    """--stage plus (plus/plus_trainer.py); PPO's flags size the summarizer's updates."""
    from plus.plus_trainer import METHODS
    from plus.world import POPULATIONS

    p.add_argument("--population", choices=tuple(p for p in POPULATIONS if p != "ood"), default=None,
                   help="plus: the built-in world's users (default p2); ood users are for evaluation")
    p.add_argument("--method", choices=METHODS + ("all",), default=None,
                   help="plus: what the reward model reads about the user (default plus; all: every method in turn)")
    p.add_argument("--n_users", type=int, default=None,
                   help=f"plus: seen users of the built-in world (default {PLUS_WORLD_USERS}; two pairs each)")
    p.add_argument("--warm_start_steps", type=int, default=None,
                   help=f"plus: minibatches of {PLUS_WARM_START['batch_size']} self-description documents the "
                        f"summarizer learns from before RL (default {PLUS_WARM_START['steps']}; 0: none)")


def check_ppo_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    given = [f for f in PPO_FLAGS if getattr(args, f) not in (None, False)]
    if args.stage not in ("ppo", "plus", "all") and given:
        parser.error(f"--{given[0]} only applies to --stage ppo (and plus)")
    plus_given = [f for f in PLUS_FLAGS if getattr(args, f) is not None]
    if args.stage != "plus" and plus_given:
        parser.error(f"--{plus_given[0]} only applies to --stage plus")
    if args.stage == "plus" and (args.resume or args.reward_pretrain):
        parser.error(f"--{'resume' if args.resume else 'reward_pretrain'} does not apply to --stage plus "
                     "(the reward model starts from --init_from, as the summarizer)")
    if args.n_users is not None and args.n_users < 1:
        parser.error("--n_users must be >= 1")
    if args.warm_start_steps is not None and args.warm_start_steps < 0:
        parser.error("--warm_start_steps must be >= 0")
    if args.stage == "ppo" and args.resume:
        parser.error("--resume is not supported for --stage ppo (a run is a few minutes; start it again)")
    if args.stage == "ppo" and args.max_epochs != 1:
        parser.error("--max_epochs does not apply to --stage ppo: --max_steps counts updates, "
                     "--ppo_epochs the passes over each rollout")
    if args.kl_horizon is not None and args.kl_target is None:
        parser.error("--kl_horizon needs --kl_target (without a target the KL coefficient is fixed)")


def stage_args(args: argparse.Namespace, stage: str, world_size: int = 1) -> argparse.Namespace:
    """The flags for one stage: what the user set, else that stage's default. A default
    micro-batch is cut to fit the global batch on `world_size` processes (the demo's
    micro-batch of 32 becomes 16 under torchrun with 2 processes); one the user set is
    kept, and a mismatch is the stage's error to report."""
    merged = argparse.Namespace(**vars(args))
    merged.dtype = resolve_dtype(args.dtype, args.device)
    defaults = STAGE_DEFAULTS[stage]
    if stage == "sft" and args.dataset == "synthetic":
        defaults = {**defaults, **sft_world_defaults(args.references_per_post or SFT_WORLD_REFERENCES_PER_POST)}
    if args.train_batch_size is None and args.micro_train_batch_size is not None:
        # a micro-batch the user set, and no global batch: the default grows to hold it
        per_step = args.micro_train_batch_size * world_size
        defaults = {**defaults, "train_batch_size": -(-defaults["train_batch_size"] // per_step) * per_step}
    for key, value in defaults.items():
        if getattr(merged, key) is None:
            if key == "micro_train_batch_size":
                value = max(1, min(value, (args.train_batch_size or defaults["train_batch_size"]) // world_size))
            setattr(merged, key, value)
    for key, value in MODEL_DEFAULTS.items():
        if getattr(merged, key) is None:
            setattr(merged, key, value)
    if stage not in ("sft", "rm") or args.dataset == "synthetic":  # on a file, sft and rm measure the data
        merged.prompt_max_len = merged.prompt_max_len or data.PROMPT_MAX_LEN
        merged.generate_max_len = merged.generate_max_len or data.RESPONSE_MAX_LEN
    return merged


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Contradictions are errors, never silently ignored."""
    model_flags = [f for f in ("n_layer", "n_head", "n_kv_head", "n_embd", "vocab_size", "tokenizer", "tie_embeddings")
                   if getattr(args, f) is not None]
    if args.stage not in ("pretrain", "all") and model_flags:
        parser.error(f"--{model_flags[0]} only applies to --stage pretrain (later stages read the model from --init_from)")
    if args.stage == "all" and args.init_from:
        parser.error("--init_from cannot be combined with --stage all (each stage starts from the one before)")
    if args.stage == "all" and args.resume:
        parser.error("--resume applies to one stage; name it with --stage")
    if args.stage == "pretrain" and args.init_from:
        parser.error("--stage pretrain starts from scratch; --init_from applies to later stages")
    file_flags = [f for f in PREFERENCE_FLAGS if getattr(args, f)]
    if args.apply_chat_template and args.stage not in ("rm", "ppo", "all"):
        parser.error("--apply_chat_template only applies to --stage rm and ppo")
    rm_flags = [f for f in file_flags if f != "apply_chat_template"] + \
        [f for f in ("max_samples", "lm_loss_coeff", "normalize_reward", "summaries_per_post") if getattr(args, f)] + \
        (["token_surprise"] if args.token_surprise is not None else [])
    if args.stage not in ("rm", "all") and rm_flags:
        parser.error(f"--{rm_flags[0]} only applies to --stage rm")
    if args.dataset == "synthetic" and file_flags:
        parser.error(f"--{file_flags[0]} describes a preference file; the built-in world (--dataset synthetic) "
                     "has its own format")
    if args.resume and args.token_surprise is not None:
        parser.error("--token_surprise does not apply to --resume: the run keeps the form its reward model has")
    if args.stage == "rm" and args.input_key is not None:
        parser.error("--input_key is the SFT prompt field; for --stage rm use --prompt_key")
    if args.references_per_post is not None and (args.stage not in ("sft", "all") or args.dataset != "synthetic"):
        parser.error("--references_per_post applies to --stage sft on the built-in world "
                     "(a file's posts have the summaries it holds)")
    if args.references_per_post is not None and args.references_per_post < 1:
        parser.error("--references_per_post must be >= 1")
    if args.summaries_per_post is not None and args.dataset != "synthetic":
        parser.error("--summaries_per_post applies to the built-in world; a file holds the comparisons it holds")
    if args.summaries_per_post is not None and args.summaries_per_post < 2:
        parser.error("--summaries_per_post must be >= 2 (a comparison needs two summaries)")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error("--max_samples must be >= 1")
    if args.lm_loss_coeff is not None and args.lm_loss_coeff < 0:
        parser.error("--lm_loss_coeff must be >= 0")
    for flag in ("train_batch_size", "micro_train_batch_size", "max_steps", "max_epochs", "max_len", "prompt_max_len",
                 "generate_max_len", "rollout_batch_size", "ppo_epochs", "save_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be > 0, got {getattr(args, flag)}")
    for flag in ("n_eval", "eval_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "learning_rate",
                 "critic_learning_rate"):  # a rate of 0 keeps a model as it is
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            parser.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    check_ppo_args(args, parser)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but CUDA is not available")


# ----------------------------------------------------------------------------------------
def run_pretrain(args, ctx: Dist) -> dict:
    from plus import sft
    from plus.gpt import GPT, GPTConfig
    from plus.tokenizer import Tokenizer

    out_dir = Path(args.out_dir) / "pretrain"
    torch.manual_seed(args.seed)
    n_blocks = args.max_steps * args.train_batch_size  # one pass over fresh text
    n_eval_blocks = args.n_eval

    if args.dataset == "synthetic":
        world = World(args.seed)
        texts = lambda start: world.corpus(10 ** 9, start=start)  # noqa: E731  (lazy, unbounded)
    else:
        key = args.input_key or "text"
        rows = data.load_file_records(args.dataset, lambda r, where: data.get_text(r, key, where, "--input_key"),
                                      data.BadRecords(args.on_bad_record))
        texts = lambda start: iter(rows[start:] + rows[:start])  # noqa: E731

    if args.resume or args.tokenizer:
        tokenizer = checkpoint.load_tokenizer(out_dir) if args.resume else Tokenizer.load(args.tokenizer)
        print0(ctx, f"[pretrain] tokenizer: {out_dir if args.resume else args.tokenizer}")
    else:
        t0 = time.perf_counter()
        tokenizer = Tokenizer.train(_take(texts(0), 20000), vocab_size=args.vocab_size)
        print0(ctx, f"[pretrain] trained a {tokenizer.vocab_size}-token BPE in {time.perf_counter() - t0:.1f}s")

    blocks = data.pretrain_blocks(tokenizer, texts(0), args.max_len, n_blocks + n_eval_blocks)
    train_blocks, eval_blocks = blocks[:n_blocks], blocks[n_blocks:]
    make = GPTConfig.gpt2_style if args.model_family == "gpt2" else GPTConfig.llama_style
    model_config = make(vocab_size=tokenizer.vocab_size, block_size=max(args.max_len, args.prompt_max_len + args.generate_max_len),
                        n_layer=args.n_layer, n_head=args.n_head, n_kv_head=args.n_kv_head, n_embd=args.n_embd,
                        intermediate_size=args.intermediate_size or mlp_width(args.model_family, args.n_embd),
                        tie_embeddings=args.tie_embeddings)
    if args.resume:  # the architecture is whatever was saved, not the flags of this call
        model_config = GPTConfig.from_dict(checkpoint.load_config(out_dir)["model"])
    model = GPT(model_config)

    def get_batch(indices):
        x = train_blocks[indices]
        return {"input_ids": x[:, :-1], "labels": x[:, 1:]}

    eval_batches = [{"input_ids": b[:, :-1], "labels": b[:, 1:]}
                    for b in eval_blocks.split(args.micro_train_batch_size)][ctx.rank::ctx.world_size]
    return sft.train(stage="pretrain", model=model, tokenizer=tokenizer, dataset_size=n_blocks, get_batch=get_batch,
                     eval_batches=eval_batches, out_dir=out_dir, ctx=ctx, args=args,
                     config={"stage": "pretrain", "model": model_config.to_dict(), "dataset": args.dataset})


def run_sft(args, ctx: Dist) -> dict:
    from plus import sft

    out_dir = Path(args.out_dir) / "sft"
    init_from = Path(args.init_from) if args.init_from else Path(args.out_dir) / "pretrain"
    model, tokenizer, init_config = checkpoint.load_gpt(out_dir if args.resume else init_from)
    if not args.resume:
        print0(ctx, f"[sft] policy: {loaded(init_from, init_config)}")
    torch.manual_seed(args.seed)
    n_train = args.max_steps * args.train_batch_size if args.dataset == "synthetic" else None
    load = dict(input_key=args.input_key, output_key=args.output_key, on_bad_record=args.on_bad_record, seed=args.seed)
    per_post = (args.references_per_post or SFT_WORLD_REFERENCES_PER_POST) if args.dataset == "synthetic" else 1
    saved = checkpoint.load_config(out_dir).get("references_per_post", 1) if args.resume else per_post
    if saved != per_post:
        raise ValueError(f"{out_dir}: --resume of a run with {saved} references per post, asked for {per_post}")

    def read(prompt_max_len: int, generate_max_len: int) -> tuple:
        examples, bad = data.load_sft_examples(args.dataset, tokenizer, split="train", n=n_train,
                                               references_per_post=per_post, prompt_max_len=prompt_max_len,
                                               generate_max_len=generate_max_len, **load)
        prompts = list({tuple(e.prompt): e.prompt for e in examples}.values())
        return examples, bad, prompts, [e.response for e in examples]
    if args.dataset == "synthetic":
        examples, bad = read(args.prompt_max_len, args.generate_max_len)[:2]
    else:
        examples, bad = read_with_length_caps("sft", args, ctx, model.config.block_size, read)[:2]
    if bad.total:
        print0(ctx, f"[sft] {args.dataset}: {bad.summary()}")
    load.update(prompt_max_len=args.prompt_max_len, generate_max_len=args.generate_max_len)
    # The eval loss: on --eval_dataset, on the world's valid split, or on prompts of the
    # file held out of training (a file's own kind of text, which the world's is not).
    eval_examples, held_out = [], None
    if args.eval_dataset or args.dataset == "synthetic":
        for path in args.eval_dataset or ["synthetic"]:
            eval_examples += data.load_sft_examples(path, tokenizer, split="valid", n=args.n_eval, **load)[0]
    else:
        n_prompts = len(data.group_by_prompt(examples))
        examples, eval_examples = data.hold_out(examples, args.n_eval, args.seed)
        held_out = len(data.group_by_prompt(eval_examples))
        if held_out:
            print0(ctx, f"[sft] {args.dataset}: {held_out} of its {n_prompts} prompts held out for the eval loss "
                        "(--eval_dataset names another file)")
        else:
            print0(ctx, f"[sft] {args.dataset}: {n_prompts} prompts, too few to hold a tenth out: no eval loss "
                        "(--eval_dataset names a file for one)")
    too_long = max(len(e.prompt) + len(e.response) for e in examples)
    if too_long > model.config.block_size:
        raise ValueError(f"an example has {too_long} tokens, more than the model's block_size={model.config.block_size}")

    # The unit of a batch is a prompt with all of its responses (the world's several
    # references of a post, or a file's records that repeat a prompt), packed in one row:
    # the prompt, most of the tokens, is computed once for all of them.
    groups = data.group_by_prompt(examples)

    def get_batch(indices):
        return data.collate_sft_packed([examples[j] for i in indices for j in groups[i]], tokenizer.pad_id)

    eval_batches = [data.collate_sft(eval_examples[i:i + args.micro_train_batch_size], tokenizer.pad_id)
                    for i in range(0, len(eval_examples), args.micro_train_batch_size)][ctx.rank::ctx.world_size]
    config = {"stage": "sft", "model": model.config.to_dict(), "init_from": str(init_from), "dataset": args.dataset,
              "input_key": args.input_key, "output_key": args.output_key, "on_bad_record": args.on_bad_record,
              "prompt_max_len": args.prompt_max_len, "generate_max_len": args.generate_max_len,
              "references_per_post": per_post, "eval_dataset": args.eval_dataset or
              (f"{held_out} prompts of {args.dataset}, held out" if held_out is not None else "synthetic"),
              # what eval.py needs to draw the same held-out prompts (data.hold_out)
              **({"held_out": {"max_prompts": args.n_eval, "seed": args.seed}} if held_out else {})}
    return sft.train(stage="sft", model=model, tokenizer=tokenizer, dataset_size=len(groups), get_batch=get_batch,
                     eval_batches=eval_batches, out_dir=out_dir, ctx=ctx, args=args, config=config,
                     unit=f"prompts with {len(examples)} responses" if len(groups) < len(examples) else "examples")


def run_rm(args, ctx: Dist) -> dict:
    from plus import reward_trainer
    from plus.reward_head import load_reward_model
    from plus.surprise import SurpriseRewardModel, apply_token_surprise

    out_dir = Path(args.out_dir) / "rm"
    # A policy checkpoint (SFT by default) gets a new reward head; a reward checkpoint is
    # trained further whole: Cheng et al.'s general -> customized reward models.
    init_from = Path(args.init_from) if args.init_from else Path(args.out_dir) / "sft"
    torch.manual_seed(args.seed)  # the new head's initialization
    start = out_dir if args.resume else init_from
    model, tokenizer, start_config = load_reward_model(start)
    if not args.resume:
        print0(ctx, f"[rm] reward model: {loaded(init_from, start_config)}"
                    + (", trained further" if "reward" in start_config else ", with a new reward head"))
    surprise = args.token_surprise
    if surprise is None and args.dataset == "synthetic" and "reward" not in start_config:
        surprise = WORLD_TOKEN_SURPRISE  # a new reward model on the built-in world
    model = apply_token_surprise(model, surprise, start)
    n_train = args.max_samples or (RM_WORLD_PAIRS if args.dataset == "synthetic" else None)

    def read(path: str, split: str, n: int | None, summaries_per_post: int = 2, **caps) -> tuple:
        pairs, bad = preferences.load_preference_pairs(path, tokenizer, split=split, n=n,
                                                       summaries_per_post=summaries_per_post,
                                                       **{**preference_options(args, path), **caps})
        return (pairs, bad, list({tuple(p.prompt): p.prompt for p in pairs}.values()),
                list({tuple(r): r for p in pairs for r in (p.chosen, p.rejected)}.values()))

    def load(path: str, split: str, n: int | None, summaries_per_post: int = 2) -> list:
        pairs, bad = read(path, split, n, summaries_per_post)[:2]
        if bad.total:
            print0(ctx, f"[rm] {path} ({split}): {bad.summary()}")
        return pairs

    per_post = (args.summaries_per_post or RM_WORLD_SUMMARIES_PER_POST) if args.dataset == "synthetic" else 2
    if args.dataset == "synthetic":
        pairs = load(args.dataset, "train", n_train, per_post)
    else:
        pairs, bad = read_with_length_caps("rm", args, ctx, model.config.block_size,
                                           partial(read, args.dataset, "train", n_train))[:2]
        if bad.total:
            print0(ctx, f"[rm] {args.dataset} (train): {bad.summary()}")
    # Held out: the world's valid comparisons when training on the world; for a file, the
    # --eval_dataset files (a file's own format says nothing about the world's).
    eval_sets = {}
    for path in args.eval_dataset or (["synthetic"] if args.dataset == "synthetic" else []):
        name = "valid" if path == "synthetic" else Path(path).stem
        while name in eval_sets:
            name += "+"
        eval_sets[name] = load(path, "valid", args.n_eval)
    if not eval_sets:
        print0(ctx, "[rm] no --eval_dataset: no held-out evaluation during training")
    references = reward_trainer.reference_examples(args.dataset, pairs, tokenizer, "train", n_train,
                                                   args.prompt_max_len, args.generate_max_len, args.seed)
    longest = max(len(p.prompt) + max(len(p.chosen), len(p.rejected))
                  for p in pairs + [p for s in eval_sets.values() for p in s])
    if longest > model.config.block_size:
        raise ValueError(f"a pair has {longest} tokens, more than the model's block_size={model.config.block_size}")
    config = {"stage": "rm", "init_from": str(init_from), "dataset": args.dataset, "n_pairs": len(pairs),
              **({"summaries_per_post": per_post} if args.dataset == "synthetic" else {}),
              "prompt_max_len": args.prompt_max_len, "generate_max_len": args.generate_max_len,
              "eval_dataset": args.eval_dataset, "on_bad_record": args.on_bad_record,
              **({k: getattr(args, k) for k in PREFERENCE_FLAGS} if args.dataset != "synthetic" else {}),
              "lm_loss_coeff": args.lm_loss_coeff, "normalize_reward": args.normalize_reward,
              "token_surprise": isinstance(model, SurpriseRewardModel),
              "references": "world reference summaries of the training posts" if args.dataset == "synthetic"
              else "distinct chosen responses of the training pairs"}
    return reward_trainer.train(model=model, tokenizer=tokenizer, pairs=pairs, eval_sets=eval_sets,
                                references=references, out_dir=out_dir, config=config, args=args, ctx=ctx)


def run_ppo(args, ctx: Dist) -> dict:
    from dataclasses import fields

    from plus import ppo
    from plus.reward_head import load_reward_model
    from plus.value_head import Critic

    out_dir = Path(args.out_dir) / "ppo"
    init_from = Path(args.init_from) if args.init_from else Path(args.out_dir) / "sft"
    reward_from = Path(args.reward_pretrain) if args.reward_pretrain else Path(args.out_dir) / "rm"
    policy, tokenizer, policy_config = checkpoint.load_gpt(init_from)
    ref_policy, _, _ = checkpoint.load_gpt(init_from)  # frozen copy: the KL anchor
    reward_model, rm_tokenizer, rm_config = load_reward_model(reward_from)
    print0(ctx, f"[ppo] policy and KL reference: {loaded(init_from, policy_config)}; reward model and critic: "
                f"{loaded(reward_from, rm_config)}")
    if "reward" not in rm_config:
        raise checkpoint.CheckpointError(f"{reward_from}: not a reward model (its config.json has no \"reward\" "
                                         "section); train one with --stage rm")
    if (rm_tokenizer.vocab_size, rm_tokenizer.eos_id, rm_tokenizer.pad_id) != \
            (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id):
        raise checkpoint.CheckpointError(f"{reward_from}: its tokenizer differs from the policy's ({init_from})")
    critic = Critic.from_reward_model(reward_model)  # Detail: the critic starts as the reward model
    prompts = ppo_prompts(args, tokenizer, ctx)

    # Flags left unset take PPOConfig's defaults (the paper's values).
    cfg = ppo.PPOConfig(**{f.name: getattr(args, f.name) for f in fields(ppo.PPOConfig)
                           if getattr(args, f.name, None) is not None})
    score_fn = ppo.reward_model_scorer(reward_model.to(args.device), tokenizer.pad_id,
                                       batch_size=4 * cfg.micro_train_batch_size, device=args.device)
    config = {"stage": "ppo", "model": policy.config.to_dict(), "init_from": str(init_from),
              "reward_pretrain": str(reward_from), "dataset": args.dataset, "input_key": args.input_key,
              "apply_chat_template": args.apply_chat_template, "prompt_max_len": args.prompt_max_len,
              "generate_max_len": cfg.generate_max_len, "temperature": cfg.temperature}  # ppo.train adds its "ppo"
    with StopOnSignal() as stop:  # SIGTERM: the update finishes, the policy is saved (ppo.train)
        return ppo.train(policy=policy, ref_policy=ref_policy, critic=critic, score_fn=score_fn, tokenizer=tokenizer,
                         prompts=prompts, out_dir=out_dir, config=config, cfg=cfg, ctx=ctx, stop=stop)


def ppo_prompts(args, tokenizer, ctx: Dist) -> list[list[int]]:
    """PPO's prompts, cut to --prompt_max_len: fresh posts of the world for every update, as
    Stiennon queries; or a file's --input_key field (a TL;DR record's query by default). With
    --apply_chat_template the field is a conversation, chat messages or a string as one user
    turn, rendered in the policy tokenizer's chat template up to the cue that opens the
    assistant's turn (preferences.chat_prompt), as a chat model was trained to answer."""
    if args.dataset == "synthetic":
        posts = World(args.seed).posts("train", args.max_steps * args.rollout_batch_size)
        return [data.truncate_query(tokenizer, p.subreddit, p.title, p.post, args.prompt_max_len) for p in posts]
    if args.apply_chat_template:
        print0(ctx, f"[ppo] prompts: {args.dataset}'s {args.input_key or 'prompt'!r} in " + (
            "the policy tokenizer's chat template" if tokenizer.chat_template is not None else
            "the built-in chat format (the policy's tokenizer has no chat template)"))

    def parse(record: dict, where: str) -> list[int]:
        if args.apply_chat_template:
            return preferences.chat_prompt(tokenizer, record, args.input_key or "prompt", args.prompt_max_len, where)
        return data.prompt_ids(tokenizer, record, args.input_key, args.prompt_max_len, where)

    bad = data.BadRecords(args.on_bad_record)
    prompts = data.load_file_records(args.dataset, parse, bad)
    if bad.total:
        print0(ctx, f"[ppo] {args.dataset}: {bad.summary()}")
    return prompts


def plus_summarizer_init(init_from: Path, path: Path, args, ctx: Dist) -> Path:
    """The summarizer every PLUS method starts from: the --init_from model warm-started on
    the world's self-description documents (plus_trainer.warm_start), made once under
    <out_dir>/plus/summarizer_init and reused while it was made from the same model and
    settings; --warm_start_steps 0: the --init_from model itself."""
    from plus import plus_trainer
    from plus.world import self_description_documents

    steps = PLUS_WARM_START["steps"] if args.warm_start_steps is None else args.warm_start_steps
    if steps == 0:
        return init_from
    n_documents = min(PLUS_WARM_START["documents"], steps * PLUS_WARM_START["batch_size"])
    made_from = {"init_from": str(init_from), "documents": n_documents, "steps": steps, "seed": args.seed}
    if (path / checkpoint.CONFIG).is_file() and checkpoint.load_config(path).get("warm_start") == made_from:
        print0(ctx, f"[plus] summarizer: {path} (warm-started from {init_from})")
        return path
    model, tokenizer, config = checkpoint.load_gpt(init_from)
    t0 = time.perf_counter()
    documents = self_description_documents(n_documents, seed=args.seed)
    stats = plus_trainer.warm_start(model, tokenizer, documents, steps=steps,
                                    batch_size=PLUS_WARM_START["batch_size"],
                                    learning_rate=PLUS_WARM_START["learning_rate"],
                                    prompt_max_len=model.config.block_size - args.generate_max_len,
                                    response_max_len=args.generate_max_len, device=args.device, seed=args.seed)
    checkpoint.save_checkpoint(path, model, {**config, "stage": "plus_summarizer_init", "warm_start": made_from,
                                             **stats}, tokenizer=tokenizer)
    print0(ctx, f"[plus] summarizer warm-started on {len(documents)} self-descriptions in "
                f"{time.perf_counter() - t0:.0f}s (loss {stats['warm_start_loss']:.3f}): {path}")
    return path


def run_plus(args, ctx: Dist) -> dict:
    from dataclasses import fields

    from plus import plus_trainer, ppo
    from plus.reward_head import RewardModel
    from plus.world import make_users
    from plus.world.export import user_records

    population = args.population or "p2"
    init_from = Path(args.init_from) if args.init_from else Path(args.out_dir) / "sft"
    methods = plus_trainer.METHODS if args.method == "all" else (args.method or "plus",)
    summarizer_from = init_from  # the methods that read no z from a summarizer never use it
    if {"plus", "untrained"} & set(methods):
        summarizer_from = plus_summarizer_init(init_from, Path(args.out_dir) / "plus" / "summarizer_init", args, ctx)
    if args.dataset == "synthetic":
        users = make_users(population, "train", args.n_users or PLUS_WORLD_USERS, seed=args.seed)
        records = [data.parse_plus_record(r, f"synthetic:{u.id}") for u in users for r in user_records(u)]
    else:
        records, bad = data.load_plus_records(args.dataset, args.on_bad_record)
        if bad.total:
            print0(ctx, f"[plus] {args.dataset}: {bad.summary()}")
        population = Path(args.dataset).stem
    cfg = ppo.PPOConfig(**{f.name: getattr(args, f.name) for f in fields(ppo.PPOConfig)
                           if getattr(args, f.name, None) is not None})
    result = {}
    for method in methods:
        torch.manual_seed(args.seed)  # the reward head's initialization: the same for every method
        summarizer, tokenizer, _ = checkpoint.load_gpt(summarizer_from)
        ref_summarizer, _, _ = checkpoint.load_gpt(summarizer_from)
        reward_model = RewardModel.from_gpt(checkpoint.load_gpt(init_from)[0])
        settings = plus_trainer.PlusSettings(method=method, prompt_max_len=args.prompt_max_len,
                                             response_max_len=args.generate_max_len)
        config = {"init_from": str(init_from), "summarizer_from": str(summarizer_from), "dataset": args.dataset, "population": population, "method": method,
                  "n_records": len(records), "n_users": args.n_users or PLUS_WORLD_USERS, "seed": args.seed,
                  "prompt_max_len": args.prompt_max_len,
                  "generate_max_len": args.generate_max_len, "ppo": {f.name: getattr(cfg, f.name) for f in fields(cfg)}}
        out_dir = Path(args.out_dir) / "plus" / population / method
        last = plus_trainer.train(summarizer=summarizer, ref_summarizer=ref_summarizer, reward_model=reward_model,
                                  tokenizer=tokenizer, records=records, out_dir=out_dir, config=config, cfg=cfg,
                                  settings=settings, ctx=ctx)
        result.update({f"{method}_{k}": v for k, v in last.items() if k in ("rm_accuracy", "summarizer_reward")})
    return result


# A length cap that cuts nothing: the read that measures a file's prompts and responses.
UNCAPPED = sys.maxsize


def read_with_length_caps(stage: str, args, ctx: Dist, block_size: int, read: Callable[..., tuple]) -> tuple:
    """What `read(prompt_max_len=, generate_max_len=)` reads from the file args.dataset, as
    (what it read, its BadRecords, its distinct prompts' token lists, its responses'), read
    with the caps the flags give or, where unset, the data's (data.length_caps: its longest
    prompt and response, within the model's block_size). A first read without caps measures
    the data; a second, with the caps, is needed only where they cut. Sets
    args.prompt_max_len and args.generate_max_len, and says in one line what they are and
    how many prompts and responses they cut (a cut response loses its EOS: response_ids)."""
    uncapped = read(prompt_max_len=UNCAPPED, generate_max_len=UNCAPPED)
    lengths = {"prompt": [len(p) for p in uncapped[2]], "response": [len(r) for r in uncapped[3]]}
    given = {"prompt": args.prompt_max_len is not None, "response": args.generate_max_len is not None}
    args.prompt_max_len, args.generate_max_len = data.length_caps(lengths["prompt"], lengths["response"], block_size,
                                                                  args.prompt_max_len, args.generate_max_len)
    caps = {"prompt": args.prompt_max_len, "response": args.generate_max_len}
    cut = {kind: sum(n > caps[kind] for n in lengths[kind]) for kind in caps}
    why = {kind: "given" if given[kind] else "the data's longest" if caps[kind] >= max(lengths[kind])
           else f"what fits block_size {block_size}" for kind in caps}
    print0(ctx, f"[{stage}] {args.dataset}: --prompt_max_len {caps['prompt']} ({why['prompt']}), --generate_max_len "
                f"{caps['response']} ({why['response']}); " + (
                    f"{cut['prompt']} of {len(lengths['prompt'])} prompts cut to fit, {cut['response']} of "
                    f"{len(lengths['response'])} responses cut without their EOS" if any(cut.values())
                    else "nothing cut"))
    return read(prompt_max_len=args.prompt_max_len, generate_max_len=args.generate_max_len) if any(cut.values()) \
        else uncapped


def loaded(path: Path, config: dict) -> str:
    """A checkpoint as the one-line report of what a stage loaded names it."""
    return f"{path} ({config.get('stage', 'model')} checkpoint)"


RUNNERS = {"pretrain": run_pretrain, "sft": run_sft, "rm": run_rm, "ppo": run_ppo, "plus": run_plus}


def _take(iterator, n):
    for i, item in enumerate(iterator):
        if i >= n:
            return
        yield item


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args, parser)
    ctx = init(args.device)
    try:
        for stage in (STAGES if args.stage == "all" else (args.stage,)):
            t0 = time.perf_counter()
            result = RUNNERS[stage](stage_args(args, stage, ctx.world_size), ctx)
            saved = f", saved to {Path(args.out_dir) / stage}" if stage in STAGES else ""
            print0(ctx, f"[{stage}] done in {time.perf_counter() - t0:.0f}s{saved}: "
                        + ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float)))
    except Preempted as e:
        print0(ctx, str(e))
        later = STAGES[STAGES.index(stage) + 1:] if args.stage == "all" else ()
        if later:
            print0(ctx, f"[{stage}] not started: {', '.join(later)}; run each with --stage NAME")
        return 0
    except (data.DataError, checkpoint.CheckpointError, ValueError, FloatingPointError) as e:
        print_error(str(e))
        return 1
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
