"""How the gold judge reads a text: typed tokens (words, age tags, amounts, durations,
numbers), word classes for its language model, phrase text for matching fact keys, the
relations a phrase names, and what a post itself mentions.

The text is lowercased; "24F", "(24F)" and "24 year old woman" are one age tag,
"$2,000", "$2k" and "2k" one amount, "3 years", "3 yrs" and "three years" one duration.
"""

from __future__ import annotations

import functools
import re

from plus.world.tables import NAMES, OTHER_RELATION_WORDS, RELATIONS
from plus.world.templates import NUMBER_WORDS, REGISTER_PAIR


_TOKEN = re.compile(
    r"(?P<yo>\b\d{1,2}[ -]years?[ -]old[ ]+(?:woman|girl|lady|man|guy)\b)"
    r"|(?P<tag>\(\s*\d{1,2}\s*[mf]\s*\)|\b\d{1,2}[mf]\b)"
    r"|(?P<money>\$\s?\d[\d,]*(?:\.\d+)?\s?k?\b|\b\d+(?:\.\d+)?k\b)"
    r"|(?P<dur>\b(?:\d+|" + "|".join(NUMBER_WORDS) + r")\s*(?:years?|yrs?|months?|weeks?|days?)\b)"
    r"|(?P<num>\b\d[\d,]*(?:\.\d+)?\b)"
    r"|(?P<word>[a-z]+(?:'[a-z]+)?)"
    r"|(?P<punct>[^\sa-z0-9]+)"
)
_DUR_PARTS = re.compile(r"(\d+|" + "|".join(NUMBER_WORDS) + r")\s*([ymwd])")
_UNIT = {"y": "year", "m": "month", "w": "week", "d": "day"}
NAMES_LOWER = {n.lower() for names in NAMES.values() for n in names}
# relation -> its forms as word tuples, main relations and the others
RELATION_FORMS: dict[str, tuple[tuple[str, ...], ...]] = {
    **{r: tuple(tuple(form.split())
                for form in REGISTER_PAIR.sub(lambda m: m.group(1) + "|" + m.group(2), s).split("|"))
       for r, (_, s) in RELATIONS.items()},
    **{r: tuple(tuple(f.split()) for f in forms) for r, forms in OTHER_RELATION_WORDS.items()},
}
_FORMS_LONGEST_FIRST = sorted(((" ".join(f), r) for r, forms in RELATION_FORMS.items() for f in forms),
                              key=lambda x: -len(x[0].split()))
_RELATION_WORDS = {w for forms in RELATION_FORMS.values() for form in forms for w in form}


def mentioned_relations(text: str) -> set[str]:
    """Relations named in a phrase text, longest forms first so that 'best friend' is
    the best friend and not also a friend."""
    found = set()
    for words, relation in _FORMS_LONGEST_FIRST:
        phrase = f" {words} "
        if phrase in text:
            found.add(relation)
            text = text.replace(phrase, " _ ")
    return found


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def tokenize(text: str) -> list[tuple[str, object]]:
    """Typed tokens: ("w", word), ("tag", (age, gender)), ("money", dollars),
    ("dur", (n, unit)), ("num", value), ("|", None) for punctuation. Possessives of
    relations and names are split off ("boss's" -> "boss", "'s")."""
    tokens: list[tuple[str, object]] = []
    for m in _TOKEN.finditer(text.lower().replace("\u2019", "'")):
        kind, s = m.lastgroup, m.group()
        if kind == "yo":
            age = int(re.match(r"\d+", s).group())
            tokens.append(("tag", (age, "F" if re.search(r"woman|girl|lady", s) else "M")))
        elif kind == "tag":
            digits = re.search(r"(\d+)\s*([mf])", s)
            tokens.append(("tag", (int(digits.group(1)), digits.group(2).upper())))
        elif kind == "money":
            value = _number(re.search(r"\d[\d,]*(?:\.\d+)?", s).group())
            tokens.append(("money", value * 1000 if s.rstrip().endswith("k") else value))
        elif kind == "dur":
            number, unit = _DUR_PARTS.match(s).groups()
            value = int(number) if number.isdigit() else NUMBER_WORDS.index(number)
            tokens.append(("dur", (value, _UNIT[unit])))
        elif kind == "num":
            tokens.append(("num", _number(s)))
        elif kind == "word":
            if s.endswith("'s") and (s[:-2] in _RELATION_WORDS or s[:-2] in NAMES_LOWER):
                tokens += [("w", s[:-2]), ("w", "'s")]
            else:
                tokens.append(("w", s))
        elif not tokens or tokens[-1][0] != "|":
            tokens.append(("|", None))
    return tokens


def word_classes(tokens: list[tuple[str, object]]) -> list[str]:
    """Tokens as the judge's language model sees them: words, with names, numbers and
    tags replaced by their class and punctuation by '|'."""
    out = []
    for kind, value in tokens:
        if kind == "w":
            out.append("<name>" if value in NAMES_LOWER else value)
        else:
            out.append({"|": "|", "tag": "<tag>", "money": "<money>", "dur": "<dur>", "num": "<num>"}[kind])
    return out


def phrase_text(tokens: list[tuple[str, object]]) -> str:
    """' word word | <money> word ' for phrase matching; tags are left out so that
    'paid me (24F) back' still says 'paid me back'."""
    return " " + " ".join(c for c, (kind, _) in zip(word_classes(tokens), tokens) if kind != "tag") + " "


@functools.lru_cache(maxsize=4096)
def post_mentions(title: str, body: str) -> dict:
    """What the post itself mentions: tags, numbers, relations, names, fact keys."""
    tokens = tokenize(title + " . " + body)
    text = phrase_text(tokens)
    return {
        "text": text,
        "tags": {v for k, v in tokens if k == "tag"},
        "durs": {v for k, v in tokens if k == "dur"},
        "money": {v for k, v in tokens if k == "money"},
        "numbers": ({v for k, v in tokens if k in ("num", "money")}
                    | {float(v[0]) for k, v in tokens if k in ("tag", "dur")}),
        "relations": mentioned_relations(text),
        "names": {v for k, v in tokens if k == "w" and v in NAMES_LOWER},
    }
