"""The world as files: TL;DR posts and comparisons in the OpenAI formats, for training on
the world from files (`python -m plus.world --export DIR`) or reading it outside Python;
and a population's users in the PLUS format of Nam et al. 2025 (`--export_plus DIR
--population p2`), the fields `plus.data.parse_plus_record` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from plus.world.comparisons import TRAIN_SUMMARIES_PER_POST, make_comparisons
from plus.world.posts import World
from plus.world.references import TRAIN_REFERENCES_PER_POST, other_references
from plus.world.tables import SyntheticWorldError
from plus.world.users import User, UserComparison, context_messages, context_text, make_users


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)


def export(out_dir: str | Path, seed: int = 0, n_train: int = 2000, n_valid: int = 200, n_test: int = 200,
           n_comparisons: int = 2000, summaries_per_post: int = TRAIN_SUMMARIES_PER_POST,
           references_per_post: int = TRAIN_REFERENCES_PER_POST) -> dict[str, int]:
    """Write the world in the OpenAI formats: train/valid/test.jsonl (filtered TL;DR:
    id, subreddit, title, post, summary; train.jsonl has up to `references_per_post`
    records of each post (`other_references` may find fewer writers), one per writer, the
    post's own reference first, as SFT on the world trains;
    valid and test one, the post's own) and comparisons_train.jsonl (n_comparisons, all
    pairs among `summaries_per_post` summaries of each post) / comparisons_valid.jsonl
    (n_comparisons // 4, one per post). Returns {file name: records}."""
    if references_per_post < 1:
        raise SyntheticWorldError(f"references_per_post must be >= 1, got {references_per_post}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = World(seed)
    written = {}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        k = references_per_post if split == "train" else 1
        records = [{"id": p.id, "subreddit": p.subreddit, "title": p.title, "post": p.post, "summary": summary}
                   for p in world.posts(split, n) for summary in [p.summary] + other_references(p, k - 1)]
        _write_jsonl(out / f"{split}.jsonl", records)
        written[f"{split}.jsonl"] = len(records)
    for split, n, per_post in (("train", n_comparisons, summaries_per_post), ("valid", n_comparisons // 4, 2)):
        records = make_comparisons(world, split, n, seed=seed, summaries_per_post=per_post)
        _write_jsonl(out / f"comparisons_{split}.jsonl", records)
        written[f"comparisons_{split}.jsonl"] = len(records)
    return written


# ---- PLUS: a population's users --------------------------------------------------------------
PLUS_SPLITS = ("train", "valid", "test")  # seen users; new users (valid, test)


def _ordered(c: UserComparison, choice: int) -> tuple[str, str]:
    """(chosen, rejected) of a comparison under a choice (0: the first summary)."""
    return c.summaries[choice], c.summaries[1 - choice]


def user_records(user: User) -> list[dict]:
    """A user's PLUS records: the held-out comparisons' first half rewards the summarizer and
    trains the reward model (`chosen`/`rejected` = `train_chosen`/`train_rejected`, as the
    user's noisy labeler chose, the same pair for both as the authors advise for
    stability), each paired with one of the second half as `eval_*` (as the persona's
    noiseless gold judge chose). So the evaluation pairs are on posts no training pair of
    the user is about; every record carries the user's whole context, and `eval_contested`
    says whether the population's personas disagree on its evaluation pair (pets has both
    kinds)."""
    records = []
    for train, held in zip(user.training_comparisons, user.evaluation_comparisons):
        chosen, rejected = _ordered(train, train.choice)
        eval_chosen, eval_rejected = _ordered(held, held.gold_choice)
        records.append({"user_id": user.id, "persona": user.persona.name,
                        "context": context_text(user.context), "context_messages": context_messages(user.context),
                        "reward_prompt": train.post.query(), "chosen": chosen, "rejected": rejected,
                        "train_prompt": train.post.query(), "train_chosen": chosen, "train_rejected": rejected,
                        "eval_prompt": held.post.query(), "eval_chosen": eval_chosen, "eval_rejected": eval_rejected,
                        "eval_contested": held.contested})
    return records


def export_plus(out_dir: str | Path, population: str, n_train: int = 256, n_new: int = 64,
                seed: int = 0) -> dict[str, int]:
    """Write `<population>_train.jsonl` (n_train seen users) and `<population>_valid.jsonl`,
    `<population>_test.jsonl` (n_new new users each), `user_records` of each user.
    Returns {file name: records}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in PLUS_SPLITS:
        users = make_users(population, split, n_train if split == "train" else n_new, seed=seed)
        records = [r for u in users for r in user_records(u)]
        _write_jsonl(out / f"{population}_{split}.jsonl", records)
        written[f"{population}_{split}.jsonl"] = len(records)
    return written
