"""How to say each AudioSet class in a caption.

One row per class the composer should be able to name well, in `vocabulary.txt` beside this module:

    display name | subject | verb phrase (base form) | family | flags | noun phrase

- subject + verb give a sentence ("a dog" + "bark" → "a dog barks"); with no subject the class is a
  source-ambiguous sound and is named by its noun phrase ("a thud", default: the verb's -ing form).
- family groups near-synonyms (Dog, Bark, Bow-wow, Yip → dog): only the strongest member is said.
- flags: g = generic parent (dropped when a more specific class of its group is heard),
         p = plural subject, f = filler (never said unless it is the whole story),
         c = context (room / outdoors), said as a place, not as a sound.
Classes not listed fall back to their display name (see `entry`).
The groups below are the AudioSet top-level branches, by class index (YAMNet keeps the ontology order).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

GROUPS = [  # (first index, last index, group)
    (0, 66, "human"), (67, 131, "animal"), (132, 276, "music"), (277, 293, "nature"),
    (294, 347, "vehicle"), (348, 381, "domestic"), (382, 397, "alarm"), (398, 411, "mechanism"),
    (412, 419, "tools"), (420, 430, "explosion"), (431, 437, "material"), (438, 450, "liquid"),
    (451, 493, "misc"), (494, 520, "ambience"),
]

# the table itself is data, kept beside this module: one row per class, in the format above
TABLE = (Path(__file__).with_name("vocabulary.txt")).read_text(encoding="utf-8")

BARE_GENRES = {"opera", "jazz", "blues", "funk", "disco", "techno", "reggae", "ska", "flamenco", "grunge",
               "heavy metal", "punk rock", "progressive rock", "rock and roll", "psychedelic rock", "afrobeat",
               "rhythm and blues", "bluegrass", "dubstep", "drum and bass", "electronica", "beatboxing",
               "a capella", "lullaby", "trance music", "salsa music"}

# one-syllable verbs ending consonant-vowel-consonant double the last letter: whir → whirring, cut → cutting
_DOUBLES = re.compile(r"[^aeiou]*[aeiou][^aeiouwxy]")


@dataclass(frozen=True)
class Entry:
    name: str
    index: int
    subject: str
    verb: str
    family: str
    group: str
    plural: bool = False
    generic: bool = False
    filler: bool = False
    context: bool = False
    noun: str = ""               # how to name the event without a verb ("a thud", "a dog barking")

    @property
    def has_sentence(self) -> bool:
        return bool(self.subject and self.verb)

    def sentence(self) -> str:
        """'a dog barks'; source-ambiguous sounds fall back to their noun phrase."""
        if not self.has_sentence:
            return self.noun
        return f"{self.subject} {self.verb if self.plural else third_person(self.verb)}"

    def gerund(self) -> str:
        """'a dog barking' (for 'over ...', 'with ... in the background')."""
        if self.noun:
            return self.noun
        return f"{self.subject} {present_participle(self.verb)}"


def _inflect(verb: str, form) -> str:
    """Inflect the first word and each verb after ' and ' ('open and close' → 'opens and closes')."""
    parts = verb.split(" and ")
    out = []
    for i, part in enumerate(parts):
        head, _, rest = part.partition(" ")
        if i == 0 or head not in NOT_VERBS:
            head = form(head)
        out.append(head + (" " + rest if rest else ""))
    return " and ".join(out)


NOT_VERBS = {"shut", "pans"}      # words after 'and' that stay as they are ('slide open and shut')


def _third(head: str) -> str:
    if head.endswith(("s", "sh", "ch", "x", "z")) or (head.endswith("o") and head[-2:-1] not in "aeiou"):
        return head + "es"
    if head.endswith("y") and head[-2:-1] not in "aeiou":
        return head[:-1] + "ies"
    return head + "s"


def _ing(head: str) -> str:
    if _DOUBLES.fullmatch(head):
        return head + head[-1] + "ing"
    if head.endswith("ie"):
        return head[:-2] + "ying"
    if head.endswith("e") and not head.endswith(("ee", "ye", "oe")):
        return head[:-1] + "ing"
    return head + "ing"


def third_person(verb: str) -> str:
    return _inflect(verb, _third)


def present_participle(verb: str) -> str:
    return _inflect(verb, _ing)


def group_of(index: int) -> str:
    for first, last, name in GROUPS:
        if first <= index <= last:
            return name
    return "misc"


@lru_cache(maxsize=1)
def _rows() -> dict[str, tuple[str, ...]]:
    rows = {}
    for line in TABLE.strip().splitlines():
        cells = [c.strip() for c in line.split("|")]
        cells += [""] * (6 - len(cells))
        rows[cells[0]] = tuple(cells)
    return rows


def _plain_name(name: str) -> str:
    return name.split(",")[0].split("(")[0].strip().lower()


@lru_cache(maxsize=1024)
def entry(name: str, index: int = -1) -> Entry:
    """How to say AudioSet class `name` (display name as in YAMNet's class map)."""
    row = _rows().get(name)
    group = group_of(index)
    if row is None:                      # genres and the rare rest: "<name>" as a plain noun phrase
        plain = _plain_name(name)
        if group == "music":         # a genre: named, never the sentence's subject ("a piano plays jazz")
            noun = plain if ("music" in plain or plain in BARE_GENRES) else f"{plain} music"
            return Entry(name, index, subject="", verb="", family="genre", group=group, generic=True, noun=noun)
        return Entry(name, index, subject="", verb="", family=plain, group=group, noun=f"the sound of {plain}")
    _, subject, verb, family, flags, noun = row
    if subject == "something":           # say these by their noun phrase, never "something ..."
        subject = ""
    e = Entry(name, index, subject=subject, verb=verb, family=family or _plain_name(name), group=group,
              plural="p" in flags, generic="g" in flags, filler="f" in flags, context="c" in flags, noun=noun)
    if not e.noun and not e.subject and e.verb:
        e = Entry(**{**e.__dict__, "noun": present_participle(e.verb)})
    return e
