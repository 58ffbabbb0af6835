"""Train one stage of the pipeline, or all of them in order.

    python train.py --stage all                       # the demo on the built-in world
    python train.py --stage sft --dataset my_tldr.jsonl --init_from runs/demo/pretrain
    torchrun --nproc_per_node=2 train.py --stage sft --max_steps 20
    torchrun --nproc_per_node=2 train.py --stage sft --strategy fsdp   # sharded (plus/fsdp.py)
    python train.py --stage rm --dataset comparisons.jsonl --eval_dataset a.jsonl b.jsonl
    python train.py --stage plus --population p2 --method all   # PLUS and its baselines (plus/plus_trainer.py)
    python train.py --stage ppo --train_reward --input_key context_messages --apply_chat_template --dataset F
                                                    # PLUS on a file, the PLUS authors' spelling

Stage X writes <out_dir>/X/ and, unless --init_from says otherwise, starts from the
stage before it under the same --out_dir (ARCHITECTURE.md). The flags, each stage's
defaults and their checks are in plus/stage_flags.py; this file runs the stages.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from plus import checkpoint, data, preferences
from plus.cli import print_error
from plus.distributed import Dist, barrier, init, print0, teardown
from plus.preference_flags import PREFERENCE_FLAGS, preference_options
from plus.stage_flags import (PLUS_GROUNDING, PLUS_GROUNDING_MIX, PLUS_REWARD_WARMUP, PLUS_TABLE_POPULATIONS,
                              PLUS_WARM_START, PLUS_WORLD_USERS, RM_WORLD_PAIRS, RM_WORLD_SUMMARIES_PER_POST,
                              SFT_WORLD_REFERENCES_PER_POST, STAGES, WORLD_TOKEN_SURPRISE, build_parser, check_args,
                              mlp_width, stage_args)
from plus.training import Preempted, StopOnSignal
from plus.world import World

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
    prompts = ppo_prompts(args, tokenizer, ctx, policy.config.block_size)

    # Flags left unset take PPOConfig's defaults (the paper's values).
    cfg = ppo.PPOConfig(**{f.name: getattr(args, f.name) for f in fields(ppo.PPOConfig)
                           if getattr(args, f.name, None) is not None})
    score_fn = ppo.reward_model_scorer(reward_model.to(args.device), tokenizer.pad_id,
                                       batch_size=4 * cfg.micro_train_batch_size, device=args.device)
    config = {"stage": "ppo", "model": policy.config.to_dict(), "init_from": str(init_from),
              "reward_pretrain": str(reward_from), "dataset": args.dataset, "input_key": args.input_key,
              "apply_chat_template": args.apply_chat_template, "prompt_max_len": args.prompt_max_len,
              "generate_max_len": cfg.generate_max_len, "temperature": cfg.temperature}  # ppo.train adds its "ppo"
    with StopOnSignal() as stop:  # SIGTERM: the update finishes, a resumable checkpoint is saved (ppo.train)
        return ppo.train(policy=policy, ref_policy=ref_policy, critic=critic, score_fn=score_fn, tokenizer=tokenizer,
                         prompts=prompts, out_dir=out_dir, config=config, cfg=cfg, ctx=ctx, stop=stop,
                         resume=args.resume)


def ppo_prompts(args, tokenizer, ctx: Dist, block_size: int) -> list[list[int]]:
    """PPO's prompts, cut to --prompt_max_len: fresh posts of the world for every update, as
    Stiennon queries; or a file's --input_key field (a TL;DR record's query by default). With
    --apply_chat_template the field is a conversation, chat messages or a string as one user
    turn, rendered in the policy tokenizer's chat template up to the cue that opens the
    assistant's turn (preferences.chat_prompt), as a chat model was trained to answer. On a
    file without --prompt_max_len the cap is the file's longest prompt, within what
    block_size leaves beside --generate_max_len, and one line says what it cut."""
    if args.dataset == "synthetic":
        posts = World(args.seed).posts("train", args.max_steps * args.rollout_batch_size)
        return [data.truncate_query(tokenizer, p.subreddit, p.title, p.post, args.prompt_max_len) for p in posts]
    if args.apply_chat_template:
        print0(ctx, f"[ppo] prompts: {args.dataset}'s {args.input_key or 'prompt'!r} in " + (
            "the policy tokenizer's chat template" if tokenizer.chat_template is not None else
            "the built-in chat format (the policy's tokenizer has no chat template)"))

    def read(prompt_max_len: int) -> tuple[list[list[int]], data.BadRecords]:
        def parse(record: dict, where: str) -> list[int]:
            if args.apply_chat_template:
                return preferences.chat_prompt(tokenizer, record, args.input_key or "prompt", prompt_max_len, where)
            return data.prompt_ids(tokenizer, record, args.input_key, prompt_max_len, where)

        bad = data.BadRecords(args.on_bad_record)
        return data.load_file_records(args.dataset, parse, bad), bad

    if args.prompt_max_len is not None:
        prompts, bad = read(args.prompt_max_len)
    else:
        prompts, bad = read(UNCAPPED)
        longest, room = max(map(len, prompts), default=1), block_size - args.generate_max_len
        if room < 1:
            raise data.DataError(f"--generate_max_len {args.generate_max_len} leaves no room for a prompt in the "
                                 f"policy's block_size {block_size}")
        args.prompt_max_len = min(longest, room)
        cut = sum(len(p) > args.prompt_max_len for p in prompts)
        why = "the data's longest" if longest <= room else \
            f"what fits block_size {block_size} beside --generate_max_len {args.generate_max_len}"
        print0(ctx, f"[ppo] {args.dataset}: --prompt_max_len {args.prompt_max_len} ({why}); " +
                    (f"{cut} of {len(prompts)} prompts cut to fit" if cut else "nothing cut"))
        if cut:
            prompts, bad = read(args.prompt_max_len)
    if bad.total:
        print0(ctx, f"[ppo] {args.dataset}: {bad.summary()}")
    return prompts


def plus_summarizer_init(init_from: Path, path: Path, args, ctx: Dist) -> Path:
    """The summarizer every PLUS method starts from: the --init_from model warm-started on
    the world's self-description documents (plus_trainer.warm_start), made once under
    <out_dir>/plus/summarizer_init and reused while it was made from the same model and
    settings; --warm_start_steps 0 (a file's default: the documents are the world's): the
    --init_from model itself."""
    from plus import plus_trainer
    from plus.world import self_description_documents

    default = PLUS_WARM_START["steps"] if args.dataset == "synthetic" else 0  # a file's model: as it is
    steps = default if args.warm_start_steps is None else args.warm_start_steps
    if steps == 0:
        return init_from
    n_documents = min(PLUS_WARM_START["documents"], steps * PLUS_WARM_START["batch_size"])
    made_from = {"init_from": str(init_from), "documents": n_documents, "steps": steps, "seed": args.seed,
                 "z_tokens": args.generate_max_len}
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
                                    response_max_len=args.generate_max_len, device=args.device, seed=args.seed,
                                    progress=ctx.is_main and not args.no_progress)
    if ctx.is_main:  # every process made the same model; one writes it
        checkpoint.save_checkpoint(path, model, {**config, "stage": "plus_summarizer_init", "warm_start": made_from,
                                                 **stats}, tokenizer=tokenizer)
    barrier(ctx)
    print0(ctx, f"[plus] summarizer warm-started on {len(documents)} self-descriptions in "
                f"{time.perf_counter() - t0:.0f}s (loss {stats['warm_start_loss']:.3f}): {path}")
    return path


def reward_response_max_len(args, block_size: int) -> int:
    """The tokens of a response the PLUS reward model reads: what --prompt_max_len leaves of
    block_size, and on the built-in world at most the TL;DR setting's 48."""
    room = block_size - args.prompt_max_len
    if room < 1:
        raise data.DataError(f"--prompt_max_len {args.prompt_max_len} leaves no room for a response in the "
                             f"reward model's block_size {block_size}")
    return min(room, data.RESPONSE_MAX_LEN) if args.dataset == "synthetic" else room


def plus_reward_init(init_from: Path, path: Path, args, ctx: Dist) -> Path | None:
    """The reward model every PLUS method starts from: the --init_from model with a reward
    head, grounded on the world's self-description corpus in two passes of --grounding_steps
    minibatches each (plus_trainer.ground_reward_model): the corpus's comparisons, each read
    with what its chooser says they want; then the next ones interleaved with one-pole
    people's (PLUS_GROUNDING_MIX), so that the content sentence is read as well as the
    length one. Made once under <out_dir>/plus/reward_init and reused while it was made
    from the same model and settings. --grounding_steps 0 (a file's default: the documents
    are the world's): None (each method's reward model starts from --init_from with a new
    head)."""
    from plus import plus_trainer
    from plus.reward_head import RewardModel

    default = PLUS_GROUNDING["steps"] if args.dataset == "synthetic" else 0  # a file's model: as it is
    steps = default if args.grounding_steps is None else args.grounding_steps
    if steps == 0:
        return None
    made_from = {"init_from": str(init_from), "steps": steps, "seed": args.seed,
                 "prompt_max_len": args.prompt_max_len, "mix": [list(s) if isinstance(s, tuple) else s
                                                                 for s in PLUS_GROUNDING_MIX]}
    if (path / checkpoint.CONFIG).is_file() and checkpoint.load_config(path).get("grounding") == made_from:
        print0(ctx, f"[plus] reward model: {path} (grounded from {init_from})")
        return path
    gpt, tokenizer, _ = checkpoint.load_gpt(init_from)
    torch.manual_seed(args.seed)  # the reward head's initialization
    model = RewardModel.from_gpt(gpt)
    t0 = time.perf_counter()
    wanted = steps * PLUS_GROUNDING["batch_size"]
    drawn = dict(seed=args.seed, prompt_max_len=args.prompt_max_len,
                   response_max_len=reward_response_max_len(args, model.config.block_size))
    # the corpus's comparisons, document after document; then the mix, from the next document
    pairs, index = plus_trainer.mixed_grounding_pairs(tokenizer, ("corpus",), wanted, first_document=0, **drawn)
    mixed, end = plus_trainer.mixed_grounding_pairs(tokenizer, PLUS_GROUNDING_MIX, wanted, first_document=index,
                                                    **drawn)
    stats = {}
    for name, these in (("", pairs), ("mixed_", mixed)):
        out = plus_trainer.ground_reward_model(model, these, pad_id=tokenizer.pad_id,
                                               batch_size=PLUS_GROUNDING["batch_size"],
                                               learning_rate=PLUS_GROUNDING["learning_rate"],
                                               max_grad_norm=args.max_grad_norm, device=args.device,
                                               dtype=args.dtype, progress=ctx.is_main and not args.no_progress,
                                               desc=f"reward grounding{', mixed' if name else ''}")
        stats.update({name + k: v for k, v in out.items()})
    if ctx.is_main:  # every process made the same model; one writes it
        model.save(path, tokenizer, extra_config={"stage": "plus_reward_init", "grounding": made_from,
                                                  "grounding_documents": index, "mixed_grounding_documents": end,
                                                  **stats})
    barrier(ctx)
    print0(ctx, f"[plus] reward model grounded on {stats['grounding_pairs']} comparisons of {index} "
                f"self-descriptions, then {stats['mixed_grounding_pairs']} mixed with one-pole people's, in "
                f"{time.perf_counter() - t0:.0f}s (loss {stats['grounding_loss']:.3f} then "
                f"{stats['mixed_grounding_loss']:.3f}, accuracy {stats['grounding_accuracy']:.3f} then "
                f"{stats['mixed_grounding_accuracy']:.3f}): {path}")
    return path


def plus_replay(args, reward_from: Path | None, updates: int, response_max_len: int) -> list:
    """The comparisons --grounding_replay adds to each reward-model update (plus_trainer.train's
    `replay`), `updates` times over: the grounding's second-pass mix (PLUS_GROUNDING_MIX)
    continued where it ended, so no comparison the grounding used comes back."""
    from plus import plus_trainer

    n = args.grounding_replay or 0
    if n == 0:
        return []
    if reward_from is None:
        raise data.DataError("--grounding_replay needs the grounded reward model (on a file, give --grounding_steps)")
    grounded = checkpoint.load_config(reward_from)
    pairs, _ = plus_trainer.mixed_grounding_pairs(
        checkpoint.load_tokenizer(reward_from), PLUS_GROUNDING_MIX, n * updates,
        first_document=grounded["mixed_grounding_documents"], seed=args.seed, prompt_max_len=args.prompt_max_len,
        response_max_len=response_max_len, start=grounded["grounding"]["steps"] * PLUS_GROUNDING["batch_size"])
    return pairs


def run_plus(args, ctx: Dist) -> dict:
    """--stage plus: the methods on the built-in world's population (each of pets, p2 and p4
    in turn with --population all) or on a PLUS file, all from the same --init_from."""
    from plus import plus_trainer
    from plus.world import make_users
    from plus.world.export import user_records

    init_from = Path(args.init_from) if args.init_from else Path(args.out_dir) / "sft"
    methods = plus_trainer.METHODS if args.method == "all" else (args.method or "plus",)
    if args.dataset == "synthetic":
        populations = PLUS_TABLE_POPULATIONS if args.population == "all" else (args.population or "p2",)

        def records_of(population: str) -> list:
            users = make_users(population, "train", args.n_users or PLUS_WORLD_USERS, seed=args.seed)
            return [data.parse_plus_record(r, f"synthetic:{u.id}") for u in users for r in user_records(u)]
    else:  # read first: a bad record stops the run before any training
        records, bad = data.load_plus_records(args.dataset, args.on_bad_record)
        if bad.total:
            print0(ctx, f"[plus] {args.dataset}: {bad.summary()}")
        populations = (Path(args.dataset).stem,)

        def records_of(population: str) -> list:
            return records
    summarizer_from = init_from  # the methods that read no z from a summarizer never use it
    if {"plus", "untrained"} & set(methods):
        summarizer_from = plus_summarizer_init(init_from, Path(args.out_dir) / "plus" / "summarizer_init", args, ctx)
    reward_from = plus_reward_init(init_from, Path(args.out_dir) / "plus" / "reward_init", args, ctx)
    result = {}
    for population in populations:
        last = run_plus_population(args, ctx, population, records_of(population), methods, init_from, summarizer_from,
                                   reward_from)
        result.update({f"{population}_{k}" if len(populations) > 1 else k: v for k, v in last.items()})
    return result


def run_plus_population(args, ctx: Dist, population: str, records: list, methods: tuple, init_from: Path,
                        summarizer_from: Path, reward_from: Path | None) -> dict:
    """Train each of `methods` on one population's records into <out_dir>/plus/<population>/<method>,
    every reward model from reward_from (the grounded one) or, if None, from init_from with a
    new head; returns each method's last reward-model accuracy (and summarizer reward)."""
    from dataclasses import fields

    from plus import plus_trainer, ppo
    from plus.reward_head import RewardModel, load_reward_model

    cfg = ppo.PPOConfig(**{f.name: getattr(args, f.name) for f in fields(ppo.PPOConfig)
                           if getattr(args, f.name, None) is not None})
    # What the summarizer reads (plus_trainer.summarizer_prompts): the plain context, or with
    # --apply_chat_template the --input_key field in the policy tokenizer's chat template.
    summarizer_input = {"input_key": args.input_key or "context", "apply_chat_template": args.apply_chat_template}
    # The reward model's rate rises over a share of the updates (PLUS_REWARD_WARMUP says why);
    # a file's reward model, not grounded by default, steps at its full rate from the first.
    warmup_ratio = args.reward_warmup_ratio
    if warmup_ratio is None:
        warmup_ratio = PLUS_REWARD_WARMUP if args.dataset == "synthetic" else 0.0
    result, replay = {}, None
    for method in methods:
        torch.manual_seed(args.seed)  # the reward head's initialization: the same for every method
        summarizer, tokenizer, _ = checkpoint.load_gpt(summarizer_from)
        ref_summarizer, _, _ = checkpoint.load_gpt(summarizer_from)
        reward_model = (load_reward_model(reward_from)[0] if reward_from is not None
                        else RewardModel.from_gpt(checkpoint.load_gpt(init_from)[0]))
        # --generate_max_len is z's budget (the summarizer's generation), the responses the
        # reward model reads are reward_response_max_len's.
        response_max_len = reward_response_max_len(args, reward_model.config.block_size)
        settings = plus_trainer.PlusSettings(method=method, prompt_max_len=args.prompt_max_len,
                                             response_max_len=response_max_len, reward_warmup_ratio=warmup_ratio,
                                             **summarizer_input)
        config = {"init_from": str(init_from), "summarizer_from": str(summarizer_from),
                  "reward_from": None if reward_from is None else str(reward_from), "dataset": args.dataset,
                  "population": population, "method": method, "on_bad_record": args.on_bad_record,
                  "grounding_replay": args.grounding_replay or 0, "reward_warmup_ratio": warmup_ratio,
                  "summarizer_input": summarizer_input, "summarizer_rendering": summarizer_rendering(args, tokenizer),
                  "n_records": len(records), "n_users": args.n_users or PLUS_WORLD_USERS, "seed": args.seed,
                  "prompt_max_len": args.prompt_max_len, "response_max_len": response_max_len,
                  "generate_max_len": args.generate_max_len, "ppo": {f.name: getattr(cfg, f.name) for f in fields(cfg)}}
        out_dir = Path(args.out_dir) / "plus" / population / method
        if method in ("plus", "untrained"):
            print0(ctx, f"[plus] {method}: the summarizer reads {config['summarizer_rendering']}")
        if replay is None:  # the same comparisons for every method
            replay = plus_replay(args, reward_from, cfg.max_steps, response_max_len)
        last = plus_trainer.train(summarizer=summarizer, ref_summarizer=ref_summarizer, reward_model=reward_model,
                                  tokenizer=tokenizer, records=records, out_dir=out_dir, config=config, cfg=cfg,
                                  settings=settings, ctx=ctx, replay=replay)
        result.update({f"{method}_{k}": v for k, v in last.items() if k in ("rm_accuracy", "summarizer_reward")})
    return result


def summarizer_rendering(args, tokenizer) -> str:
    """How the summarizer's prompt is rendered, in words, for config.json and the log."""
    key = args.input_key or "context"
    if not args.apply_chat_template:
        return f"the plain {key!r} text"
    return f"{key!r} in " + ("the policy tokenizer's chat template" if tokenizer.chat_template is not None
                             else "the built-in chat format (the policy's tokenizer has no chat template)")


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
            # --stage ppo --train_reward: the PLUS authors' fork's spelling of --stage plus --method plus
            stage = "plus" if args.train_reward else stage
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
