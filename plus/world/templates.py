"""Realizing the tables' templates: register pairs, pronouns, age tags, quantities, slots.

The template mini-language of every string in tables.py and groups.py:

    [casual|formal]  a register variant: casual posts mostly take the left side, formal
                     posts always the right side; summaries take the side of their register.
    {he} {him} {his} {He} {His}  the other party's pronouns
    {rel}            the other party's relation word ("bf" / "boyfriend", ...)
    {ntag} {otag}    age+gender tags, "(24F)" for the narrator and the other party
    {qty}            the duration ("3 years") or amount ("$2,000")

Summary clauses also use {I} ("I (24F)" or "I"), {me}, {them} ("my bf (26M)" or
"my bf"), {their} ("my bf's (26M)"), and {qty} / {qty|FORMAT} where FORMAT places the
quantity at "#" (" of #" by default for durations): the quantity clause disappears
when the summary leaves the quantity out (references.py).
"""

from __future__ import annotations

import random
import re


# "[casual|formal]", the two sides as groups 1 and 2
REGISTER_PAIR = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")
# "{qty}" or "{qty|FORMAT}" in a summary clause, FORMAT as group 1
QTY_SLOT = re.compile(r"\{qty(?:\|([^}]*))?\}")
# a duration up to twelve may be written as a word ("three years")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")


def registered(text: str, casual: bool, rng: random.Random | None = None) -> str:
    """Resolve every [casual|formal] pair. Summaries (rng None) use their register's side
    only; casual posts (rng given) mix in the formal side 20% of the time, as people do."""
    def pick(m: re.Match) -> str:
        use_casual = casual and (rng is None or rng.random() < 0.8)
        return m.group(1) if use_casual else m.group(2)

    return REGISTER_PAIR.sub(pick, text)


def pronouns(gender: str) -> dict[str, str]:
    he, him, his = ("he", "him", "his") if gender == "M" else ("she", "her", "her")
    return {"he": he, "him": him, "his": his, "He": he.capitalize(), "His": his.capitalize()}


def age_tag(age: int, gender: str) -> str:
    """The tag people put after a person on Reddit: "(24F)"."""
    return f"({age}{gender})"


def quantity_form(q: dict, casual: bool, rng: random.Random) -> dict:
    """How one post writes its quantity: '3 years' / '3 yrs' / 'three years', or
    '$2,000' / '$2k' / '2k'. Drawn once per post and kept in its facts: the reference
    TL;DR copies the post's form, as people copy the numbers they read."""
    v = q["value"]
    if q["kind"] == "amount":
        short = casual and v >= 1000 and v % 500 == 0
        return {"k": ("k" if rng.random() < 0.3 else "$k") if short else None}
    return {"yrs": casual and q["unit"] == "year" and rng.random() < 0.6,
            "word": v <= 12 and rng.random() < 0.25}


def quantity_text(q: dict, form: dict) -> str:
    """The quantity `q` written in `form` (see quantity_form); a form that does not fit
    the value (a word for 13, '2k' for $750) falls back to the plain form."""
    v = q["value"]
    if q["kind"] == "amount":
        if form.get("k") and v >= 1000 and v % 500 == 0:
            return ("$" if form["k"] == "$k" else "") + f"{v / 1000:g}k"
        return f"${v:,}"
    unit = q["unit"] + ("" if v == 1 else "s")
    if form.get("yrs") and q["unit"] == "year":
        unit = "yr" if v == 1 else "yrs"
    number = NUMBER_WORDS[v] if form.get("word") and v <= 12 else str(v)
    return f"{number} {unit}"


def fill(template: str, slots: dict[str, str], casual: bool, rng: random.Random | None = None) -> str:
    """Resolve the register pairs of `template`, then fill its slots."""
    return registered(template, casual, rng).format_map(slots)


def capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:]
