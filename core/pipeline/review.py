"""The review workflow: which clip next, what an annotator decides about it, and what is kept.

Every decision goes through `Catalog.save_review(..., expected_version=)`. When somebody
else saved the clip after it was shown, `ReviewConflict` carries both versions (theirs as
saved, mine as attempted) so the annotator chooses; nothing is overwritten silently.
Nothing is ever deleted either: undo and revert are new saves that restore an earlier state.

Overlap review (optional, `set_overlap(catalog, n)` with n > 1): each person's decision is an
append-only annotation; the clip's review is set when all n agree, or by a lead who resolves
the disagreement. `agreement()` reports Fleiss/Cohen kappa on accept-vs-reject and the
similarity of the captions people kept.
"""
from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from core.store.catalog import (REVIEW_STATUSES, Annotation, Caption, Catalog, Clip, ClipQuery, ConflictError,
                          Recording, Review)

ORDERS = {
    "pending": "Pending first (import order)",
    "low-confidence": "Lowest teacher confidence first",
    "high-confidence": "Highest teacher confidence first",
    "disagreement": "Student/teacher disagreement first",
    "random": "Random (seeded)",
}
SCOPES = {"todo": "Still to review (pending, then skipped)", "all": "All clips (pending first)"}
DECIDED = ("accepted", "edited", "rejected")
ACCEPTING = ("accepted", "edited")
GUIDELINES_KEY = "review.guidelines"
OVERLAP_KEY = "review.overlap"
CONSENSUS = "consensus"          # the annotator name recorded when n overlapping decisions agree

DEFAULT_GUIDELINES = """\
### Captioning guidelines
- **Accept** when the caption names the main sound sources correctly, even if it is plain.
- **Edit** when it is close: fix wrong sources, add what is clearly audible, remove what is not.
  Write one sentence, present tense, sources first ("a dog barks twice while cars pass").
- **Reject** when the clip is unusable (silence, clipping, several unrelated sounds cut mid-way)
  or when the caption is so wrong that fixing it means rewriting it; say why in the reason.
- **Skip** when unsure; skipped clips come back after the pending ones.
- Do not transcribe speech word for word; "a man speaks" is enough unless the words matter.
"""


# -- what an annotator looks at ----------------------------------------------------------------

@dataclass
class ReviewItem:
    clip: Clip
    recording: Recording
    review: Review
    caption: Caption | None               # current: the review's choice, else the newest
    captions: list[Caption]               # the whole append-only history, oldest first
    annotations: dict[str, Annotation] = field(default_factory=dict)   # overlap: person → newest decision

    @property
    def teacher_captions(self) -> list[Caption]:
        return [c for c in self.captions if c.origin != "annotator"]


def load_item(catalog: Catalog, clip_id: int, annotator: str | None = None) -> ReviewItem:
    """The clip with what a reviewer needs beside it.

    In overlap review a person sees their own last decision's caption, else the newest teacher
    caption, never a colleague's edit: judgements stay independent, which agreement assumes.
    """
    clip = catalog.get_clip(clip_id)
    review = catalog.get_review(clip_id)
    captions = catalog.captions(clip_id)
    by_id = {c.id: c for c in captions}
    annotations = catalog.current_annotations().get(clip_id, {}) if overlap(catalog) > 1 else {}
    current = by_id.get(review.caption_id) if review.caption_id is not None else None
    if overlap(catalog) > 1 and review.status == "pending":
        mine = annotations.get(annotator or "")
        teacher = [c for c in captions if c.origin != "annotator"]
        current = by_id.get(mine.caption_id) if mine and mine.caption_id else None
        current = current or (teacher[-1] if teacher else None)
    if current is None and captions:
        current = captions[-1]
    return ReviewItem(clip, catalog.get_recording(clip.recording_id), review, current, captions, annotations)


# -- the queue --------------------------------------------------------------------------------

def build_queue(catalog: Catalog, order: str = "pending", *, scope: str = "todo", seed: int = 0,
                annotator: str | None = None, scores: dict[int, float] | None = None) -> list[int]:
    """Clip ids in review order: pending first, then skipped, then (scope "all") decided ones.

    Within each group: import order, teacher confidence (clips without one last), student/teacher
    agreement `scores` (lowest first: see `disagreement_scores`), or a seeded shuffle.
    In overlap review, "todo" means clips this annotator has not decided that still need people.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    if order == "disagreement" and scores is None:
        raise ValueError("the disagreement order needs scores from a student model (disagreement_scores)")
    reviews = catalog.reviews()
    group = {"pending": 0, "skipped": 1}
    need = overlap(catalog)
    if need > 1 and annotator:
        decided = {cid: {who for who, a in people.items() if a.status in DECIDED}
                   for cid, people in catalog.current_annotations().items()}
        mine_skipped = {cid for cid, people in catalog.current_annotations().items()
                        if people.get(annotator) and people[annotator].status == "skipped"}

        def rank(cid: int, review: Review) -> int:
            if review.status != "pending" or annotator in decided.get(cid, set()):
                return 2
            if len(decided.get(cid, ())) >= need:
                return 2          # enough people judged it; waits for a lead
            return 1 if cid in mine_skipped else 0
    else:
        def rank(cid: int, review: Review) -> int:
            return group.get(review.status, 2)

    ranked = {cid: rank(cid, r) for cid, r in reviews.items()}
    ids = [cid for cid in reviews if scope == "all" or ranked[cid] < 2]
    if order == "random":
        shuffled = list(ids)
        random.Random(seed).shuffle(shuffled)
        position = {cid: i for i, cid in enumerate(shuffled)}
        return sorted(ids, key=lambda cid: (ranked[cid], position[cid]))
    if order == "disagreement":
        return sorted(ids, key=lambda cid: (ranked[cid], cid not in scores, scores.get(cid, 0.0), cid))
    if order in ("low-confidence", "high-confidence"):
        sign = 1.0 if order == "low-confidence" else -1.0
        conf = {cid: c.confidence for cid, c in catalog.current_captions(ids).items()}
        return sorted(ids, key=lambda cid: (ranked[cid], conf.get(cid) is None,
                                            sign * (conf.get(cid) or 0.0), cid))
    return sorted(ids, key=lambda cid: (ranked[cid], cid))


def still_todo(catalog: Catalog, clip_id: int, annotator: str | None = None) -> bool:
    """Whether the clip still waits for this annotator (a colleague may have decided it meanwhile)."""
    review = catalog.get_review(clip_id)
    if review.status not in ("pending", "skipped"):
        return False
    if overlap(catalog) > 1 and annotator:
        mine = catalog.current_annotations().get(clip_id, {}).get(annotator)
        return mine is None or mine.status not in DECIDED
    return True


def disagreement_scores(ws, clip_ids: Sequence[int], embedder, *, batch_size: int = 32,
                        progress: Callable[[int, int], None] | None = None,
                        cancel: threading.Event | None = None, use_index: bool = True) -> dict[int, float]:
    """Cosine between the student's audio embedding and its text embedding of the current caption.

    Low means the student hears something other than what the teacher wrote: review those first.
    `embedder` is any `core.models.embedder.Embedder`; clips without a caption get no score. Audio vectors
    come from the search index when there is one (clips it lacks get indexed, so search gains too).
    """
    captions = ws.catalog.current_captions(clip_ids)
    ids = [cid for cid in clip_ids if cid in captions]
    audio = _indexed_audio(ws, ids, embedder, progress, cancel) if use_index else {}
    scores: dict[int, float] = {}
    for start in range(0, len(ids), batch_size):
        if cancel is not None and cancel.is_set():
            break
        batch = ids[start:start + batch_size]
        missing = [cid for cid in batch if cid not in audio]
        if missing:
            audio.update(zip(missing, np.asarray(embedder.embed_audio([ws.load_clip(c) for c in missing]),
                                                 dtype=np.float32)))
        text = np.asarray(embedder.embed_text([captions[cid].text for cid in batch]), dtype=np.float32)
        for cid, t in zip(batch, text):
            scores[cid] = float(np.dot(audio[cid], t))
        if progress:
            progress(min(start + batch_size, len(ids)), len(ids))
    return scores


def _indexed_audio(ws, ids: Sequence[int], embedder, progress, cancel) -> dict[int, np.ndarray]:
    """Audio vectors read back from the Chroma index; {} when the index is not there or not reachable."""
    try:
        from core.pipeline import index
    except ImportError:
        return {}
    try:
        index.sync(ws, embedder, clip_ids=list(ids), captions=False, cancel=cancel,
                   progress=(lambda done, total, _: progress(done, total)) if progress else None)
        got, matrix = index.get_embeddings(ws, embedder, list(ids))
    except index.IndexUnavailable:
        return {}
    return dict(zip(got, matrix))


def active_embedder(ws):
    """The student search uses (the workspace's active one, else the shipped one) or None when there is none."""
    try:
        from core.models.registry import get_embedder
    except ImportError:          # the student package is optional for reviewing
        return None
    try:
        return get_embedder("active", ws)
    except (KeyError, FileNotFoundError):
        return None


# -- decisions ------------------------------------------------------------------------------------

@dataclass
class Decision:
    """What an annotator asked to save; kept whole so a conflict can show it and replay it."""
    clip_id: int
    status: str
    annotator: str
    caption_id: int | None = None
    new_text: str | None = None
    reason: str | None = None
    action: str | None = None


@dataclass
class Saved:
    review: Review                       # the clip's review after the save
    annotation: Annotation | None = None  # overlap review: the person's recorded decision
    message: str = ""


class ReviewConflict(Exception):
    """Somebody saved this clip after it was shown: both versions, for the annotator to choose."""

    def __init__(self, mine: Decision, theirs: Review, theirs_caption: Caption | None, note: str = ""):
        who = theirs.annotator or "someone"
        super().__init__(note or f"clip {mine.clip_id} was saved by {who} (version {theirs.version}) "
                                 "after you opened it")
        self.mine = mine
        self.theirs = theirs
        self.theirs_caption = theirs_caption

    def versions(self, catalog: Catalog) -> dict:
        """Both sides in plain words, as the UI and the API show them."""
        mine_text = self.mine.new_text
        if mine_text is None and self.mine.caption_id is not None:
            mine_text = catalog.get_caption(self.mine.caption_id).text
        return {
            "clip_id": self.mine.clip_id,
            "theirs": {"annotator": self.theirs.annotator, "status": self.theirs.status,
                       "caption": self.theirs_caption.text if self.theirs_caption else None,
                       "reason": self.theirs.reason, "updated": self.theirs.updated,
                       "version": self.theirs.version},
            "mine": {"annotator": self.mine.annotator, "status": self.mine.status, "caption": mine_text,
                     "reason": self.mine.reason, "action": self.mine.action or self.mine.status},
        }


def _conflict(catalog: Catalog, decision: Decision, current: Review, note: str = "") -> ReviewConflict:
    caption = catalog.get_caption(current.caption_id) if current.caption_id is not None else None
    return ReviewConflict(decision, current, caption, note)


def decide(catalog: Catalog, decision: Decision, expected_version: int) -> Saved:
    """Save one decision; in overlap review it is recorded for this person and may settle the clip."""
    if not decision.annotator or not decision.annotator.strip():
        raise ValueError("say who you are (annotator name) before reviewing")
    if decision.status not in REVIEW_STATUSES:
        raise ValueError(f"unknown review status {decision.status!r}")
    need = overlap(catalog)
    if need > 1 and decision.action != "resolve":
        note = catalog.add_annotation(decision.clip_id, decision.annotator, decision.status,
                                      caption_id=decision.caption_id, new_text=decision.new_text,
                                      reason=decision.reason, action=decision.action)
        review = _try_consensus(catalog, decision.clip_id, need)
        people = sum(a.status in DECIDED for a in catalog.current_annotations().get(decision.clip_id, {}).values())
        msg = (f"{decision.status} recorded for {decision.annotator} ({people}/{need} people)"
               + (f"; all agree → clip {review.status}" if review.status != "pending" else ""))
        return Saved(review, note, msg)
    return _save(catalog, decision, expected_version)


def _save(catalog: Catalog, decision: Decision, expected_version: int) -> Saved:
    """The clip's own review (not one person's overlap annotation); a concurrent save is a ReviewConflict."""
    try:
        review = catalog.save_review(decision.clip_id, status=decision.status, expected_version=expected_version,
                                     annotator=decision.annotator, caption_id=decision.caption_id,
                                     new_text=decision.new_text, reason=decision.reason, action=decision.action)
    except ConflictError as exc:
        raise _conflict(catalog, decision, exc.current) from None
    return Saved(review, None, f"clip {decision.clip_id} {review.status} by {decision.annotator}")


def requeue(catalog: Catalog, clip_id: int, expected_version: int, *, annotator: str | None = None,
            caption_id: int | None = None, reason: str | None = None, action: str = "send-to-review") -> Saved:
    """Put a clip back in everyone's queue (status pending), keeping its caption choice.

    Unlike `reset`, it sets the clip's review also in overlap review, and needs no signed-in
    name (the Map tab of an app without accounts): it is a pointer back to the work, not a verdict.
    """
    return _save(catalog, Decision(clip_id, "pending", annotator, caption_id=caption_id, reason=reason,
                                   action=action), expected_version)


def keep_mine(catalog: Catalog, conflict: ReviewConflict) -> Saved:
    """Save my version over theirs, knowingly (theirs stays in the history). May conflict again."""
    return decide(catalog, conflict.mine, conflict.theirs.version)


def _current_caption(catalog: Catalog, clip_id: int, annotator: str | None = None) -> Caption | None:
    return load_item(catalog, clip_id, annotator).caption


def accept(catalog: Catalog, clip_id: int, annotator: str, expected_version: int,
           caption_id: int | None = None) -> Saved:
    """Accept the shown caption (or `caption_id`) as the clip's description."""
    caption = (catalog.get_caption(caption_id) if caption_id is not None
               else _current_caption(catalog, clip_id, annotator))
    if caption is None:
        raise ValueError("this clip has no caption to accept yet: write one and save it as an edit")
    status = "edited" if caption.origin == "annotator" else "accepted"
    return decide(catalog, Decision(clip_id, status, annotator, caption_id=caption.id, action="accept"),
                  expected_version)


def edit(catalog: Catalog, clip_id: int, annotator: str, text: str, expected_version: int) -> Saved:
    """Save a corrected caption (appended, with the annotator as its author) and choose it."""
    text = " ".join((text or "").split())
    if not text:
        raise ValueError("the edited caption is empty; reject the clip instead if it has nothing to describe")
    current = _current_caption(catalog, clip_id, annotator)
    if current is not None and current.text == text:   # unchanged: an accept, not a new caption
        return accept(catalog, clip_id, annotator, expected_version, current.id)
    return decide(catalog, Decision(clip_id, "edited", annotator, new_text=text, action="edit"), expected_version)


def reject(catalog: Catalog, clip_id: int, annotator: str, expected_version: int,
           reason: str | None = None) -> Saved:
    caption = _current_caption(catalog, clip_id, annotator)
    return decide(catalog, Decision(clip_id, "rejected", annotator, caption_id=caption.id if caption else None,
                                    reason=(reason or "").strip() or None, action="reject"), expected_version)


def skip(catalog: Catalog, clip_id: int, annotator: str, expected_version: int) -> Saved:
    caption = _current_caption(catalog, clip_id, annotator)
    return decide(catalog, Decision(clip_id, "skipped", annotator, caption_id=caption.id if caption else None,
                                    action="skip"), expected_version)


def reset(catalog: Catalog, clip_id: int, annotator: str, expected_version: int) -> Saved:
    caption = _current_caption(catalog, clip_id, annotator)
    return decide(catalog, Decision(clip_id, "pending", annotator, caption_id=caption.id if caption else None,
                                    action="reset"), expected_version)


def revert(catalog: Catalog, clip_id: int, caption_id: int, annotator: str, expected_version: int) -> Saved:
    """Make an earlier caption of this clip the chosen one again (a new save; history keeps the rest)."""
    caption = catalog.get_caption(caption_id)
    if caption.clip_id != clip_id:
        raise ValueError(f"caption {caption_id} belongs to clip {caption.clip_id}, not {clip_id}")
    status = "edited" if caption.origin == "annotator" else "accepted"
    return decide(catalog, Decision(clip_id, status, annotator, caption_id=caption_id, action="revert"),
                  expected_version)


def _undo_target(actions: Sequence[str]) -> int | None:
    """Index of the newest action an undo reverses: each earlier undo cancels one action before it."""
    owed = 0
    for i in range(len(actions) - 1, -1, -1):
        if actions[i] == "undo":
            owed += 1
        elif owed:
            owed -= 1
        else:
            return i
    return None


def undo(catalog: Catalog, clip_id: int, annotator: str, expected_version: int) -> Saved:
    """Undo the newest not-yet-undone action on this clip by saving the state before it.

    Refuses (ReviewConflict) when that action was somebody else's: undo never takes back
    another person's work; they can revert from the history if they mean to.
    """
    if overlap(catalog) > 1:
        return _undo_annotation(catalog, clip_id, annotator)
    events = catalog.review_events(clip_id)
    target = _undo_target([e.action for e in events])
    current = catalog.get_review(clip_id)
    if target is None:
        raise ValueError(f"nothing to undo on clip {clip_id}")
    event = events[target]
    if event.annotator != annotator:
        raise _conflict(catalog, Decision(clip_id, event.before.get("status", "pending"), annotator, action="undo"),
                        current, f"the last change to clip {clip_id} was made by {event.annotator}, not you; "
                                 "revert from the history if you mean to change it")
    before = event.before
    caption_id = before.get("caption_id")
    if caption_id is None:
        # never reviewed before: the current caption then was the newest one no review wrote
        written = {e.after.get("caption_id") for e in events if e.after.get("caption_id") != e.before.get("caption_id")}
        older = [c.id for c in catalog.captions(clip_id) if not (c.origin == "annotator" and c.id in written)]
        caption_id = older[-1] if older else None
    return decide(catalog, Decision(clip_id, before.get("status", "pending"), annotator, caption_id=caption_id,
                                    reason=before.get("reason"), action="undo"), expected_version)


def _undo_annotation(catalog: Catalog, clip_id: int, annotator: str) -> Saved:
    mine = [a for a in catalog.annotations(clip_id) if a.annotator == annotator]
    target = _undo_target([a.action for a in mine])
    if target is None:
        raise ValueError(f"nothing of yours to undo on clip {clip_id}")
    previous = mine[target - 1] if target > 0 else None
    note = catalog.add_annotation(clip_id, annotator, previous.status if previous else "pending",
                                  caption_id=previous.caption_id if previous else None,
                                  reason=previous.reason if previous else None, action="undo")
    return Saved(catalog.get_review(clip_id), note, f"undid your {mine[target].action} on clip {clip_id}")


# -- history ---------------------------------------------------------------------------------------

def history(catalog: Catalog, clip_id: int) -> list[dict]:
    """Every change to the clip's review (who, when, before, after), oldest first, with caption texts."""
    texts = {c.id: c.text for c in catalog.captions(clip_id)}
    rows = []
    for e in catalog.review_events(clip_id):
        rows.append({"when": e.created, "who": e.annotator or "", "action": e.action,
                     "before": f"{e.before.get('status', 'pending')}: {texts.get(e.before.get('caption_id'), '')}",
                     "after": f"{e.after.get('status', 'pending')}: {texts.get(e.after.get('caption_id'), '')}",
                     "reason": e.after.get("reason") or ""})
    for a in catalog.annotations(clip_id):
        rows.append({"when": a.created, "who": a.annotator, "action": f"overlap {a.action}", "before": "",
                     "after": f"{a.status}: {texts.get(a.caption_id, '')}", "reason": a.reason or ""})
    return sorted(rows, key=lambda r: r["when"])


# -- progress, guidelines, overlap setting ------------------------------------------------------------

@dataclass
class ReviewProgress:
    total: int
    by_status: dict[str, int]
    annotator: str
    mine: dict[str, int]                       # clips whose current review this person saved, by status
    mine_today: int                            # actions today (UTC)
    by_annotator: dict[str, dict[str, int]]    # everyone: status → clips

    @property
    def reviewed(self) -> int:
        return sum(n for s, n in self.by_status.items() if s in DECIDED)

    @property
    def pending(self) -> int:
        return self.by_status.get("pending", 0)


def progress(catalog: Catalog, annotator: str | None = None) -> ReviewProgress:
    stats = catalog.stats()
    tallies = catalog.review_tallies()
    if overlap(catalog) > 1:       # people's own decisions count, not the settled reviews
        tallies = {}
        for people in catalog.current_annotations().values():
            for who, a in people.items():
                if a.status != "pending":
                    tallies.setdefault(who, {}).setdefault(a.status, 0)
                    tallies[who][a.status] += 1
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    today = catalog.event_tallies(since=midnight).get(annotator or "", 0)
    if overlap(catalog) > 1:
        today = sum(a.created >= midnight for a in catalog.annotations() if a.annotator == annotator)
    by_status = {s: stats.by_status.get(s, 0) for s in REVIEW_STATUSES}
    # a clip someone reset or undid back to pending is nobody's work any more
    tallies = {who: {s: n for s, n in counts.items() if s != "pending"} for who, counts in tallies.items()}
    return ReviewProgress(stats.clips, by_status, annotator or "", tallies.get(annotator or "", {}), today,
                          {who: n for who, n in tallies.items() if who and n})


def guidelines(catalog: Catalog) -> str:
    return catalog.get_value(GUIDELINES_KEY) or DEFAULT_GUIDELINES


def set_guidelines(catalog: Catalog, markdown: str) -> str:
    catalog.set_value(GUIDELINES_KEY, markdown.strip() + "\n" if markdown.strip() else "")
    return guidelines(catalog)


def overlap(catalog: Catalog) -> int:
    """How many people must judge each clip (1 = plain review)."""
    try:
        return max(1, int(catalog.get_value(OVERLAP_KEY) or 1))
    except ValueError:
        return 1


def set_overlap(catalog: Catalog, n: int) -> int:
    if not 1 <= int(n) <= 10:
        raise ValueError("overlap must be between 1 and 10 people per clip")
    catalog.set_value(OVERLAP_KEY, str(int(n)))
    return int(n)


# -- overlap: consensus, agreement, lead resolution ---------------------------------------------------

def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()).strip(" .") == " ".join(b.lower().split()).strip(" .")


def _try_consensus(catalog: Catalog, clip_id: int, need: int) -> Review:
    """Settle the clip when `need` people decided and all agree (same verdict, same caption)."""
    review = catalog.get_review(clip_id)
    if review.status != "pending":
        return review
    decided = [a for a in catalog.current_annotations().get(clip_id, {}).values() if a.status in DECIDED]
    if len(decided) < need:
        return review
    if all(a.status == "rejected" for a in decided):
        reasons = "; ".join(sorted({a.reason for a in decided if a.reason}))
        status, caption_id = "rejected", decided[0].caption_id
    elif all(a.status in ACCEPTING for a in decided):
        texts = [catalog.get_caption(a.caption_id).text if a.caption_id else "" for a in decided]
        if not all(_same_text(texts[0], t) for t in texts):
            return review
        caption = catalog.get_caption(decided[0].caption_id)
        status, caption_id, reasons = ("edited" if caption.origin == "annotator" else "accepted"), caption.id, ""
    else:
        return review
    try:
        return catalog.save_review(clip_id, status=status, expected_version=review.version, annotator=CONSENSUS,
                                   caption_id=caption_id, reason=reasons or None, action=CONSENSUS)
    except ConflictError as exc:      # a lead settled it meanwhile; their save stands
        return exc.current


@dataclass
class Disagreement:
    clip_id: int
    decisions: dict[str, dict]             # person → {status, caption, reason}
    similarity: float | None               # lowest caption similarity among people who accepted
    review: Review


@dataclass
class Agreement:
    items: int                             # clips judged by two people or more
    annotators: list[str]
    fleiss_kappa: float | None
    cohen_kappa: dict[str, tuple[float | None, int]]   # "a / b" → (kappa, shared clips)
    caption_similarity: float | None       # mean pairwise cosine (MiniLM) of captions people accepted
    disagreements: list[Disagreement]


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa from an [items, categories] matrix of rater counts (raters per item may vary)."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts.sum(axis=1) >= 2]
    if len(counts) == 0:
        return None
    n = counts.sum(axis=1)
    p_item = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / n.sum()
    expected = float((p_cat ** 2).sum())
    if expected >= 1.0:
        return None               # everyone used one category: agreement is undefined
    return float((p_item.mean() - expected) / (1.0 - expected))


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float | None:
    if len(a) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score
    if len(set(a) | set(b)) < 2:
        return None
    value = cohen_kappa_score(list(a), list(b))
    return None if np.isnan(value) else float(value)


def agreement(catalog: Catalog, *, encode: Callable[[Sequence[str]], np.ndarray] | None = None,
              similarity_threshold: float = 0.8) -> Agreement:
    """Agreement over clips that two or more people decided (accept/edit = accept, reject = reject).

    A clip is a disagreement when verdicts differ, or when people accepted captions whose
    MiniLM cosine falls below `similarity_threshold`.
    """
    if encode is None:
        from core.models.text_encoder import encode
    current = catalog.current_annotations()
    judged = {cid: {who: a for who, a in people.items() if a.status in DECIDED}
              for cid, people in current.items()}
    judged = {cid: people for cid, people in judged.items() if len(people) >= 2}
    annotators = sorted({who for people in judged.values() for who in people})
    texts = {}
    for people in judged.values():
        for a in people.values():
            if a.caption_id is not None and a.caption_id not in texts:
                texts[a.caption_id] = catalog.get_caption(a.caption_id).text
    vectors = {}
    if texts:
        ids = list(texts)
        vectors = dict(zip(ids, encode([texts[i] for i in ids])))

    counts, sims_all, disagreements = [], [], []
    for cid, people in judged.items():
        verdicts = [int(a.status in ACCEPTING) for a in people.values()]
        counts.append([len(verdicts) - sum(verdicts), sum(verdicts)])
        kept = [a.caption_id for a in people.values() if a.status in ACCEPTING and a.caption_id in vectors]
        pair_sims = [float(np.dot(vectors[x], vectors[y])) for x, y in itertools.combinations(kept, 2)]
        sims_all += pair_sims
        low = min(pair_sims) if pair_sims else None
        if len(set(verdicts)) > 1 or (low is not None and low < similarity_threshold):
            disagreements.append(Disagreement(
                cid, {who: {"status": a.status, "caption": texts.get(a.caption_id, ""), "reason": a.reason or ""}
                      for who, a in people.items()}, low, catalog.get_review(cid)))
    cohen = {}
    for x, y in itertools.combinations(annotators, 2):
        shared = [cid for cid, people in judged.items() if x in people and y in people]
        a = [int(judged[c][x].status in ACCEPTING) for c in shared]
        b = [int(judged[c][y].status in ACCEPTING) for c in shared]
        cohen[f"{x} / {y}"] = (cohen_kappa(a, b), len(shared))
    return Agreement(len(judged), annotators, fleiss_kappa(np.array(counts)) if counts else None, cohen,
                     float(np.mean(sims_all)) if sims_all else None, disagreements)


def resolve(catalog: Catalog, clip_id: int, lead: str, expected_version: int, *, take: str | None = None,
            text: str | None = None, status: str | None = None, reason: str | None = None) -> Saved:
    """A lead settles an overlap clip: take one person's decision (`take`), or write the caption (`text`)."""
    if take:
        chosen = catalog.current_annotations().get(clip_id, {}).get(take)
        if chosen is None:
            raise ValueError(f"{take} has no decision on clip {clip_id}")
        decision = Decision(clip_id, chosen.status, lead, caption_id=chosen.caption_id,
                            reason=chosen.reason, action="resolve")
    elif text and text.strip():
        decision = Decision(clip_id, "edited", lead, new_text=" ".join(text.split()), action="resolve")
    elif status:
        caption = _current_caption(catalog, clip_id)
        decision = Decision(clip_id, status, lead, caption_id=caption.id if caption else None,
                            reason=reason, action="resolve")
    else:
        raise ValueError("choose whose decision to keep, or write the caption")
    return decide(catalog, decision, expected_version)


# -- bulk actions ----------------------------------------------------------------------------------------

BULK_ACTIONS = {
    "accept": "Accept teacher captions at or above a confidence",
    "reject": "Reject the clips matching the filter",
    "reset": "Reset the clips matching the filter to pending",
}


@dataclass
class BulkFilter:
    text: str = ""                     # substring of file name or caption
    source: str | None = None
    status: str | None = None          # review status; bulk accept defaults to pending
    min_confidence: float | None = None
    max_confidence: float | None = None
    teacher: str | None = None


@dataclass
class BulkPreview:
    action: str
    filter: BulkFilter
    targets: list[tuple[int, int, int | None]]     # (clip id, review version seen, caption id)
    sample: list[dict]                              # a few rows to show before applying

    @property
    def count(self) -> int:
        return len(self.targets)


@dataclass
class BulkResult:
    applied: int
    conflicts: list[int]               # changed by somebody since the preview: left alone, listed
    cancelled: bool = False

    def summary(self, action: str) -> str:
        text = f"{action}: {self.applied} clips saved"
        if self.conflicts:
            text += (f"; {len(self.conflicts)} changed by someone since the preview and were left alone "
                     f"(clips {', '.join(map(str, self.conflicts[:20]))}{' …' if len(self.conflicts) > 20 else ''})")
        return text + (" — cancelled" if self.cancelled else "")


def preview_bulk(catalog: Catalog, action: str, flt: BulkFilter | None = None, sample_size: int = 10) -> BulkPreview:
    """Which clips a bulk action would change, with the versions seen now (the apply checks them)."""
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    flt = flt or BulkFilter()
    status = flt.status or ("pending" if action == "accept" else None)
    rows, _ = catalog.clip_rows(ClipQuery(text=flt.text, source=flt.source or None, status=status,
                                          limit=10**9))
    targets, sample = [], []
    for row in rows:
        cap = row.caption
        conf = cap.confidence if cap else None
        if action == "accept" and (cap is None or cap.origin != "teacher"):
            continue
        if action == "reset" and row.review.status == "pending":
            continue
        if action == "reject" and row.review.status == "rejected":
            continue
        if flt.teacher and (cap is None or cap.teacher != flt.teacher):
            continue
        if flt.min_confidence is not None and (conf is None or conf < flt.min_confidence):
            continue
        if flt.max_confidence is not None and (conf is None or conf > flt.max_confidence):
            continue
        targets.append((row.clip.id, row.review.version, cap.id if cap else None))
        if len(sample) < sample_size:
            sample.append({"clip": row.clip.id, "file": row.recording.original_name,
                           "status": row.review.status, "confidence": conf, "caption": cap.text if cap else ""})
    return BulkPreview(action, flt, targets, sample)


def apply_bulk(catalog: Catalog, preview: BulkPreview, annotator: str, *, reason: str | None = None,
               progress: Callable[[int, int], None] | None = None,
               cancel: threading.Event | None = None) -> BulkResult:
    """Apply a previewed bulk action clip by clip; a clip changed since the preview is skipped and listed."""
    if not annotator or not annotator.strip():
        raise ValueError("say who you are (annotator name) before a bulk action")
    status = {"accept": "accepted", "reject": "rejected", "reset": "pending"}[preview.action]
    applied, conflicts = 0, []
    for i, (clip_id, version, caption_id) in enumerate(preview.targets):
        if cancel is not None and cancel.is_set():
            return BulkResult(applied, conflicts, cancelled=True)
        try:
            catalog.save_review(clip_id, status=status, expected_version=version, annotator=annotator,
                                caption_id=caption_id, reason=reason if preview.action == "reject" else None,
                                action=f"bulk {preview.action}")
            applied += 1
        except ConflictError:
            conflicts.append(clip_id)
        if progress and (i % 50 == 0 or i == preview.count - 1):
            progress(i + 1, preview.count)
    return BulkResult(applied, conflicts)
