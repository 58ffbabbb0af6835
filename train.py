"""Train one stage of the pipeline, or all of them in order.

    python train.py --stage all                       # the demo on the built-in world
    python train.py --stage sft --dataset my_tldr.jsonl --init_from runs/demo/pretrain
    torchrun --nproc_per_node=2 train.py --stage sft --max_steps 20

Stage X writes <out_dir>/X/ and, unless --init_from says otherwise, starts from the
stage before it under the same --out_dir (DESIGN.md). Flags follow OpenRLHF's names.
A flag left unset takes the stage's own default (see STAGE_DEFAULTS), so one command
line can drive `--stage all`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from plus import checkpoint, data
from plus.distributed import Dist, init, print0, teardown

STAGES = ("pretrain", "sft")  # in pipeline order; later stages join this list

# Per-stage defaults: the demo settings, sized for a 2-core CPU (see README, BENCHMARKS.md).
STAGE_DEFAULTS = {
    "pretrain": dict(learning_rate=2e-3, max_steps=300, train_batch_size=32, micro_train_batch_size=16,
                     warmup_ratio=0.05, max_len=256, eval_steps=100),
    "sft": dict(learning_rate=5e-4, max_steps=250, train_batch_size=32, micro_train_batch_size=16,
                warmup_ratio=0.05, max_len=256, eval_steps=50),
}
MODEL_DEFAULTS = dict(n_layer=4, n_head=4, n_embd=192, vocab_size=2048)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--stage", choices=STAGES + ("all",), required=True)
    p.add_argument("--out_dir", default="runs/demo", help="stage X writes <out_dir>/X")
    p.add_argument("--init_from", "--pretrain", dest="init_from", default=None,
                   help="checkpoint directory to start from (default: the previous stage under --out_dir)")
    p.add_argument("--dataset", default="synthetic", help="'synthetic' (the built-in world) or a .jsonl/.json/.csv file")
    p.add_argument("--eval_dataset", nargs="+", default=None, help="held-out files (default: the world's valid split)")
    p.add_argument("--input_key", default=None,
                   help="prompt field; default: the Stiennon query from subreddit/title/post, else 'prompt' "
                        "(pretrain: the text field, default 'text')")
    p.add_argument("--output_key", default="summary", help="SFT target field")
    p.add_argument("--on_bad_record", choices=("error", "skip"), default="error")
    # sizes and schedule (None -> the stage default)
    p.add_argument("--train_batch_size", type=int, default=None, help="global batch (all processes, all micro-steps)")
    p.add_argument("--micro_train_batch_size", type=int, default=None, help="per process per forward")
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--warmup_ratio", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--max_epochs", type=int, default=1)
    p.add_argument("--max_steps", type=int, default=None, help="optimizer steps (default: the stage's demo length)")
    p.add_argument("--max_len", type=int, default=None, help="pretrain block length; SFT prompt+response cap")
    p.add_argument("--prompt_max_len", type=int, default=200)
    p.add_argument("--generate_max_len", type=int, default=48)
    p.add_argument("--n_eval", type=int, default=128, help="held-out examples for the periodic eval loss")
    p.add_argument("--eval_steps", type=int, default=None, help="eval loss every N steps (0: never)")
    # the model (pretrain stage only: later stages read it from the checkpoint)
    p.add_argument("--model_family", choices=("gpt2", "llama"), default="gpt2")
    p.add_argument("--n_layer", type=int, default=None)
    p.add_argument("--n_head", type=int, default=None)
    p.add_argument("--n_kv_head", type=int, default=None)
    p.add_argument("--n_embd", type=int, default=None)
    p.add_argument("--vocab_size", type=int, default=None, help="BPE vocabulary trained for the world")
    p.add_argument("--tokenizer", default=None, help="a tokenizer.json to use instead of training one")
    # bookkeeping
    p.add_argument("--save_steps", type=int, default=0, help="also save every N steps (for --resume)")
    p.add_argument("--resume", action="store_true", help="continue the stage from its saved checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16", help="autocast dtype on CUDA (CPU runs fp32)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def stage_args(args: argparse.Namespace, stage: str) -> argparse.Namespace:
    """The flags for one stage: what the user set, else that stage's default."""
    merged = argparse.Namespace(**vars(args))
    for key, value in STAGE_DEFAULTS[stage].items():
        if getattr(merged, key) is None:
            setattr(merged, key, value)
    for key, value in MODEL_DEFAULTS.items():
        if getattr(merged, key) is None:
            setattr(merged, key, value)
    return merged


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Contradictions are errors, never silently ignored."""
    model_flags = [f for f in ("n_layer", "n_head", "n_kv_head", "n_embd", "vocab_size", "tokenizer")
                   if getattr(args, f) is not None]
    if args.stage not in ("pretrain", "all") and model_flags:
        parser.error(f"--{model_flags[0]} only applies to --stage pretrain (later stages read the model from --init_from)")
    if args.stage == "all" and args.init_from:
        parser.error("--init_from cannot be combined with --stage all (each stage starts from the one before)")
    if args.stage == "all" and args.resume:
        parser.error("--resume applies to one stage; name it with --stage")
    if args.stage == "pretrain" and args.init_from:
        parser.error("--stage pretrain starts from scratch; --init_from applies to later stages")
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
        from plus.synthetic import World
        world = World(args.seed)
        texts = lambda start: world.corpus(10 ** 9, start=start)  # noqa: E731  (lazy, unbounded)
    else:
        key = args.input_key or "text"
        rows = data.load_file_records(args.dataset, lambda r, where: data.get_text(r, key, where),
                                      data.BadRecords(args.on_bad_record))
        texts = lambda start: iter(rows[start:] + rows[:start])  # noqa: E731

    if args.resume or args.tokenizer:
        tokenizer = Tokenizer.load(out_dir / checkpoint.TOKENIZER if args.resume else args.tokenizer)
    else:
        t0 = time.perf_counter()
        tokenizer = Tokenizer.train(_take(texts(0), 20000), vocab_size=args.vocab_size)
        print0(ctx, f"[pretrain] trained a {tokenizer.vocab_size}-token BPE in {time.perf_counter() - t0:.1f}s")

    blocks = data.pretrain_blocks(tokenizer, texts(0), args.max_len, n_blocks + n_eval_blocks)
    train_blocks, eval_blocks = blocks[:n_blocks], blocks[n_blocks:]
    make = GPTConfig.gpt2_style if args.model_family == "gpt2" else GPTConfig.llama_style
    model_config = make(vocab_size=tokenizer.vocab_size, block_size=max(args.max_len, args.prompt_max_len + args.generate_max_len),
                        n_layer=args.n_layer, n_head=args.n_head, n_kv_head=args.n_kv_head, n_embd=args.n_embd)
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
    torch.manual_seed(args.seed)
    n_train = args.max_steps * args.train_batch_size if args.dataset == "synthetic" else None
    load = dict(prompt_max_len=args.prompt_max_len, generate_max_len=args.generate_max_len,
                input_key=args.input_key, output_key=args.output_key, on_bad_record=args.on_bad_record, seed=args.seed)
    examples, bad = data.load_sft_examples(args.dataset, tokenizer, split="train", n=n_train, **load)
    eval_examples = []
    for path in args.eval_dataset or ["synthetic"]:
        eval_examples += data.load_sft_examples(path, tokenizer, split="valid", n=args.n_eval, **load)[0]
    if bad.total:
        print0(ctx, f"[sft] skipped {bad.total} bad records: {dict(bad.skipped)}")
    too_long = max(len(e.prompt) + len(e.response) for e in examples)
    if too_long > model.config.block_size:
        raise ValueError(f"an example has {too_long} tokens, more than the model's block_size={model.config.block_size}")

    def get_batch(indices):
        return data.collate_sft([examples[i] for i in indices], tokenizer.pad_id)

    eval_batches = [data.collate_sft(eval_examples[i:i + args.micro_train_batch_size], tokenizer.pad_id)
                    for i in range(0, len(eval_examples), args.micro_train_batch_size)][ctx.rank::ctx.world_size]
    config = {"stage": "sft", "model": model.config.to_dict(), "init_from": str(init_from), "dataset": args.dataset,
              "prompt_max_len": args.prompt_max_len, "generate_max_len": args.generate_max_len}
    return sft.train(stage="sft", model=model, tokenizer=tokenizer, dataset_size=len(examples), get_batch=get_batch,
                     eval_batches=eval_batches, out_dir=out_dir, ctx=ctx, args=args, config=config)


RUNNERS = {"pretrain": run_pretrain, "sft": run_sft}


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
            result = RUNNERS[stage](stage_args(args, stage), ctx)
            print0(ctx, f"[{stage}] done in {time.perf_counter() - t0:.0f}s: "
                        + ", ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float)))
    except (data.DataError, checkpoint.CheckpointError, ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
