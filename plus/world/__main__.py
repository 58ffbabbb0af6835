"""The world's command line: `python -m plus.world --export DIR` writes its JSONL files
(export.py), `--export_plus DIR --population p2` a population's users in the PLUS format, `--show N` prints example posts with their references, `--calibrate`
recomputes LABELER_TAU (comparisons.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from plus.world.comparisons import TRAIN_SUMMARIES_PER_POST, calibrate_labeler_tau
from plus.world.export import export, export_plus
from plus.world.judge import gold_score
from plus.world.posts import World
from plus.world.references import TRAIN_REFERENCES_PER_POST, complete_summary
from plus.world.users import POPULATIONS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plus.world",
                                     description="The built-in summarization world: export, show, calibrate.")
    parser.add_argument("--export", metavar="DIR", help="write the world's JSONL files to DIR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_valid", type=int, default=200)
    parser.add_argument("--n_test", type=int, default=200)
    parser.add_argument("--n_comparisons", type=int, default=2000)
    parser.add_argument("--summaries_per_post", type=int, default=TRAIN_SUMMARIES_PER_POST,
                        help="training comparisons: all pairs among this many summaries of each post")
    parser.add_argument("--references_per_post", type=int, default=TRAIN_REFERENCES_PER_POST,
                        help="train.jsonl: this many TL;DRs of each post, by different writers")
    parser.add_argument("--export_plus", "--export-plus", metavar="DIR",
                        help="write a population's users in the PLUS format (Nam et al. 2025) to DIR")
    parser.add_argument("--population", choices=tuple(POPULATIONS), default="p2", help="--export_plus: which users")
    parser.add_argument("--n_users", type=int, default=256, help="--export_plus: seen users (train)")
    parser.add_argument("--n_new_users", type=int, default=64, help="--export_plus: new users, in valid and in test")
    parser.add_argument("--show", type=int, metavar="N", help="print N example posts with their references")
    parser.add_argument("--calibrate", action="store_true", help="recompute LABELER_TAU")
    args = parser.parse_args(argv)
    if not (args.export or args.export_plus or args.show or args.calibrate):
        parser.error("nothing to do: give --export DIR, --export_plus DIR, --show N or --calibrate")
    for name in ("n_train", "n_valid", "n_test", "n_comparisons", "n_users", "n_new_users"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.summaries_per_post < 2:
        parser.error("--summaries_per_post must be >= 2")
    if args.references_per_post < 1:
        parser.error("--references_per_post must be >= 1")
    for flag, path in (("export", args.export), ("export_plus", args.export_plus)):
        if path and Path(path).exists() and not Path(path).is_dir():
            parser.error(f"--{flag} {path}: a file is there; the world is written into a directory")
    if args.show:
        for post in World(args.seed).posts("train", args.show):
            print(post.query(), post.summary)
            print(f"[gold {gold_score(post, post.summary):.2f}; complete: {complete_summary(post)}]\n")
    if args.calibrate:
        print(f"LABELER_TAU = {calibrate_labeler_tau(seed=args.seed):.4f}")
    if args.export:
        written = export(args.export, args.seed, args.n_train, args.n_valid, args.n_test, args.n_comparisons,
                         args.summaries_per_post, args.references_per_post)
        for name, count in written.items():
            print(f"wrote {Path(args.export) / name} ({count} records)")
    if args.export_plus:
        written = export_plus(args.export_plus, args.population, args.n_users, args.n_new_users, args.seed)
        for name, count in written.items():
            print(f"wrote {Path(args.export_plus) / name} ({count} records)")


if __name__ == "__main__":
    main()
