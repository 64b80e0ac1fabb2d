"""Turn sound events, descriptors and a transcript into one short, natural caption.

    events   per-patch AudioSet probabilities → families of near-synonyms (Dog/Bark/Bow-wow = one
             dog), generic parents dropped when a child of their branch is heard, filler (Silence,
             Inside small room, Sound effect…) kept out unless it is the whole story
    timing   how the main event unfolds over the patches and the level envelope: steady, twice,
             repeatedly, only at the start…
    roles    a second sound that lasts the whole clip is background ("over traffic rumbling"),
             one that overlaps the main event is concurrent ("while water runs from a tap")
    wording  one of several templates, chosen by a seed derived from the clip, so the same clip always
             gets the same words and a dataset gets varied sentences

Bump VERSION whenever the output for the same input changes: it is the embedded teacher's
"prompt", so the captioning cache misses and clips get re-captioned.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import numpy as np

from core.models.teachers.vocabulary import Entry, entry

VERSION = "composer-v3"

MIN_EVENT = 0.10            # pooled score below which nothing is said about a class
SECOND_RATIO = 0.2          # other events must reach this share of the first one's score
GENERIC_WEIGHT = 0.7        # generic parents rank below specific classes of similar score


@dataclass
class Scene:
    labels: list[str]
    patch_probs: np.ndarray            # [P, C] per 0.96 s patch, hop 0.48 s
    descriptors: object                # descriptors.Descriptors
    transcript: object = None          # speech.Transcript | None


@dataclass
class Composed:
    caption: str
    tags: dict = field(default_factory=dict)
    confidence: float = 0.0
    events: list = field(default_factory=list)      # family names said, strongest first


@dataclass
class Event:
    entry: Entry
    score: float
    track: np.ndarray                  # per patch: best probability over the family's members
    members: list[str]

    @property
    def coverage(self) -> float:
        return float(self.active.mean())

    @property
    def active(self) -> np.ndarray:
        peak = float(self.track.max())
        return self.track >= max(0.5 * peak, 0.08)

    @property
    def runs(self) -> int:
        a = self.active.astype(np.int8)
        return int(np.sum(np.diff(np.concatenate([[0], a])) == 1))

    @property
    def centre(self) -> float:
        """Where in the clip the event sits, 0 (start) … 1 (end)."""
        w = self.track / max(float(self.track.sum()), 1e-9)
        return float(w @ np.linspace(0, 1, len(self.track))) if len(self.track) > 1 else 0.5


def pooled(patch_probs: np.ndarray) -> np.ndarray:
    """YAMNet clip score: 0.5·(mean + max) over patches."""
    return 0.5 * (patch_probs.mean(axis=0) + patch_probs.max(axis=0))


# -- events ------------------------------------------------------------------------------------
def detect_events(scene: Scene) -> tuple[list[Event], list[tuple[Entry, float]]]:
    """(events strongest first, context places with scores)."""
    scores = pooled(scene.patch_probs)
    order = [int(i) for i in np.argsort(-scores)[:20] if scores[i] >= MIN_EVENT]
    families: dict[str, list[int]] = {}
    context: list[tuple[Entry, float]] = []
    for i in order:
        e = entry(scene.labels[i], i)
        if e.context:
            context.append((e, float(scores[i])))
        elif not e.filler:
            families.setdefault(e.family, []).append(i)
    events = []
    for fam, members in families.items():
        best = members[0]
        # name a family by its most specific member that is nearly as strong as the best one
        specific = [m for m in members if not entry(scene.labels[m], m).generic and scores[m] >= 0.4 * scores[best]]
        chosen = specific[0] if specific else best
        events.append(Event(entry(scene.labels[chosen], chosen), float(scores[best]),
                            scene.patch_probs[:, members].max(axis=1), [scene.labels[m] for m in members]))
    # drop generic parents when a specific class of the same branch is heard
    specific_groups = {ev.entry.group for ev in events if not ev.entry.generic}
    events = [ev for ev in events if not (ev.entry.generic and ev.entry.group in specific_groups)]
    events.sort(key=lambda ev: -ev.score * (GENERIC_WEIGHT if ev.entry.generic else 1.0))
    return events, context


# -- timing ------------------------------------------------------------------------------------
def timing(ev: Event, desc, rng: random.Random, main: bool) -> str:
    """An adverbial for how the event unfolds ('' when nothing useful can be said)."""
    n = len(ev.track)
    if desc.duration < 1.5 or n < 3:
        return ""
    if ev.entry.group == "music":           # notes are not events to count: say only where it sits
        if ev.coverage <= 0.45 and (ev.centre < 0.3 or ev.centre > 0.7):
            return "at the start" if ev.centre < 0.3 else "at the end"
        return ""
    if main and desc.impulsive and 2 <= desc.bursts <= 12:
        count = desc.bursts
    elif ev.coverage >= 0.75:
        if desc.stationary:
            return rng.choice(["steadily", "continuously", "throughout", "steadily"])
        return rng.choice(["throughout", "", ""])
    else:
        count = ev.runs
    if count >= 3:
        return rng.choice(["repeatedly", "several times", "again and again", "repeatedly"])
    if count == 2:
        return rng.choice(["twice", "twice", "two times"])
    if ev.coverage <= 0.45:
        if ev.centre < 0.3:
            return rng.choice(["at the start", "briefly at first"])
        if ev.centre > 0.7:
            return rng.choice(["at the end", "near the end"])
        return rng.choice(["once", "briefly"])
    return ""


def loudness_word(desc, rng: random.Random) -> str:
    if desc.loudness == "very quiet":
        return rng.choice(["faintly", "in the distance", "faintly"])
    if desc.loudness == "quiet" and rng.random() < 0.4:
        return "softly"
    if desc.loudness == "loud" and rng.random() < 0.5:
        return "loudly"
    return ""


# -- wording -----------------------------------------------------------------------------------
def _with_adverbs(phrase: str, *adverbs: str) -> str:
    extra = " ".join(a for a in adverbs if a)
    return f"{phrase} {extra}" if extra else phrase


def clause(ev: Event, adverbs: tuple[str, ...] = (), standalone: bool = False) -> str:
    """'a dog barks twice'; a source-ambiguous sound is 'a thud' alone, 'a thud is heard twice' in a
    sentence (adverbs, or `standalone` after 'while' / 'then')."""
    if ev.entry.has_sentence:
        return _with_adverbs(ev.entry.sentence(), *adverbs)
    noun = ev.entry.noun
    if any(adverbs) or standalone:
        verb = "are" if noun.endswith("s") and not noun.startswith(("a ", "an ")) else "is"
        return _with_adverbs(f"{noun} {verb} heard", *adverbs)
    return noun


def _music_line(main: Event, genre: Event | None) -> str | None:
    """'a piano plays classical music' when an instrument and a genre are both heard."""
    if genre is None or main.entry.group != "music" or main.entry.verb != "play" or main.entry.generic:
        return None
    return f"{main.entry.sentence()} {genre.entry.noun}"


def speaker(scene: Scene, events: list[Event], singing: bool = False) -> str:
    """Who is speaking or singing, from YAMNet's child classes and the voice's median pitch."""
    if any(ev.entry.name.startswith("Child") for ev in events[:2]):
        return "a child"
    pitch = getattr(scene.descriptors, "pitch_hz", None)
    low, high = (180, 250) if singing else (155, 185)      # sung notes sit higher than speech
    if pitch:
        if pitch < low:
            return "a man"
        if pitch > high:
            return "a woman"
    return "someone"


def usable_transcript(t) -> str | None:
    """The words to quote, or None when Whisper was unsure or heard no real words."""
    if t is None:
        return None
    text = re.sub(r"\s+", " ", t.text).strip(" .,!?-\"'")
    if len(re.sub(r"[^A-Za-z0-9]", "", text)) < 2 or t.no_speech > 0.6 or t.confidence < 0.3:
        return None
    words = text.split()
    if len(words) > 14:                              # keep captions short: quote the start
        text = " ".join(words[:12]) + "…"
    return text[0].lower() + text[1:] if not text[:2].isupper() else text


def compose(scene: Scene, seed: int = 0) -> Composed:
    rng = random.Random(seed)
    desc = scene.descriptors
    scores = pooled(scene.patch_probs)
    tags = {scene.labels[i]: round(float(scores[i]), 3) for i in np.argsort(-scores)[:12] if scores[i] >= MIN_EVENT}
    events, context = detect_events(scene)
    genre = next((ev for ev in events if ev.entry.family == "genre"), None)
    sayable = [ev for ev in events if ev.entry.family != "genre" or ev is events[0]]

    if not sayable:
        return Composed(_finish(_nothing(scene, context, rng)), tags, 0.3, [])

    sayable = foreground_first(sayable)
    main = sayable[0]
    rest = [ev for ev in sayable[1:] if not ev.entry.generic and ev.score >= max(MIN_EVENT, SECOND_RATIO * main.score)]
    others = rest[:2]
    confidence = float(min(1.0, main.score))
    said = [ev.entry.family for ev in [main, *others]]

    words = usable_transcript(scene.transcript) if main.entry.family in ("speech", "crowd", "shout") else None
    if words:
        line = _speech_line(scene, events, words, others, context, rng)
        confidence = float(min(1.0, 0.5 * main.score + 0.5 * scene.transcript.confidence))
        return Composed(_finish(line), tags, confidence, said)

    main, *others = [_with_speaker(ev, scene, events) for ev in [main, *others]]
    adv = timing(main, desc, rng, main=True)
    loud = loudness_word(desc, rng) if not adv or rng.random() < 0.3 else ""
    music = _music_line(main, genre)
    first = _with_adverbs(music, loud) if music and rng.random() < 0.7 else clause(main, (adv, loud))
    if not others:
        if main.entry.has_sentence and rng.random() < 0.25:
            first = f"the sound of {_with_adverbs(main.entry.gerund(), adv)}"
        return Composed(_finish(first), tags, confidence, said)
    line = _join(first, main, others[0], rng)
    if len(others) > 1:
        third = others[1]
        if " with " not in line:
            line += rng.choice([f", with {third.entry.gerund()}", f", with {third.entry.gerund()} too"])
        else:
            line += f", and {clause(third, standalone=True)}"
    return Composed(_finish(line), tags, confidence, said)


def foreground_first(events: list[Event]) -> list[Event]:
    """A steady background scores high on the clip average; an intermittent sound that peaks as high
    is the foreground and leads the caption ('a dog barks twice over traffic rumbling')."""
    if len(events) < 2:
        return events
    bg, fg = events[0], events[1]
    if (bg.coverage >= 0.75 and fg.coverage < 0.6 and float(fg.track.max()) >= 0.9 * float(bg.track.max())
            and fg.score >= 0.6 * bg.score and not fg.entry.generic):
        return [fg, bg, *events[2:]]
    return events


def _join(first: str, main: Event, second: Event, rng: random.Random) -> str:
    """Main clause + a second sound: background, sequence, or at the same time."""
    if second.coverage >= 0.7 and (main.coverage < 0.7 or second.score < main.score):
        bg = second.entry.gerund()
        return rng.choice([f"{first} over {bg}", f"{first}, with {bg} in the background",
                           f"{first} against {bg}"])
    if second.centre - main.centre > 0.35:
        return rng.choice([f"{first}, then {clause(second, standalone=True)}",
                           f"{first}, followed by {second.entry.gerund()}"])
    return rng.choice([f"{first} while {clause(second, standalone=True)}", f"{first} and {clause(second, standalone=True)}",
                       f"{first} as {clause(second, standalone=True)}"])


def _speech_line(scene: Scene, events: list[Event], words: str, others: list[Event], context, rng) -> str:
    who = speaker(scene, events)
    verb = rng.choice(["says", "says", "speaks the words"]) if len(words.split()) > 1 else "says"
    line = f'{who} {verb} "{words}"'
    if others:
        bg = others[0].entry.gerund()
        line += rng.choice([f" over {bg}", f" with {bg} in the background"])
    elif scene.descriptors.loudness in ("quiet", "very quiet") or any(c.family == "room" and s > 0.4 for c, s in context):
        line += rng.choice([" in a quiet room", "", " indoors"])
    return line


def _with_speaker(ev: Event, scene: Scene, events: list[Event]) -> Event:
    """'someone sings' → 'a woman sings' where the voice's pitch is clear."""
    if ev.entry.subject != "someone" or ev.entry.group != "human":
        return ev
    who = speaker(scene, events, singing=ev.entry.family == "singing")
    return ev if who == "someone" else _with_subject(ev, who)


def _with_subject(ev: Event, subject: str) -> Event:
    return Event(Entry(**{**ev.entry.__dict__, "subject": subject}), ev.score, ev.track, ev.members)


def _nothing(scene: Scene, context: list[tuple[Entry, float]], rng: random.Random) -> str:
    """When no sound event stands out: silence, noise, or a place is the whole story."""
    desc = scene.descriptors
    place = context[0][0].noun if context else ""
    if desc.loudness == "very quiet" or desc.peak_db < -50:
        base = rng.choice(["near silence", "almost silence", "silence with faint background noise"])
    elif desc.stationary:
        base = rng.choice(["a steady background noise", "constant low noise", "a steady hum of noise"])
    elif desc.impulsive:
        base = rng.choice(["scattered clicks and knocks", "a few indistinct knocks"])
    else:
        base = rng.choice(["indistinct noise", "muffled indistinct sounds"])
    return f"{base} {place}" if place else base


def _finish(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = text.replace(" ,", ",")
    return text
