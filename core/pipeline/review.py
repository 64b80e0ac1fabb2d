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

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

from core.pipeline.review_bulk import (BULK_ACTIONS, BulkFilter, BulkPreview, BulkResult,  # noqa: F401  (re-exported)
                                       apply_bulk, preview_bulk)
from core.pipeline.review_overlap import (CONSENSUS, OVERLAP_KEY, Agreement,  # noqa: F401  (re-exported)
                                          Disagreement, agreement, cohen_kappa, fleiss_kappa, overlap,
                                          set_overlap, try_consensus)
from core.pipeline.review_queue import (ORDERS, SCOPES, build_queue, disagreement_scores,  # noqa: F401  (re-exported)
                                        still_todo)
from core.store.catalog import (ACCEPTING, DECIDED, REVIEW_STATUSES,  # noqa: F401  (re-exported)
                                Annotation, Caption, Catalog, Clip, ConflictError, Recording, Review)

GUIDELINES_KEY = "review.guidelines"

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


def active_embedder(ws):
    """The student search uses (the workspace's active one, else the shipped one) or None when there is none."""
    from core.models import registry
    try:
        return registry.get_embedder("active", ws)
    except (registry.ModelUnavailable, OSError):     # no student anywhere, or its folder unreadable
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
        review = try_consensus(catalog, decision.clip_id, need)
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


# -- progress, guidelines ------------------------------------------------------------------------------

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


# -- overlap: lead resolution -------------------------------------------------------------------

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
