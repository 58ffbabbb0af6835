"""The command line of train.py: every flag, each stage's defaults, and the checks that
refuse a contradictory command before anything loads.

A flag left unset (None) takes its stage's own default from STAGE_DEFAULTS, so one command
line drives `--stage all`; the built-in world's sizes (SFT_WORLD_*, RM_WORLD_*, PLUS_*)
are the demo's, and `--help` shows each stage's value beside every flag it sets. Flags
follow OpenRLHF's names. `stage_args` resolves the flags of one stage.
"""

from __future__ import annotations

import argparse

import torch

from plus import data
from plus.cli import ArgumentParser
from plus.distributed import STRATEGIES
from plus.preference_flags import PREFERENCE_FLAGS, add_preference_args
from plus.training import DTYPES, resolve_dtype
from plus.world import TRAIN_REFERENCES_PER_POST, TRAIN_SUMMARIES_PER_POST

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
    # new; 120 updates of 32 records (the reward model's pass over their 32 pairs) take each of
    # the 4,000 pairs of PLUS_WORLD_USERS at most once. generate_max_len is z's budget: room
    # for every persona text of the world (the oracle's z) with its EOS, which the TL;DR
    # setting's 48 tokens do not give (tests/test_plus_trainer.py). GAE's lambda is 1, not the
    # authors' 0.95: z's deciding words come about 40 tokens before the reward, which
    # lambda 0.95 passes back scaled by 0.95^40 = 0.13, and a critic that cannot yet tell
    # users apart does not make up for it (BENCHMARKS.md, "PLUS on the world: a reward
    # model that reads z before PLUS"; --lambd 0.95 is the paper's run).
    "plus": dict(learning_rate=1e-4, critic_learning_rate=3e-4, max_steps=120, rollout_batch_size=32,
                 generate_max_len=64,
                 train_batch_size=16, micro_train_batch_size=16, ppo_epochs=2, warmup_ratio=0.0,
                 init_kl_coef=0.01, kl_estimator="k1", lambd=1.0),
}
# A new reward model on the built-in world carries the surprise term (plus/surprise.py),
# chosen by the gold judge's verdict on the PPO policies it trains (BENCHMARKS.md, "The
# surprise term, two seeds"); a file's is the paper's plain model, since the world is the
# only place the term has a gold judge to be checked against.
WORLD_TOKEN_SURPRISE = True
# PLUS on the built-in world: seen users (each gives two training pairs).
# Enough users that no pair comes back: a reward model that sees a pair again can memorize
# it instead of reading z (BENCHMARKS.md, "PLUS on the world: can the demo model read a context?").
PLUS_WORLD_USERS = 2000
# --population all: the populations of the PLUS table, trained in turn (ood is evaluated
# with the models trained on p4).
PLUS_TABLE_POPULATIONS = ("pets", "p2", "p4")
# The summarizer's warm start on the corpus's self-descriptions (plus_trainer.warm_start):
# three passes over 8,000 documents at a third of SFT's rate: the budget and the
# rate at which the demo model learns to read content as well as length from the choices
# (BENCHMARKS.md, "PLUS on the world: a corpus the demo model learns to read from").
PLUS_WARM_START = dict(documents=8000, steps=1500, batch_size=16, learning_rate=1e-3)
# Every method's reward model is first grounded on the comparisons of the same corpus, each
# read with what its chooser says they want (plus_trainer.ground_reward_model): one pass
# over about 24,000 comparisons (about 8,000 documents) at the reward model's rate, after
# which it reads p2's persona texts it never saw (BENCHMARKS.md, "PLUS on the world: a
# reward model that reads z before PLUS").
PLUS_GROUNDING = dict(steps=1500, batch_size=16, learning_rate=3e-4)
# ... and then a second pass of as many comparisons, the corpus's next ones interleaved with
# those of one-pole people (plus.world.pole_document), in this order, over and over:
# "corpus" or (axis, contested). The corpus's pairs are mostly decided by length, so its
# content sentence stays unread (a Bradley–Terry plateau); pairs that only the content
# sentence decides teach it, mixed with the corpus's so that length is not forgotten, and
# with shared pairs, which every z ranks alike, so that what everyone prefers is not
# forgotten either (BENCHMARKS.md, "PLUS on the world: the two-pass grounding").
PLUS_GROUNDING_MIX = ("corpus", ("content", True), "corpus", ("content", True), ("length", False), "corpus",
                      ("content", True), "corpus", ("content", True), ("content", False), "corpus",
                      ("content", True), "corpus", ("content", True), ("register", False))
# The reward model's rate rises over the first quarter of PLUS's updates (every method's
# alike): the grounded reward model, at full rate from the first update, unlearns part of
# its reading of z while the summarizer's first z state a sentence little better than
# chance; rising slowly, it keeps paying for the sentences the grounding taught it to read
# while the summarizer learns to write them (BENCHMARKS.md, "PLUS on the world: the reward
# model's rate rises").
PLUS_REWARD_WARMUP = 0.25
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
                   help="prompt tokens at most (default: sft, rm and ppo on a file, its longest prompt within the "
                        f"model's block_size, see README; else {data.PROMPT_MAX_LEN})")
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
                   help="also save every N steps (for --resume; ppo: also a policy snapshot, default 4)")
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


PPO_FLAGS = ("reward_pretrain", "rollout_batch_size", "n_samples_per_prompt", "group_baseline", "ppo_epochs",
             "critic_learning_rate", "temperature", "missing_eos_penalty", "reward_clip", "whiten_rewards",
             "init_kl_coef", "kl_target", "kl_horizon", "kl_estimator", "gamma", "lambd", "eps_clip", "value_clip",
             "vf_coef")


def add_ppo_args(p: argparse.ArgumentParser) -> None:
    """--stage ppo (defaults: plus.ppo.PPOConfig, the paper's values, unless STAGE_DEFAULTS says otherwise)."""
    p.add_argument("--reward_pretrain", default=None, help="ppo: the reward model (default <out_dir>/rm); "
                                                           "it also initializes the critic")
    p.add_argument("--rollout_batch_size", type=int, default=None, help="ppo: prompts per update, all processes")
    p.add_argument("--n_samples_per_prompt", type=int, default=None,
                   help="ppo: responses sampled per prompt (1); --train_batch_size counts responses")
    p.add_argument("--group_baseline", action="store_true",
                   help="ppo: pay each response its score less the mean of its prompt's other samples' "
                        "(leave-one-out; needs --n_samples_per_prompt >= 2)")
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


PLUS_FLAGS = ("population", "method", "n_users", "warm_start_steps", "grounding_steps", "grounding_replay",
              "reward_warmup_ratio")
# the PLUS flags that --stage ppo --train_reward takes too
PLUS_FORK_FLAGS = ("warm_start_steps", "grounding_steps", "grounding_replay", "reward_warmup_ratio")


def add_plus_args(p: argparse.ArgumentParser) -> None:
    """--stage plus (plus/plus_trainer.py); PPO's flags size the summarizer's updates."""
    from plus.plus_trainer import METHODS

    p.add_argument("--population", choices=PLUS_TABLE_POPULATIONS + ("all",), default=None,
                   help="plus: the built-in world's users (default p2; all: each of "
                        f"{', '.join(PLUS_TABLE_POPULATIONS)} in turn); ood users are for evaluation")
    p.add_argument("--method", choices=METHODS + ("all",), default=None,
                   help="plus: what the reward model reads about the user (default plus; all: every method in turn)")
    p.add_argument("--n_users", type=int, default=None,
                   help=f"plus: seen users of the built-in world (default {PLUS_WORLD_USERS}; two pairs each)")
    p.add_argument("--warm_start_steps", type=int, default=None,
                   help=f"plus: minibatches of {PLUS_WARM_START['batch_size']} self-description documents the "
                        f"summarizer learns from before RL (default {PLUS_WARM_START['steps']} on the built-in "
                        "world, 0 on a file; 0: none)")
    p.add_argument("--grounding_steps", type=int, default=None,
                   help=f"plus: minibatches of {PLUS_GROUNDING['batch_size']} comparisons of the self-description "
                        "corpus, each read with what its chooser says they want, that every method's reward model "
                        "learns from first, in each of two passes (the corpus's, then the corpus's mixed with "
                        f"one-pole people's; default {PLUS_GROUNDING['steps']} on the built-in world, 0 on a file; "
                        "0: none, the reward model starts from --init_from with a new head)")
    p.add_argument("--grounding_replay", type=int, default=None,
                   help="plus: grounding comparisons added to every reward-model update of every method (the "
                        "grounding's mix, continued), a minibatch of them after each of the users', so that the "
                        "reward model keeps reading what the grounding taught it (default 0; needs the grounding)")
    p.add_argument("--reward_warmup_ratio", type=float, default=None,
                   help="plus: the fraction of the updates over which the reward model's rate rises linearly to "
                        f"the critic's, before its cosine decay, for every method (default {PLUS_REWARD_WARMUP} on the "
                        "built-in world, 0 on a file; 0: the full rate from the first update)")
    p.add_argument("--train_reward", action="store_true",
                   help="ppo on a PLUS file (--dataset FILE): train PLUS, the summarizer and the reward model "
                        "together, as --stage plus --method plus does (the name the PLUS authors' OpenRLHF fork "
                        "gives it; with --input_key context_messages --apply_chat_template the summarizer reads "
                        "the context as chat messages in the policy tokenizer's chat template)")


def check_plus_fork_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--stage ppo --train_reward is the PLUS authors' spelling of --stage plus on a file;
    --input_key names the field the summarizer reads (plus_trainer.summarizer_prompts)."""
    from plus.plus_trainer import SUMMARIZER_INPUTS

    if args.train_reward and args.stage != "ppo":
        parser.error("--train_reward only applies to --stage ppo (the PLUS authors' spelling of --stage plus "
                     "on a file)")
    if args.stage == "plus" and args.population is not None and args.dataset != "synthetic":
        parser.error(f"--population {args.population} is the built-in world's: a PLUS file (--dataset) is "
                     "its own population, named after the file")
    if (args.stage == "plus" or args.train_reward) and args.eval_dataset:
        parser.error("--eval_dataset does not apply to PLUS training: `python eval.py --stage plus --eval_dataset "
                     "FILE` scores the trained runs on a file of new users")
    if args.train_reward and args.dataset == "synthetic":
        parser.error("--train_reward trains PLUS on a file (--dataset FILE); on the built-in world use --stage plus")
    if (args.stage == "plus" or args.train_reward) and args.input_key is not None:
        if args.input_key not in SUMMARIZER_INPUTS:
            parser.error(f"--input_key {args.input_key}: the summarizer reads {' or '.join(SUMMARIZER_INPUTS)}")
        if args.input_key == "context_messages" and not args.apply_chat_template:
            parser.error("--input_key context_messages needs --apply_chat_template (--stage ppo --train_reward): "
                         "chat messages are read in the chat template")


def check_ppo_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    given = [f for f in PPO_FLAGS if getattr(args, f) not in (None, False)]
    if args.stage not in ("ppo", "plus", "all") and given:
        parser.error(f"--{given[0]} only applies to --stage ppo (and plus)")
    plus_given = [f for f in PLUS_FLAGS if getattr(args, f) is not None
                  and not (args.train_reward and f in PLUS_FORK_FLAGS)]
    if args.stage != "plus" and plus_given:
        parser.error(f"--{plus_given[0]} only applies to --stage plus")
    if (args.stage == "plus" or args.train_reward) and (args.resume or args.reward_pretrain):
        parser.error(f"--{'resume' if args.resume else 'reward_pretrain'} does not apply to "
                     f"{'--train_reward' if args.train_reward else '--stage plus'} "
                     "(the reward model starts from --init_from, as the summarizer)")
    if args.n_users is not None and args.n_users < 1:
        parser.error("--n_users must be >= 1")
    if args.warm_start_steps is not None and args.warm_start_steps < 0:
        parser.error("--warm_start_steps must be >= 0")
    if args.reward_warmup_ratio is not None and not 0 <= args.reward_warmup_ratio <= 1:
        parser.error("--reward_warmup_ratio must be in [0, 1]")
    if args.grounding_replay is not None and args.grounding_replay < 0:
        parser.error("--grounding_replay must be >= 0")
    if args.grounding_replay and (args.grounding_steps == 0 or (args.dataset != "synthetic"
                                                                and args.grounding_steps is None)):
        parser.error("--grounding_replay replays the grounding's comparisons: it needs the grounding "
                     "(--grounding_steps, on by default on the built-in world only)")
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
    if stage not in ("sft", "rm", "ppo") or args.dataset == "synthetic":  # on a file, these measure the data
        merged.prompt_max_len = merged.prompt_max_len or data.PROMPT_MAX_LEN
    if stage not in ("sft", "rm") or args.dataset == "synthetic":  # PPO's responses are its own: the TL;DR cap
        merged.generate_max_len = merged.generate_max_len or data.RESPONSE_MAX_LEN
    return merged


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Contradictions are errors, never silently ignored."""
    check_plus_fork_args(args, parser)
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
                 "generate_max_len", "rollout_batch_size", "n_samples_per_prompt", "ppo_epochs", "save_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be > 0, got {getattr(args, flag)}")
    for flag in ("n_eval", "eval_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "learning_rate",
                 "critic_learning_rate"):  # a rate of 0 keeps a model as it is
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            parser.error(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    check_ppo_args(args, parser)
    if args.group_baseline and (args.n_samples_per_prompt or 1) < 2:
        parser.error("--group_baseline compares a prompt's samples with each other: it needs "
                     "--n_samples_per_prompt >= 2")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but CUDA is not available")


# ----------------------------------------------------------------------------------------
