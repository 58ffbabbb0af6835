"""The command-line flags that say how to read a preference file, shared by the entry points
that read one (`train.py --stage rm` and `eval.py --stage rm`), so both accept the same
flags and read a file the same way.

    add_preference_args(parser)                  # --prompt_key, --chosen_key, ..., --domain
    preferences.load_preference_pairs(path, tokenizer, **preference_options(args, path))

The formats themselves (OpenAI comparisons, key-named fields, Human/Assistant transcripts,
DSP) are recognized in `plus/data.py`.
"""

from __future__ import annotations

import argparse

from plus.preferences import DSP_DOMAINS

# The flags add_preference_args adds: how a file's records are read, which a reward model's
# config.json records so that eval.py reads its held-out files the same way.
PREFERENCE_FLAGS = ("prompt_key", "chosen_key", "rejected_key", "margin_key", "apply_chat_template", "domain")


def add_preference_args(p: argparse.ArgumentParser) -> None:
    """Add the flags that describe a preference file's fields."""
    p.add_argument("--prompt_key", default=None,
                   help="prompt field of a preference file (default 'prompt', as --input_key's; a record "
                        "without one: the text before the last '\\n\\nAssistant:' of chosen/rejected transcripts)")
    p.add_argument("--chosen_key", default=None, help="preferred-response field (default 'chosen')")
    p.add_argument("--rejected_key", default=None, help="other-response field (default 'rejected')")
    p.add_argument("--margin_key", default=None, help="field with a per-pair margin for the Bradley-Terry loss")
    p.add_argument("--apply_chat_template", action="store_true",
                   help="render chat messages in the model's chat template (rm: the fields of a preference file; "
                        "ppo: the prompt field, a string being one user turn)")
    p.add_argument("--domain", choices=DSP_DOMAINS, default=None,
                   help="DSP data (Cheng et al. 2023): the domain whose response is preferred")


def preference_options(args: argparse.Namespace, dataset: str) -> dict:
    """preferences.load_preference_pairs keyword arguments for `dataset` ('synthetic' or a file) from
    the flags above and the caller's own --prompt_max_len, --generate_max_len, --seed and
    --on_bad_record."""
    options = dict(prompt_max_len=args.prompt_max_len, generate_max_len=args.generate_max_len, seed=args.seed,
                   # Two of the world's summaries may agree in their first generate_max_len tokens,
                   # which preference data may not (ARCHITECTURE.md, "Bad input"): such pairs are skipped
                   # and counted.
                   on_bad_record="skip" if dataset == "synthetic" else args.on_bad_record)
    if dataset != "synthetic":  # the key flags describe files; the world has one format
        options.update(prompt_key=args.prompt_key, chosen_key=args.chosen_key or "chosen",
                       rejected_key=args.rejected_key or "rejected", margin_key=args.margin_key,
                       apply_chat_template=args.apply_chat_template, domain=args.domain)
    return options
