"""Datasets: reading records from files, the Stiennon query format, tokenization, padding.

Everything that turns text on disk (or the built-in world) into tensors lives here, so
every stage reads data the same way and fails the same way on bad input:

* `read_records` yields `(location, record)` from JSONL, JSON (an array of objects) or
  CSV; the location is "file:line", or "file: record N (line L)" inside a JSON array. A
  malformed record raises `DataError("<location>: what is wrong")` before any training
  step; with `on_bad_record="skip"` it is skipped and counted instead (ARCHITECTURE.md).
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
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

QUERY_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
IGNORE_INDEX = -100  # label value that the loss skips (prompt and padding positions)
# The TL;DR setting, every reader's default: a query cut to 200 tokens and a summary of at
# most 48 (Stiennon et al. keep summaries under 48 tokens) fit the demo model's 256 positions.
PROMPT_MAX_LEN = 200
RESPONSE_MAX_LEN = 48
FORMATS = (".jsonl", ".json", ".csv")


def length_caps(prompt_lengths: list[int], response_lengths: list[int], block_size: int,
                prompt_max_len: int | None = None, generate_max_len: int | None = None) -> tuple[int, int]:
    """(prompt_max_len, generate_max_len) for a file whose prompts and responses (each with
    its EOS) have these token counts. A cap given is kept; one left unset is the data's
    longest, within what the model's block_size leaves beside the other cap. When neither
    is given and the longest prompt and response do not fit together, the prompt keeps up
    to half of block_size (less where no prompt needs it), the response cap is the rest,
    and the prompt cap what the response cap leaves: nothing is cut that fits."""
    longest_prompt, longest_response = max(prompt_lengths, default=1), max(response_lengths, default=1)
    reserved = prompt_max_len if prompt_max_len is not None else min(longest_prompt, block_size // 2)
    if generate_max_len is None:
        generate_max_len = max(1, min(longest_response, block_size - reserved))
    if prompt_max_len is None:
        prompt_max_len = max(1, min(longest_prompt, block_size - generate_max_len))
    return prompt_max_len, generate_max_len


class DataError(ValueError):
    """Bad input, reported as `file:line: problem`."""


# ----------------------------------------------------------------------------------------
# Reading records

def read_records(path, on_error: Callable[[DataError], None] | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (location, record) from a .jsonl, .json (array of objects) or .csv file; the
    location is "file:line" for JSONL and CSV, "file: record N (line L)" inside a JSON
    array (an array written on one line would otherwise put every record on line 1).

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


def _jsonl(path, raw: bytes, on_error) -> Iterator[tuple[str, dict]]:
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
        yield f"{path}:{line_no}", record


def _json_array(path, text) -> Iterator[tuple[str, dict]]:
    # Decode element by element so every record knows the line it starts on.
    decoder = json.JSONDecoder()
    line_of = lambda pos: text.count("\n", 0, pos) + 1
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise DataError(f"{path}:{line_of(pos)}: expected a JSON array of objects")
    pos += 1
    index = 0
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
        index += 1
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {index} (line {line_of(pos)}): expected a JSON object, "
                            f"got {type(record).__name__}")
        yield f"{path}: record {index} (line {line_of(pos)})", record
        pos = end


def _csv(path, text) -> Iterator[tuple[str, dict]]:
    # A quoted cell may span lines: a record's location is the line it starts on. Blank rows
    # are skipped and missing trailing cells are None, as csv.DictReader reads them.
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    while header is not None:
        start = reader.line_num + 1
        row = next(reader, None)
        if row is None:
            return
        if not row:
            continue
        if len(row) > len(header):
            raise DataError(f"{path}:{start}: more fields than the header has")
        yield f"{path}:{start}", dict(zip(header, row + [None] * (len(header) - len(row))))


@dataclass
class BadRecords:
    """The bad records of a file, by problem, with the first few locations.

    Under "error" a file's reader (`load_file_records`) still reads on (the whole file,
    unless a limit on the records stops it sooner), so the error it raises at the end
    names the first bad record and says how many there are among those read; under
    "skip" they are left out and reported."""
    policy: str = "error"
    skipped: Counter = field(default_factory=Counter)
    locations: list = field(default_factory=list)  # the first SHOWN "location: problem" lines

    SHOWN = 5

    def __post_init__(self):
        if self.policy not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {self.policy!r}")

    def handle(self, error: DataError) -> None:
        """Record one bad record; with policy "error", raise it now."""
        self.count(error)
        if self.policy == "error":
            raise error

    def count(self, error: DataError) -> None:
        """Record one bad record and go on (the caller decides when to stop)."""
        problem = _LOCATION.sub("", str(error), count=1)
        self.skipped[problem] += 1
        if len(self.locations) < self.SHOWN:
            self.locations.append(str(error))

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: how many were skipped, by problem, and where the first ones are."""
        return (f"skipped {self.total} bad records ({'; '.join(f'{n} x {p}' for p, n in self.skipped.items())}); "
                f"first: {' | '.join(self.locations)}")


# "file:12: " or "file: record 3 (line 1): " at the start of a DataError's message
_LOCATION = re.compile(r"^.*?(?::\d+|: record \d+ \(line \d+\)): ")


def get_value(record: dict, key: str, where: str, flag: str | None = None):
    """record[key], or a DataError naming the place, the keys the record has and the
    command-line `flag` that names another field, where one does."""
    if key not in record:
        fix = f"; set {flag}" if flag else ""
        raise DataError(f"{where}: missing key {key!r} (record has: {', '.join(sorted(record)) or 'no keys'}){fix}")
    return record[key]


def get_typed(record: dict, key: str, kind: type, where: str):
    """record[key] of type `kind`, or a DataError naming the place and problem."""
    value = get_value(record, key, where)
    if not isinstance(value, kind):
        raise DataError(f"{where}: {key!r} should be a {kind.__name__}, got {type(value).__name__}")
    return value


def get_text(record: dict, key: str, where: str, flag: str | None = None) -> str:
    """record[key] as a non-empty string, or a DataError naming the place and problem
    (and, for a missing key, the `flag` that names another field)."""
    value = get_value(record, key, where, flag)
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} should be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: {key!r} is empty")
    return value


def load_file_records(
    path, parse: Callable[[dict, str], object], bad: BadRecords, limit: int | None = None
) -> list:
    """Parse the records of a file with `parse(record, location)`; raises if nothing
    usable remains.

    Without `limit` the whole file is read whatever happens, so under the "error" policy
    the error names the first bad record and says how many of the file's records are bad.
    With `limit` reading stops at the `limit`-th good record: what lies beyond is never
    parsed, and a bad record there stops nothing (the count is of the records read)."""
    out, seen, found = [], [0], []

    def bad_record(error: DataError) -> None:
        found.append(error)
        bad.count(error)

    def on_reader_error(error: DataError) -> None:  # a line the reader could not turn into a record
        seen[0] += 1
        bad_record(error)

    whole_file = True
    for where, record in read_records(path, on_error=on_reader_error):
        if limit is not None and len(out) >= limit:
            whole_file = False
            break
        seen[0] += 1
        try:
            out.append(parse(record, where))
        except DataError as e:
            bad_record(e)
    if bad.policy == "error" and found:
        of = f"the file's {seen[0]} records" if whole_file else f"the first {seen[0]} records"
        raise DataError(f"{found[0]} ({len(found)} of {of} are bad; --on_bad_record skip leaves them out)")
    if not out:
        raise DataError(f"{path}: no usable records")
    return out


# ----------------------------------------------------------------------------------------
# Prompts and summaries

def format_query(subreddit: str, title: str, post: str) -> str:
    return QUERY_FORMAT.format(subreddit=subreddit, title=title, post=post)


def bos_prefix(tokenizer) -> list[int]:
    """[BOS] for a tokenizer whose sequences begin with one (`Tokenizer.adds_bos`: Llama's),
    else []: what goes before the first token of a sequence built from plain text, as the
    model's own tokenizer puts it there. The built-in world's tokenizer has none."""
    return [tokenizer.bos_id] if getattr(tokenizer, "adds_bos", False) else []


def truncate_query(tokenizer, subreddit: str, title: str, post: str, max_tokens: int, bos: bool = True) -> list[int]:
    """Token ids of the query, shortened to `max_tokens` by dropping the end of the post:
    whole paragraphs first (at newlines), then words if one paragraph is still too long.
    The sequence starts with the tokenizer's BOS (`bos_prefix`), counted in max_tokens;
    bos=False for a query that follows other tokens."""
    prefix = bos_prefix(tokenizer) if bos else []
    max_tokens -= len(prefix)
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
        raise DataError(f"the query header alone is longer than prompt_max_len={max_tokens + len(prefix)} tokens")
    return prefix + ids


def truncate_prompt(tokenizer, prompt: str, max_tokens: int, bos: bool = True) -> list[int]:
    """A free-form prompt keeps its end: drop whole lines from the start while too long,
    then tokens. The sequence starts with the tokenizer's BOS (`bos_prefix`), which is
    kept and counted in max_tokens; bos=False for a prompt that follows other tokens."""
    prefix = bos_prefix(tokenizer) if bos else []
    max_tokens -= len(prefix)
    ids = tokenizer.encode(prompt)
    lines = prompt.split("\n")
    while len(ids) > max_tokens and len(lines) > 1:
        lines.pop(0)
        ids = tokenizer.encode("\n".join(lines))
    return prefix + (ids[-max_tokens:] if max_tokens > 0 else [])


def prompt_ids(tokenizer, record: dict, input_key: str | None, max_tokens: int, where: str) -> list[int]:
    """The prompt of a record: the Stiennon query when the record has `subreddit`, `title`
    and `post` (OpenAI TL;DR files) and no `input_key` is given, else record[input_key];
    from the tokenizer's BOS where it adds one."""
    if input_key is None:
        if all(k in record for k in ("subreddit", "title", "post")):
            fields = {k: get_text(record, k, where) for k in ("post", "title")}
            return truncate_query(tokenizer, str(record["subreddit"]), fields["title"], fields["post"], max_tokens)
        input_key = "prompt"
    return truncate_prompt(tokenizer, get_text(record, input_key, where, "--input_key"), max_tokens)


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
    prompt_max_len: int = PROMPT_MAX_LEN,
    generate_max_len: int = RESPONSE_MAX_LEN,
    input_key: str | None = None,
    output_key: str = "summary",
    on_bad_record: str = "error",
    seed: int = 0,
    references_per_post: int = 1,
) -> tuple[list[SFTExample], BadRecords]:
    """SFT pairs from the built-in world (`dataset="synthetic"`) or a file.

    The world can give each of its n posts `references_per_post` TL;DRs by different
    writers (the post's own first, `plus.world.other_references`): n x k examples,
    the k of a post one after the other, sharing one prompt."""
    bad = BadRecords(on_bad_record)
    if dataset == "synthetic":
        from plus.world import World, other_references

        examples = []
        for p in World(seed).posts(split, n):
            prompt = truncate_query(tokenizer, p.subreddit, p.title, p.post, prompt_max_len)
            for summary in [p.summary] + other_references(p, references_per_post - 1):
                examples.append(SFTExample(prompt, response_ids(tokenizer, summary, generate_max_len)))
        return examples, bad
    if references_per_post != 1:
        raise ValueError(f"references_per_post={references_per_post} applies to the built-in world; a file's "
                         f"posts have the summaries it holds")

    def parse(record, where):
        return SFTExample(prompt_ids(tokenizer, record, input_key, prompt_max_len, where),
                          response_ids(tokenizer, get_text(record, output_key, where, "--output_key"), generate_max_len))

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


def response_tokens(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The response tokens of `collate_sft` rows, as the reward model's surprise term reads
    them: (at [M, 2] the (row, column) that predicts each, ids [M] the tokens, owner [M]
    the row), from the labels [B, T] (IGNORE_INDEX everywhere else)."""
    at = (labels != IGNORE_INDEX).nonzero()                                 # [M, 2], row-major
    return at, labels[at[:, 0], at[:, 1]], at[:, 0]


# ----------------------------------------------------------------------------------------
# Pretraining: the corpus as one token stream cut into equal blocks

def pretrain_blocks(tokenizer, texts, block_size: int, n_blocks: int) -> torch.Tensor:
    """[n_blocks, block_size + 1] windows of the EOS-separated token stream of `texts`
    (each window's last token is the target of its second-to-last); each text starts with
    the tokenizer's BOS where it adds one (`bos_prefix`), as the model read its documents."""
    need = n_blocks * block_size + 1
    bos = bos_prefix(tokenizer)
    stream: list[int] = []
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == 256:
            for ids in tokenizer.encode_batch(batch):
                stream.extend(bos + ids + [tokenizer.eos_id])
            batch = []
            if len(stream) >= need:
                break
    for ids in tokenizer.encode_batch(batch) if batch else []:
        stream.extend(bos + ids + [tokenizer.eos_id])
    if len(stream) < need:
        raise DataError(f"pretraining corpus too small: {len(stream)} tokens for {n_blocks} blocks of {block_size}")
    flat = torch.tensor(stream[:need], dtype=torch.long)
    return torch.stack([flat[i * block_size : (i + 1) * block_size + 1] for i in range(n_blocks)])


# ----------------------------------------------------------------------------------------
# Preference pairs: the record every preference format becomes (plus/preferences.py reads them)

@dataclass
class PreferencePair:
    prompt: list[int]       # query tokens
    chosen: list[int]       # preferred response tokens, ending with EOS (if it fit)
    rejected: list[int]     # the other response, same form
    margin: float = 0.0     # how much chosen should win by (bradley_terry_loss margin)
    gold: float | None = None  # gold judge: 1.0 chosen really better, 0.0 worse, 0.5 tie; None unknown
    source: str = ""        # where the pair came from ("file:line", "synthetic:train:7")



def _pack_rows(rows: list[tuple[list[int], list[list[int]]]], pad_id: int):
    """(input_ids, segment_ids [R, T], starts {(row, k): first column of response k}) for
    rows of (prompt, [response 1, response 2, ...]): the `segment_ids` layout of plus/gpt.py."""
    T = max(len(prompt) + sum(map(len, responses)) for prompt, responses in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    segment_ids = torch.full((len(rows), T), -1, dtype=torch.long)
    starts: dict[tuple[int, int], int] = {}
    for r, (prompt, responses) in enumerate(rows):
        input_ids[r, :len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        segment_ids[r, :len(prompt)] = 0
        col = len(prompt)
        for k, response in enumerate(responses, start=1):
            if not response:
                raise ValueError(f"an empty response to a prompt of {len(prompt)} tokens "
                                 f"(a response has at least its EOS)")
            input_ids[r, col:col + len(response)] = torch.tensor(response, dtype=torch.long)
            segment_ids[r, col:col + len(response)] = k
            starts[(r, k)] = col
            col += len(response)
    return input_ids, segment_ids, starts


def _predicted_at(row: int, prompt_len: int, start: int, n: int) -> list[tuple[int, int]]:
    """The (row, column) whose output predicts each of the n tokens of a response packed at
    `start`: the first at the prompt's last column (shared by every response of the row),
    token j > 0 at the column of token j-1 of the same response (its own segment)."""
    return [(row, prompt_len - 1)] + [(row, start + j - 1) for j in range(1, n)]


def collate_sft_packed(examples: list[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """SFT examples packed one row per distinct prompt (the prompt once, then each of its
    responses): several references of one post cost one prompt. The loss is the same as
    `collate_sft`'s rows one by one; because the first token of every response is predicted
    at the same column (the prompt's last), targets come as a list, not a shifted tensor.

    Returns input_ids, segment_ids [R, T]; labels_at [M, 2] (row, column) and labels [M]:
    the position that predicts each response token, and the token."""
    rows: list[tuple[list[int], list[list[int]]]] = []
    row_of_prompt: dict[tuple, int] = {}
    for e in examples:
        r = row_of_prompt.setdefault(tuple(e.prompt), len(rows))
        if r == len(rows):
            rows.append((e.prompt, []))
        rows[r][1].append(e.response)
    input_ids, segment_ids, starts = _pack_rows(rows, pad_id)
    labels_at, labels = [], []
    for r, (prompt, responses) in enumerate(rows):
        for k, response in enumerate(responses, start=1):
            labels_at += _predicted_at(r, len(prompt), starts[(r, k)], len(response))
            labels += response
    return {"input_ids": input_ids, "segment_ids": segment_ids,
            "labels_at": torch.tensor(labels_at, dtype=torch.long).view(-1, 2),
            "labels": torch.tensor(labels, dtype=torch.long)}


def group_by_prompt(pairs: list) -> list[list[int]]:
    """Indices of `pairs` (or SFT examples: anything with a `.prompt`) grouped by identical
    prompt, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(tuple(p.prompt), []).append(i)
    return list(groups.values())


# The share of a file's prompts SFT holds out for its eval loss when no --eval_dataset is given.
HELD_OUT_FRACTION = 0.1


def hold_out(examples: list, max_prompts: int, seed: int) -> tuple[list, list]:
    """(train, held out) examples: a tenth of the distinct prompts (at most `max_prompts`),
    each with all of its responses, drawn by a permutation of `seed`, so the eval loss is
    on prompts training never saw; nothing is held out of fewer than ten prompts."""
    groups = group_by_prompt(examples)
    k = min(max_prompts, int(len(groups) * HELD_OUT_FRACTION))
    held = set(torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))[:k].tolist())
    train = [examples[i] for g, members in enumerate(groups) if g not in held for i in members]
    return train, [examples[i] for g in sorted(held) for i in groups[g]]


def collate_shared_prompts(pairs: list[PreferencePair], pad_id: int) -> dict[str, torch.Tensor]:
    """Pairs packed one row per distinct prompt: the prompt once, then each distinct
    response to it once, then right padding (the `segment_ids` layout of plus/gpt.py).

    A reward is a function of (prompt, response) alone, so k comparisons of one post cost
    one prompt and their distinct responses instead of 2k prompt+response rows; the
    rewards, the loss and its gradient are those of the 2k rows scored one by one. (To
    score single (prompt, response) sequences, e.g. reference summaries, use
    `collate_sft`.)

    Returns
      input_ids, segment_ids [R, T]   0 on the prompt, k on the row's k-th response, -1 padding
      read_at [N, 2]                  (row, column) of each distinct response's last token
      chosen, rejected [B]            per pair, indices into the N responses
      margin [B]
      response_at [M, 2], response_ids [M], response_owner [M]
                                      every token of every distinct response: the
          position that predicts it, the token, and which of the N responses it is in
          (the reward's surprise term and the language-model loss read them)
      times_chosen [N]                how many pairs chose each response (the LM loss is
          on chosen responses, one chosen in two pairs counting twice)
    """
    rows: list[tuple[list[int], list[list[int]]]] = []      # (prompt, distinct responses)
    response_index: dict[tuple, int] = {}                   # (prompt, response) -> n
    where: list[tuple[int, int]] = []                       # n -> (row, k)
    row_of_prompt: dict[tuple, int] = {}

    def index(prompt: list[int], response: list[int]) -> int:
        key = (tuple(prompt), tuple(response))
        if key not in response_index:
            r = row_of_prompt.setdefault(key[0], len(row_of_prompt))
            if r == len(rows):
                rows.append((prompt, []))
            rows[r][1].append(response)
            response_index[key] = len(where)
            where.append((r, len(rows[r][1])))
        return response_index[key]

    chosen = [index(p.prompt, p.chosen) for p in pairs]
    rejected = [index(p.prompt, p.rejected) for p in pairs]
    input_ids, segment_ids, starts = _pack_rows(rows, pad_id)
    read_at = [(r, starts[(r, k)] + len(rows[r][1][k - 1]) - 1) for r, k in where]
    at, ids, owner = [], [], []
    for n, (r, k) in enumerate(where):
        prompt, response = rows[r][0], rows[r][1][k - 1]
        at += _predicted_at(r, len(prompt), starts[(r, k)], len(response))
        ids += response
        owner += [n] * len(response)
    return {
        "input_ids": input_ids, "segment_ids": segment_ids,
        "read_at": torch.tensor(read_at, dtype=torch.long).view(-1, 2),
        "chosen": torch.tensor(chosen, dtype=torch.long), "rejected": torch.tensor(rejected, dtype=torch.long),
        "margin": torch.tensor([p.margin for p in pairs], dtype=torch.float32),
        "response_at": torch.tensor(at, dtype=torch.long).view(-1, 2),
        "response_ids": torch.tensor(ids, dtype=torch.long),
        "response_owner": torch.tensor(owner, dtype=torch.long),
        "times_chosen": torch.bincount(torch.tensor(chosen, dtype=torch.long), minlength=len(where)),
    }


# ----------------------------------------------------------------------------------------
# PLUS records (Nam et al. 2025): a user's context, and comparisons on new prompts
#
# One record per (user, comparison), in the fields of the authors' data:
#   context            the user's past conversations as text (what the summarizer reads)
#   context_messages   the same as chat messages, ending with "Start your response with ##Summary"
#   reward_prompt, chosen, rejected
#                      the comparison that rewards the summarizer: log sigmoid(r(chosen | z) - r(rejected | z))
#   train_prompt, train_chosen, train_rejected
#                      the comparison the reward model is trained on, conditioned on the same z
#   eval_prompt, eval_chosen, eval_rejected
#                      a held-out comparison (the built-in world: chosen by the user's noiseless gold judge)
# and, optionally, `user_id` and `persona` (the built-in world writes them; a persona is
# the world's attributes joined by "+", e.g. "brief+feelings+formal", whose canonical
# description the oracle baseline reads) and the boolean `eval_contested`
# (the world's: whether the population's personas disagree on the eval pair; evaluation
# reports the two kinds apart where both occur). Every text field is a non-empty string;
# the three pairs must differ within themselves.

PLUS_TEXT_FIELDS = ("context", "reward_prompt", "chosen", "rejected", "train_prompt", "train_chosen",
                    "train_rejected", "eval_prompt", "eval_chosen", "eval_rejected")
PLUS_PAIRS = (("chosen", "rejected"), ("train_chosen", "train_rejected"), ("eval_chosen", "eval_rejected"))


@dataclass(frozen=True)
class PlusRecord:
    context: str
    context_messages: list[dict]  # [{"role", "content"}, ...]
    reward_prompt: str
    chosen: str
    rejected: str
    train_prompt: str
    train_chosen: str
    train_rejected: str
    eval_prompt: str
    eval_chosen: str
    eval_rejected: str
    user_id: str = ""
    persona: str = ""
    eval_contested: bool | None = None  # do the population's personas disagree on the eval pair?
    source: str = ""  # "file:line" or "synthetic:<user id>"


def parse_plus_record(record: dict, where: str) -> PlusRecord:
    """One PLUS record, checked field by field (a DataError names the place and problem)."""
    texts = {key: get_text(record, key, where) for key in PLUS_TEXT_FIELDS}
    messages = get_typed(record, "context_messages", list, where)
    if not messages:
        raise DataError(f"{where}: 'context_messages' is empty")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(f"{where}: context_messages[{i}] should be an object with string 'role' and 'content'")
    for a, b in PLUS_PAIRS:
        if texts[a].strip() == texts[b].strip():
            raise DataError(f"{where}: {a!r} and {b!r} are identical")
    optional = {key: get_text(record, key, where) for key in ("user_id", "persona") if key in record}
    if "persona" in optional:  # the world's attributes, "brief+feelings+formal": what the oracle reads
        from plus.world import Persona, SyntheticWorldError

        try:
            Persona(tuple(optional["persona"].split("+")))
        except SyntheticWorldError as e:
            raise DataError(f"{where}: 'persona': {e}") from None
    if "eval_contested" in record:
        optional["eval_contested"] = get_typed(record, "eval_contested", bool, where)
    return PlusRecord(context_messages=[{"role": m["role"], "content": m["content"]} for m in messages], **texts,
                      **optional, source=where)


def load_plus_records(path, on_bad_record: str = "error",
                      limit: int | None = None) -> tuple[list[PlusRecord], BadRecords]:
    """The PLUS records of a .jsonl / .json file (bad records: `file:line: problem`, or
    skipped and counted with on_bad_record="skip"). Not CSV: context_messages is a list."""
    if str(path).lower().endswith(".csv"):
        raise DataError(f"{path}: a PLUS file is .jsonl or .json (its context_messages is a list of messages, "
                        "which a CSV cell does not hold)")
    bad = BadRecords(on_bad_record)
    return load_file_records(path, parse_plus_record, bad, limit=limit), bad


_QUERY = re.compile(r"^SUBREDDIT: r/(.*)\n\nTITLE: (.*)\n\nPOST: ([\s\S]*)\n\nTL;DR:$")


def parse_query(text: str) -> tuple[str, str, str] | None:
    """(subreddit, title, post) of a prompt in the Stiennon query format, else None."""
    m = _QUERY.match(text)
    return None if m is None else (m.group(1), m.group(2), m.group(3))
