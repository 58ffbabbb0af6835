"""Datasets: reading records from files, the Stiennon query format, tokenization, padding.

Everything that turns text on disk (or the built-in world) into tensors lives here, so
every stage reads data the same way and fails the same way on bad input:

* `read_records` yields `(line, record)` from JSONL, JSON (an array of objects) or CSV.
  A malformed record raises `DataError("file:line: what is wrong")` before any training
  step; with `on_bad_record="skip"` it is skipped and counted instead (DESIGN.md).
* The query format of Stiennon et al. 2020 (and of OpenAI's TL;DR files):
  "SUBREDDIT: r/{subreddit}\\n\\nTITLE: {title}\\n\\nPOST: {post}\\n\\nTL;DR:".
* Prompts are cut to `prompt_max_len` tokens at a newline (Huang et al. 2024): for the
  query format the end of the post is dropped paragraph by paragraph, keeping the header
  and the "TL;DR:" cue; a free-form prompt keeps its end (the part next to the answer).
* Responses get a leading space (they follow "TL;DR:") and an EOS token, so the policy
  learns to stop; the loss is on response tokens only (`labels` = -100 on the prompt).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

QUERY_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
IGNORE_INDEX = -100  # label value that the loss skips (prompt and padding positions)
FORMATS = (".jsonl", ".json", ".csv")


class DataError(ValueError):
    """Bad input, reported as `file:line: problem`."""


# ----------------------------------------------------------------------------------------
# Reading records

def read_records(path, on_error: Callable[[DataError], None] | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) from a .jsonl, .json (array of objects) or .csv file.

    A bad JSONL line (invalid JSON, not an object, undecodable bytes) goes to `on_error`
    (default: raise) and reading goes on; a problem that makes the rest of the file
    unreadable (a broken JSON array, bad bytes in a CSV) always raises."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown format {suffix!r} (expected one of {', '.join(FORMATS)})")
    raw = path.read_bytes()
    if suffix == ".jsonl":
        yield from _jsonl(path, raw, on_error or _raise)
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: undecodable bytes (not UTF-8)") from None
    yield from (_json_array(path, text) if suffix == ".json" else _csv(path, text))


def _raise(error: DataError) -> None:
    raise error


def _jsonl(path, raw: bytes, on_error) -> Iterator[tuple[int, dict]]:
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            on_error(DataError(f"{path}:{line_no}: undecodable bytes (not UTF-8)"))
            continue
        except json.JSONDecodeError as e:
            on_error(DataError(f"{path}:{line_no}: invalid JSON ({e.msg})"))
            continue
        if not isinstance(record, dict):
            on_error(DataError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}"))
            continue
        yield line_no, record


def _json_array(path, text) -> Iterator[tuple[int, dict]]:
    # Decode element by element so every record knows the line it starts on.
    decoder = json.JSONDecoder()
    line_of = lambda pos: text.count("\n", 0, pos) + 1
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise DataError(f"{path}:{line_of(pos)}: expected a JSON array of objects")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DataError(f"{path}:{line_of(pos)}: invalid JSON (unterminated array)")
        if text[pos] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_of(pos)}: expected a JSON object, got {type(record).__name__}")
        yield line_of(pos), record
        pos = end


def _csv(path, text) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for record in reader:
        if None in record:  # more fields than the header names
            raise DataError(f"{path}:{reader.line_num}: more fields than the header has")
        yield reader.line_num, record


@dataclass
class BadRecords:
    """Counts records skipped under `on_bad_record="skip"`, by problem."""
    policy: str = "error"
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self):
        if self.policy not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {self.policy!r}")

    def handle(self, error: DataError) -> None:
        if self.policy == "error":
            raise error
        self.skipped[str(error).split(": ", 1)[-1]] += 1

    @property
    def total(self) -> int:
        return sum(self.skipped.values())


def get_text(record: dict, key: str, where: str) -> str:
    """record[key] as a non-empty string, or a DataError naming the place and problem."""
    if key not in record:
        raise DataError(f"{where}: missing key {key!r} (record has: {', '.join(sorted(record)) or 'no keys'})")
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: {key!r} is empty")
    return value


def load_file_records(
    path, parse: Callable[[dict, str], object], bad: BadRecords, limit: int | None = None
) -> list:
    """Parse every record of a file with `parse(record, "file:line")`, applying the
    bad-record policy; raises if nothing usable remains."""
    out = []
    for line, record in read_records(path, on_error=bad.handle):
        try:
            out.append(parse(record, f"{path}:{line}"))
        except DataError as e:
            bad.handle(e)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{path}: no usable records")
    return out


# ----------------------------------------------------------------------------------------
# Prompts and summaries

def format_query(subreddit: str, title: str, post: str) -> str:
    return QUERY_FORMAT.format(subreddit=subreddit, title=title, post=post)


def truncate_query(tokenizer, subreddit: str, title: str, post: str, max_tokens: int) -> list[int]:
    """Token ids of the query, shortened to `max_tokens` by dropping the end of the post:
    whole paragraphs first (at newlines), then words if one paragraph is still too long."""
    ids = tokenizer.encode(format_query(subreddit, title, post))
    pieces = post.split("\n")
    while len(ids) > max_tokens and len(pieces) > 1:
        pieces.pop()
        ids = tokenizer.encode(format_query(subreddit, title, "\n".join(pieces).rstrip()))
    words = "\n".join(pieces).split(" ")
    while len(ids) > max_tokens and len(words) > 1:
        words = words[: max(1, len(words) * 7 // 8)]  # shrink geometrically: few re-encodes
        ids = tokenizer.encode(format_query(subreddit, title, " ".join(words)))
    if len(ids) > max_tokens:
        raise DataError(f"the query header alone is longer than prompt_max_len={max_tokens} tokens")
    return ids


def truncate_prompt(tokenizer, prompt: str, max_tokens: int) -> list[int]:
    """A free-form prompt keeps its end: drop whole lines from the start while too long,
    then tokens."""
    ids = tokenizer.encode(prompt)
    lines = prompt.split("\n")
    while len(ids) > max_tokens and len(lines) > 1:
        lines.pop(0)
        ids = tokenizer.encode("\n".join(lines))
    return ids[-max_tokens:]


def prompt_ids(tokenizer, record: dict, input_key: str | None, max_tokens: int, where: str) -> list[int]:
    """The prompt of a record: the Stiennon query when the record has `subreddit`, `title`
    and `post` (OpenAI TL;DR files) and no `input_key` is given, else record[input_key]."""
    if input_key is None:
        if all(k in record for k in ("subreddit", "title", "post")):
            fields = {k: get_text(record, k, where) for k in ("post", "title")}
            return truncate_query(tokenizer, str(record["subreddit"]), fields["title"], fields["post"], max_tokens)
        input_key = "prompt"
    return truncate_prompt(tokenizer, get_text(record, input_key, where), max_tokens)


def response_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """" " + text + EOS, cut to max_tokens (the EOS is kept only if it fits)."""
    return (tokenizer.encode(" " + text.strip()) + [tokenizer.eos_id])[:max_tokens]


# ----------------------------------------------------------------------------------------
# Supervised fine-tuning examples

@dataclass
class SFTExample:
    prompt: list[int]     # query tokens
    response: list[int]   # summary tokens followed by EOS


def load_sft_examples(
    dataset: str,
    tokenizer,
    split: str = "train",
    n: int | None = None,
    prompt_max_len: int = 256,
    generate_max_len: int = 48,
    input_key: str | None = None,
    output_key: str = "summary",
    on_bad_record: str = "error",
    seed: int = 0,
) -> tuple[list[SFTExample], BadRecords]:
    """SFT pairs from the built-in world (`dataset="synthetic"`) or a file."""
    bad = BadRecords(on_bad_record)
    if dataset == "synthetic":
        from plus.synthetic import World

        posts = World(seed).posts(split, n)
        examples = [
            SFTExample(truncate_query(tokenizer, p.subreddit, p.title, p.post, prompt_max_len),
                       response_ids(tokenizer, p.summary, generate_max_len))
            for p in posts
        ]
        return examples, bad

    def parse(record, where):
        return SFTExample(prompt_ids(tokenizer, record, input_key, prompt_max_len, where),
                          response_ids(tokenizer, get_text(record, output_key, where), generate_max_len))

    return load_file_records(dataset, parse, bad, limit=n), bad


def collate_sft(examples: list[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response. The model predicts token t+1 at position t, so
    `labels` are the inputs shifted left by one, with IGNORE_INDEX wherever the next token
    is part of the prompt or is padding: the loss is on response tokens only."""
    T = max(len(e.prompt) + len(e.response) for e in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        seq = e.prompt + e.response
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        # position len(prompt)-1 predicts the first response token, ... the last predicts nothing
        labels[i, len(e.prompt) - 1 : len(seq) - 1] = torch.tensor(e.response)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ----------------------------------------------------------------------------------------
# Pretraining: the corpus as one token stream cut into equal blocks

def pretrain_blocks(tokenizer, texts, block_size: int, n_blocks: int) -> torch.Tensor:
    """[n_blocks, block_size + 1] windows of the EOS-separated token stream of `texts`
    (each window's last token is the target of its second-to-last)."""
    need = n_blocks * block_size + 1
    stream: list[int] = []
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == 256:
            for ids in tokenizer.encode_batch(batch):
                stream.extend(ids + [tokenizer.eos_id])
            batch = []
            if len(stream) >= need:
                break
    for ids in tokenizer.encode_batch(batch) if batch else []:
        stream.extend(ids + [tokenizer.eos_id])
    if len(stream) < need:
        raise DataError(f"pretraining corpus too small: {len(stream)} tokens for {n_blocks} blocks of {block_size}")
    flat = torch.tensor(stream[:need], dtype=torch.long)
    return torch.stack([flat[i * block_size : (i + 1) * block_size + 1] for i in range(n_blocks)])
