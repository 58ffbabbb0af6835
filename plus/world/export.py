"""The world as files: TL;DR posts and comparisons in the OpenAI formats, for training on
the world from files (`python -m plus.world --export DIR`) or reading it outside Python.
"""

from __future__ import annotations

import json
from pathlib import Path

from plus.world.comparisons import TRAIN_SUMMARIES_PER_POST, make_comparisons
from plus.world.posts import World
from plus.world.references import TRAIN_REFERENCES_PER_POST, other_references
from plus.world.tables import SyntheticWorldError


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
