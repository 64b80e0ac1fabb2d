"""How search results are put before people: a readable title per clip, the weak-match floor, and
example queries drawn from the workspace's own words. Nothing here imports Gradio (ui/search.py and
the API use it)."""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from itertools import zip_longest
from typing import NamedTuple
from pathlib import PurePosixPath

from core.pipeline import index
from core.store.workspace import Workspace

# Scores below this are shown as weak matches. Measured with the shipped student on the bundled demo
# (82 clips; each of its 73 labels as a query, top 10): hits of the queried label score a median 0.41,
# the others 0.18 (90th percentile 0.34). At 0.35, 91 % of wrong hits read as weak and 71 % of right ones
# do not (0.30 keeps no more right ones; 0.40 keeps 55 %). "rain on a tin roof" or "thunder", which the
# demo lacks, come out all weak. A trained model spreads scores differently; re-measure when it is active.
WEAK_MATCH = 0.35

_UUID = re.compile(r"[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}", re.I)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])")


def is_weak(score: float, floor: float = WEAK_MATCH) -> bool:
    return score < floor


def readable_name(name: str) -> str:
    """A file name as a person would say it: 'audio/jt_booth_sounds__GlassSmash__GlassSmash01.flac'
    → 'Glass Smash 01' (folder, extension, dataset prefix and ids dropped)."""
    stem = PurePosixPath(str(name).replace("\\", "/")).stem
    stem = _UUID.sub("", stem.split("__")[-1])
    words = _CAMEL.sub(" ", stem).replace("_", " ").replace("-", " ")
    return " ".join(words.split())


def clip_title(name: str, label: str | None = None, clip_id: int | None = None) -> str:
    """The title of a result card: the recording's label when it has one, else its readable name."""
    title = (label or "").strip().replace("_", " ") or readable_name(name)
    return title or (f"clip {clip_id}" if clip_id is not None else "untitled clip")


def example_queries(ws: Workspace, n: int = 8) -> list[str]:
    """Queries worth a click on this workspace: the most frequent tags of the published captions
    (what anyone may read) and the most frequent recording labels, in turn; distinct, at most `n`.

    A tag that is an AudioSet class is offered as the teacher would say it ("Bark" → "a dog barking":
    a sentence is what the models match best), specific classes before generic parents ("Animal",
    "Music"), and never a filler or a room ("Silence", "Inside, small room": true of half the clips,
    so they make dull demos); any other tag (an LLM teacher's own words) is offered as it is."""
    counts: Counter = Counter()
    published = getattr(ws.catalog, "published_captions", None)
    for caption in (published() if published else {}).values():
        counts.update(index.top_tags(caption.tags))
    said = [q for q in map(_as_query, (tag for tag, _ in counts.most_common())) if q is not None]
    specific, generic = _in_turn([q for q in said if not q.generic]), [q.text for q in said if q.generic]
    labels = _labels_across_sources(ws)
    # a specific tag and a label in turn: the teacher's words beside the names people gave the sounds
    picked = [q for pair in zip_longest(specific, labels) for q in pair if q is not None] + generic
    seen: list[str] = []
    for query in picked:
        if query.lower() not in (s.lower() for s in seen):
            seen.append(query)
    return seen[:n]


@lru_cache(maxsize=1)
def _audioset_classes() -> dict[str, tuple[str, int]]:
    from core.models import yamnet
    return {name.lower(): (name, i) for i, name in enumerate(yamnet.class_names())}


class _Query(NamedTuple):
    text: str
    group: str          # AudioSet branch ("animal", "music", …), "" for a tag that is not a class
    generic: bool


def _as_query(tag: str) -> _Query | None:
    """How to offer one tag as a query, or None for a filler / room class (example_queries)."""
    known = _audioset_classes().get(tag.lower())
    if known is None:
        return _Query(tag, "", False)
    from core.models.teachers.vocabulary import entry
    e = entry(*known)
    if e.filler or e.context:
        return None
    return _Query(e.gerund() or tag, e.group, e.generic)


def _in_turn(queries: list[_Query]) -> list[str]:
    """Most frequent first, but one from each AudioSet branch in turn (a voice, an animal, a tool, an
    instrument rather than five kinds of paper), as the labels below are taken from each source."""
    groups: dict[str, list[str]] = {}
    for q in queries:
        groups.setdefault(q.group, []).append(q.text)
    queues = list(groups.values())
    return [queue[turn] for turn in range(max(map(len, queues), default=0)) for queue in queues if turn < len(queue)]


def _labels_across_sources(ws: Workspace) -> list[str]:
    """Recording labels taken in turn from each source, each source's most frequent first (so the demo
    offers an animal, a tool, an instrument and a digit rather than four instruments)."""
    per_source: dict[str, Counter] = {}
    for rec in ws.catalog.recordings():
        label = str(rec.meta.get("label") or "").strip().replace("_", " ")
        if label:
            per_source.setdefault(rec.source, Counter())[label] += 1
    queues = [[label for label, _ in counts.most_common()]
              for _, counts in sorted(per_source.items(), key=lambda item: -sum(item[1].values()))]
    out: list[str] = []
    for turn in range(max(map(len, queues), default=0)):
        out += [queue[turn] for queue in queues if turn < len(queue)]
    return out
