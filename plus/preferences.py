"""Preference files: every format a reward model trains on, read into `PreferencePair`s.

Every supported format becomes the same `PreferencePair`: prompt tokens, the preferred
and the other response (each ending with EOS, as the policy writes them), so the reward
model sees exactly the sequences it will later score during PPO.

  "synthetic"                            the built-in world's comparisons (+ gold verdicts)
  {"info", "summaries", "choice"}        OpenAI comparisons (Stiennon et al. 2020)
  {prompt_key, chosen_key, rejected_key} generic files; values are strings, or chat
                                         messages with apply_chat_template=True; the
                                         prompt key is "prompt" unless given, as in SFT
  {chosen, rejected} transcripts         "\\n\\nHuman: ...\\n\\nAssistant: ..." (Anthropic HH),
                                         no prompt field: prompt = up to the last assistant cue
  {"query", "responses"} + domain        DSP (Cheng et al. 2023): the domain's response
                                         beats each of the other four -> 4 pairs
  {"text": [...], "score": [...]}        DSP converted: every ordered pair of the scores
                                         (bradley_terry.ranking_pairs)
"""

from __future__ import annotations

import os
import re

from plus.bradley_terry import ranking_pairs
from plus.data import (PROMPT_MAX_LEN, RESPONSE_MAX_LEN, BadRecords, DataError, PreferencePair, get_text, get_typed,
                       get_value, load_file_records, response_ids, truncate_prompt, truncate_query)


TRANSCRIPT_CUE = "\n\nAssistant:"  # in a Human/Assistant transcript the reply follows the last one
DSP_DOMAINS = ("academy", "business", "entertainment", "literature")
DSP_RESPONSES = DSP_DOMAINS + ("normal",)
# The built-in chat format (ChatML-style), for a tokenizer without a chat template of its
# own (the world's); a model's tokenizer_config.json brings its template (chat_prompt_ids).
CHAT_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"
CHAT_GENERATION_PROMPT = "<|im_start|>assistant\n"


def render_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Messages [{"role", "content"}] as text, one "<|im_start|>{role}\\n{content}<|im_end|>\\n"
    per turn, then "<|im_start|>assistant\\n" (the cue to answer) when `add_generation_prompt`."""
    text = "".join(CHAT_TURN.format(role=m["role"], content=m["content"]) for m in messages)
    return text + (CHAT_GENERATION_PROMPT if add_generation_prompt else "")


def chat_prompt_ids(tokenizer, messages: list[dict], max_tokens: int, where: str) -> list[int]:
    """A conversation as prompt ids, ending with the cue that opens the assistant's turn: in
    the tokenizer's own chat template where it has one (plus/chat_template.py), as the model
    was trained, else in `render_chat`'s built-in format. A longer prompt keeps its end."""
    if getattr(tokenizer, "chat_template", None) is None:
        return truncate_prompt(tokenizer, render_chat(messages), max_tokens)
    from plus.chat_template import ChatTemplateError

    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)[-max_tokens:]
    except ChatTemplateError as e:
        raise DataError(f"{where}: {e}") from None


def chat_reply_ids(tokenizer, messages: list[dict], reply: str, max_tokens: int, where: str) -> list[int]:
    """The assistant's `reply` to `messages` as the tokenizer's chat template writes it: the
    conversation with the reply as its last turn, rendered through the template, less the
    prompt that `chat_prompt_ids` renders (the conversation up to the generation prompt),
    and up to the end-of-sequence id that closes the turn (ChatML's "<|im_end|>", Llama 3's
    "<|eot_id|>"), where the policy stops; EOS is appended when the template writes none.
    So a chat model is scored on its reply as it would write it after the generation prompt,
    with no leading space and no text after its end of turn. The rest of the rendered text
    is encoded on its own, as the policy writes it after the prompt's last token (one
    encoding of the whole conversation may merge across that boundary). Cut to max_tokens."""
    from plus.chat_template import ChatTemplateError

    try:
        prompt = tokenizer.chat_template.render(messages, True)
        full = tokenizer.chat_template.render(messages + [{"role": "assistant", "content": reply}], False)
    except ChatTemplateError as e:
        raise DataError(f"{where}: {e}") from None
    # Where the template's generation prompt ends in layout the turn does not repeat (a
    # trailing newline), the reply starts where the two texts part.
    reply_ids = tokenizer.encode_rendered(full[len(os.path.commonprefix([prompt, full])):])
    end = reply_ids.index(tokenizer.eos_id) + 1 if tokenizer.eos_id in reply_ids else None
    reply_ids = reply_ids[:end] if end is not None else reply_ids + [tokenizer.eos_id]
    return reply_ids[:max_tokens]


def chat_messages(value, key: str, where: str) -> list[dict]:
    """`value` (record[key]) checked as a non-empty list of {"role", "content"} strings."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {key!r} should be a non-empty list of chat messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(f"{where}: {key}[{i}] should be an object with string 'role' and 'content'")
    return value


def chat_prompt(tokenizer, record: dict, key: str, max_tokens: int, where: str) -> list[int]:
    """record[key] as a prompt in the chat template (`chat_prompt_ids`, ending with the cue
    that opens the assistant's turn): chat messages as they are, a string as one user turn."""
    value = get_value(record, key, where, "--input_key")
    messages = ([{"role": "user", "content": get_text(record, key, where)}] if isinstance(value, str)
                else chat_messages(value, key, where))
    return chat_prompt_ids(tokenizer, messages, max_tokens, where)


# The assistant cue as public preference sets spell it: "\n\nAssistant:" (Anthropic HH),
# a single newline, or a Markdown heading "## Assistant:", at a line start (or the text's).
ASSISTANT_CUE = re.compile(r"(?:^|\n)[ \t]*(?:#+[ \t]*)?Assistant:")


def split_transcript(text: str, where: str) -> tuple[str, str]:
    """(prompt, reply) of a Human/Assistant transcript: the prompt runs up to and including
    the last assistant cue (ASSISTANT_CUE: "\\n\\nAssistant:", "\\nAssistant:",
    "## Assistant:", ...), the reply is everything after it; the text is kept as written."""
    cues = list(ASSISTANT_CUE.finditer(text))
    if not cues:
        raise DataError(f"{where}: no {TRANSCRIPT_CUE!r} (or '## Assistant:') to split the prompt from the response")
    end = cues[-1].end()
    return text[:end], text[end:]


class _PreferenceParser:
    """Turns one record into its preference pairs; a method per format (see above)."""

    def __init__(self, tokenizer, prompt_max_len, generate_max_len, prompt_key, chosen_key, rejected_key,
                 margin_key, apply_chat_template, domain):
        self.tokenizer = tokenizer
        self.prompt_max_len, self.generate_max_len = prompt_max_len, generate_max_len
        self.prompt_key, self.chosen_key, self.rejected_key = prompt_key, chosen_key, rejected_key
        self.margin_key, self.apply_chat_template, self.domain = margin_key, apply_chat_template, domain

    def __call__(self, record: dict, where: str) -> list[PreferencePair]:
        if self.domain is not None:
            return self.dsp(record, where)
        if "info" in record and "summaries" in record:
            return self.comparison(record, where)
        if "text" in record and "score" in record and self.chosen_key not in record:
            return self.scored_list(record, where)
        if "query" in record and "responses" in record:
            raise DataError(f"{where}: a DSP record (query, responses) needs domain= one of {', '.join(DSP_DOMAINS)}")
        return self.generic(record, where)

    def pair(self, prompt: list[int], chosen: str, rejected: str, where: str, margin: float = 0.0,
             gold: float | None = None, conversation: list[dict] | None = None) -> PreferencePair:
        """The pair of two replies to `prompt`: each " " + text + EOS (`response_ids`), or,
        given the `conversation` they answer and a tokenizer with a chat template, as that
        template writes the assistant's turn (`chat_reply_ids`)."""
        for name, text in (("chosen", chosen), ("rejected", rejected)):
            if not text.strip():
                raise DataError(f"{where}: the {name} response is empty")
        if conversation is not None and getattr(self.tokenizer, "chat_template", None) is not None:
            chosen_ids, rejected_ids = (chat_reply_ids(self.tokenizer, conversation, text, self.generate_max_len, where)
                                        for text in (chosen, rejected))
        else:
            chosen_ids = response_ids(self.tokenizer, chosen, self.generate_max_len)
            rejected_ids = response_ids(self.tokenizer, rejected, self.generate_max_len)
        if chosen_ids == rejected_ids:
            # Identical inputs carry no preference; a reward model can only tie them.
            cut = "" if chosen.strip() == rejected.strip() else f" in their first {self.generate_max_len} tokens"
            raise DataError(f"{where}: chosen and rejected responses are identical{cut}")
        return PreferencePair(prompt, chosen_ids, rejected_ids, margin, gold, where)

    def prompt(self, text: str) -> list[int]:
        return truncate_prompt(self.tokenizer, text, self.prompt_max_len)

    # ---- OpenAI comparisons and the synthetic world -----------------------------------
    def comparison(self, record: dict, where: str) -> list[PreferencePair]:
        info = get_typed(record, "info", dict, where)
        summaries = get_typed(record, "summaries", list, where)
        if len(summaries) != 2 or not all(isinstance(s, dict) for s in summaries):
            raise DataError(f"{where}: 'summaries' should be a list of two objects")
        texts = [get_text(s, "text", f"{where}: summaries[{i}]") for i, s in enumerate(summaries)]
        choice = get_value(record, "choice", where)
        if type(choice) is not int or choice not in (0, 1):
            raise DataError(f"{where}: 'choice' should be 0 or 1, got {choice!r}")
        gold = None
        if "gold_choice" in record:  # the synthetic world's gold judge (0, 1, or 0.5 for a tie)
            gold_choice = record["gold_choice"]
            if gold_choice not in (0, 1, 0.5) or isinstance(gold_choice, bool):
                raise DataError(f"{where}: 'gold_choice' should be 0, 1 or 0.5, got {gold_choice!r}")
            gold = 0.5 if gold_choice == 0.5 else float(gold_choice == choice)
        title, post = get_text(info, "title", f"{where}: info"), get_text(info, "post", f"{where}: info")
        try:
            prompt = truncate_query(self.tokenizer, get_text(info, "subreddit", f"{where}: info"), title, post,
                                    self.prompt_max_len)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        return [self.pair(prompt, texts[choice], texts[1 - choice], where, gold=gold)]

    # ---- generic chosen / rejected files ----------------------------------------------
    def field(self, record: dict, key: str, where: str, flag: str) -> str | list[dict]:
        """A string, or (with apply_chat_template) a checked list of chat messages; `flag`
        names the field on the command line."""
        value = get_value(record, key, where, flag)
        if isinstance(value, str):
            return get_text(record, key, where)
        if not isinstance(value, list):
            raise DataError(f"{where}: {key!r} should be a string or a list of chat messages, "
                            f"got {type(value).__name__}")
        if not self.apply_chat_template:
            raise DataError(f"{where}: {key!r} is a list of chat messages; pass apply_chat_template "
                            "(--apply_chat_template) to render them as text")
        if not value:
            raise DataError(f"{where}: {key!r} is empty")
        return chat_messages(value, key, where)

    def generic(self, record: dict, where: str) -> list[PreferencePair]:
        chosen = self.field(record, self.chosen_key, where, "--chosen_key")
        rejected = self.field(record, self.rejected_key, where, "--rejected_key")
        # The prompt field is "prompt" unless prompt_key says otherwise, as SFT's and PPO's;
        # a record without one may be a pair of transcripts.
        prompt_key = self.prompt_key or ("prompt" if "prompt" in record else None)
        prompt = None if prompt_key is None else self.field(record, prompt_key, where, "--prompt_key")
        margin = 0.0 if self.margin_key is None else self.margin(record, where)
        if self.apply_chat_template:
            # The conversation = the prompt's messages (a string prompt is one user turn)
            # followed by any turns that chosen/rejected carry before their final reply.
            turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt or []
            (chosen_turns, chosen_reply), (rejected_turns, rejected_reply) = (
                self.reply(chosen, self.chosen_key, where), self.reply(rejected, self.rejected_key, where))
            if chosen_turns != rejected_turns:
                raise DataError(f"{where}: chosen and rejected differ before their final reply")
            if not turns + chosen_turns:
                raise DataError(f"{where}: no prompt: pass prompt_key, or put the conversation before the "
                                "reply in chosen/rejected")
            prompt_ids = chat_prompt_ids(self.tokenizer, turns + chosen_turns, self.prompt_max_len, where)
            return [self.pair(prompt_ids, chosen_reply, rejected_reply, where, margin=margin,
                              conversation=turns + chosen_turns)]
        if prompt is not None:
            prompt_text, chosen_reply, rejected_reply = prompt, chosen, rejected
        else:  # Human/Assistant transcripts: the prompt is the shared part before the reply
            try:
                prompt_text, chosen_reply = split_transcript(chosen, f"{where}: {self.chosen_key!r}")
            except DataError as e:
                raise DataError(f"{e}, and no 'prompt' field (--prompt_key names another)") from None
            rejected_prompt, rejected_reply = split_transcript(rejected, f"{where}: {self.rejected_key!r}")
            if rejected_prompt != prompt_text:
                raise DataError(f"{where}: chosen and rejected have different conversations before the last "
                                f"{TRANSCRIPT_CUE!r}")
        return [self.pair(self.prompt(prompt_text), chosen_reply, rejected_reply, where, margin=margin)]

    @staticmethod
    def reply(value: str | list[dict], key: str, where: str) -> tuple[list[dict], str]:
        """(earlier turns, final reply text) of a response given as text or as messages."""
        if isinstance(value, str):
            return [], value
        if value[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message of {key!r} should be from 'assistant', "
                            f"got {value[-1]['role']!r}")
        return value[:-1], value[-1]["content"]

    def margin(self, record: dict, where: str) -> float:
        value = get_value(record, self.margin_key, where, "--margin_key")
        try:  # CSV values arrive as strings
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: {self.margin_key!r} should be a number, got {value!r}") from None

    # ---- DSP (Cheng et al. 2023) ---------------------------------------------------------
    def dsp(self, record: dict, where: str) -> list[PreferencePair]:
        query = get_text(record, "query", where)
        responses = get_typed(record, "responses", dict, where)
        texts = {name: get_text(responses, name, f"{where}: responses") for name in DSP_RESPONSES}
        # The same transcript form as DSP's converted files, so both give identical prompts.
        prompt = self.prompt(f"\n\nHuman: {query}{TRANSCRIPT_CUE}")
        return [self.pair(prompt, texts[self.domain], texts[other], f"{where}: {self.domain} > {other}")
                for other in DSP_RESPONSES if other != self.domain]

    def scored_list(self, record: dict, where: str) -> list[PreferencePair]:
        
        texts = get_typed(record, "text", list, where)
        scores = get_typed(record, "score", list, where)
        if len(texts) != len(scores) or len(texts) < 2:
            raise DataError(f"{where}: 'text' and 'score' should be lists of the same length >= 2, "
                            f"got {len(texts)} and {len(scores)}")
        if not all(isinstance(t, str) for t in texts):
            raise DataError(f"{where}: every 'text' entry should be a string")
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            raise DataError(f"{where}: every 'score' entry should be a number")
        split = [split_transcript(t, f"{where}: text[{i}]") for i, t in enumerate(texts)]
        if len({prompt for prompt, _ in split}) != 1:
            raise DataError(f"{where}: the texts have different conversations before the last {TRANSCRIPT_CUE!r}")
        ordered = ranking_pairs(scores)
        if not ordered:
            raise DataError(f"{where}: all scores are equal: no preference pair")
        prompt = self.prompt(split[0][0])
        return [self.pair(prompt, split[better][1], split[worse][1], f"{where}: text[{better}] > text[{worse}]")
                for better, worse in ordered]


def load_preference_pairs(
    dataset: str,
    tokenizer,
    split: str = "train",
    n: int | None = None,
    prompt_max_len: int = PROMPT_MAX_LEN,
    generate_max_len: int = RESPONSE_MAX_LEN,
    prompt_key: str | None = None,
    chosen_key: str = "chosen",
    rejected_key: str = "rejected",
    margin_key: str | None = None,
    apply_chat_template: bool = False,
    domain: str | None = None,
    on_bad_record: str = "error",
    seed: int = 0,
    summaries_per_post: int = 2,
) -> tuple[list[PreferencePair], BadRecords]:
    """Preference pairs from the built-in world (`dataset="synthetic"`, comparisons of the
    `split`, labeled by simulated labelers; with summaries_per_post = k > 2, all pairs
    among k summaries of each post, see `plus.world.make_comparisons`) or from a
    file in any format listed at the top of this section (a file is read whole; `split`
    and `summaries_per_post` apply to the world only).

    The format is recognized per record: DSP when `domain` is given; OpenAI comparisons
    when the record has "info" and "summaries"; DSP converted when it has "text" and
    "score" (and no `chosen_key`); otherwise `chosen_key` / `rejected_key`, with the
    prompt from `prompt_key` (by default a "prompt" field, where the record has one) or,
    without one, from Human/Assistant transcripts. `n` caps
    the number of pairs. Bad records raise `file:line: problem`, or are skipped and
    counted with on_bad_record="skip".
    """
    if summaries_per_post != 2 and dataset != "synthetic":
        raise DataError(f"summaries_per_post applies to the built-in world, not to {dataset}")
    if domain is not None and domain not in DSP_DOMAINS:
        raise DataError(f"unknown DSP domain {domain!r} (valid: {', '.join(DSP_DOMAINS)})")
    bad = BadRecords(on_bad_record)
    parse = _PreferenceParser(tokenizer, prompt_max_len, generate_max_len, prompt_key, chosen_key, rejected_key,
                              margin_key, apply_chat_template, domain)
    if dataset == "synthetic":
        if domain is not None:
            raise DataError("domain= selects a DSP domain; the synthetic world has none")
        if n is None:
            raise DataError("the synthetic world has endless comparisons: pass n, the number of pairs")
        from plus.world import World, make_comparisons

        pairs = []
        records = make_comparisons(World(seed), split, n, seed=seed, summaries_per_post=summaries_per_post)
        for i, record in enumerate(records):
            try:  # the world writes valid records, but two summaries may agree in their first
                pairs += parse.comparison(record, f"synthetic:{split}:{i}")  # generate_max_len tokens
            except DataError as e:
                bad.handle(e)
        return pairs, bad

    # Every record gives at least one pair, so n records are enough for n pairs.
    per_record = load_file_records(dataset, parse, bad, limit=n)
    pairs = [p for record_pairs in per_record for p in record_pairs]
    return pairs[:n], bad


