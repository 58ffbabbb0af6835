"""Generate summaries from a policy checkpoint.

    python sample.py --init_from runs/demo/sft --n 5              # world test posts
    python sample.py --init_from runs/demo/sft --prompt "SUBREDDIT: r/..."
    python sample.py --init_from runs/demo/sft --input my_posts.jsonl   # TL;DR-format records
    python sample.py --init_from models/Qwen2.5-0.5B-Instruct --prompt "Summarize: ..." --apply_chat_template
"""

from __future__ import annotations

import argparse
import sys

import torch

from plus import checkpoint, data, preferences
from plus.cli import ArgumentParser, print_error
from plus.generate import sample_texts


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--init_from", default="runs/demo/sft", help="policy checkpoint directory")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--n", type=int, default=3, help="summarize N posts of the world's test split")
    source.add_argument("--prompt", default=None,
                        help="one prompt; a typed \\n is a newline (the query format needs them)")
    source.add_argument("--input", default=None, help=".jsonl/.json/.csv file of posts")
    p.add_argument("--apply_chat_template", action="store_true",
                   help="--prompt is a user message in the checkpoint's chat template (tokenizer_config.json), "
                        "followed by the cue that opens the assistant's turn")
    p.add_argument("--input_key", default=None, help="prompt field of --input (default: subreddit/title/post)")
    p.add_argument("--max_samples", type=int, default=None, help="at most this many records of --input")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--prompt_max_len", type=int, default=None,
                   help="prompt tokens at most (default: what the model's block_size leaves beside "
                        f"--generate_max_len; the world's posts at most {data.PROMPT_MAX_LEN}, as in training)")
    p.add_argument("--generate_max_len", type=int, default=data.RESPONSE_MAX_LEN)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.apply_chat_template and args.prompt is None:
        p.error("--apply_chat_template applies to --prompt")
    try:
        model, tokenizer, _ = checkpoint.load_gpt(args.init_from, args.device)
        room = model.config.block_size - args.generate_max_len
        if room < 1:
            p.error(f"--generate_max_len {args.generate_max_len} leaves no room for a prompt in the model's "
                    f"block_size {model.config.block_size}")
        if args.prompt_max_len is None:
            world = args.prompt is None and args.input is None
            args.prompt_max_len = min(room, data.PROMPT_MAX_LEN) if world else room
        if args.prompt is not None:
            prompt = args.prompt.replace("\\n", "\n")
            if args.apply_chat_template:
                prompts = [preferences.chat_prompt_ids(tokenizer, [{"role": "user", "content": prompt}],
                                                       args.prompt_max_len, "--prompt")]
            else:
                if not prompt.rstrip().endswith("TL;DR:"):
                    print("note: the prompt does not end with 'TL;DR:', the cue the demo policy was trained to "
                          "summarize after", file=sys.stderr)
                prompts = [data.truncate_prompt(tokenizer, prompt, args.prompt_max_len)]
        elif args.input is not None:
            prompts = data.load_file_records(
                args.input, lambda r, where: data.prompt_ids(tokenizer, r, args.input_key, args.prompt_max_len, where),
                data.BadRecords("error"), limit=args.max_samples)
        else:
            from plus.world import World
            posts = World(args.seed).posts("test", args.n)
            prompts = [data.truncate_query(tokenizer, q.subreddit, q.title, q.post, args.prompt_max_len) for q in posts]
    except (data.DataError, checkpoint.CheckpointError) as e:
        print_error(str(e))
        return 1
    texts, ended, _ = sample_texts(model, tokenizer, prompts, args.generate_max_len, temperature=args.temperature,
                                   top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    for prompt, text, done in zip(prompts, texts, ended):
        print(tokenizer.decode(prompt))
        print(f"  ->{text}" + ("" if done else "  [no EOS]"))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
