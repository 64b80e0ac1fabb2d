"""What the catalogue hands out: typed records (recordings, clips, captions, reviews, runs …),
the review statuses, the SQL rules for a clip's current and published caption, and row → record.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.store.catalog_schema import absolute_path

REVIEW_STATUSES = ("pending", "accepted", "edited", "rejected", "skipped")
DECIDED = ("accepted", "edited", "rejected")          # a verdict was given
ACCEPTING = ("accepted", "edited")                  # the clip keeps a caption


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ConflictError(RuntimeError):
    """Someone else saved this review first; `current` is what they saved."""

    def __init__(self, current: "Review"):
        super().__init__(f"clip {current.clip_id} was changed by {current.annotator or 'someone'} "
                         f"(version {current.version})")
        self.current = current


@dataclass
class Recording:
    id: int
    sha256: str
    original_name: str
    source: str
    duration: float
    sample_rate: int
    meta: dict = field(default_factory=dict)
    file_sha256: str | None = None
    created: str = ""


@dataclass
class Clip:
    id: int
    recording_id: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Caption:
    id: int
    clip_id: int
    text: str
    origin: str                         # teacher | annotator | import
    teacher: str | None = None          # backend name, e.g. "embedded"
    model: str | None = None            # model id inside the backend
    prompt: str | None = None           # prompt or composer version
    annotator: str | None = None
    tags: dict = field(default_factory=dict)   # tag -> score
    confidence: float | None = None
    cache_key: str | None = None
    created: str = ""


@dataclass
class Review:
    clip_id: int
    status: str = "pending"
    caption_id: int | None = None
    annotator: str | None = None
    reason: str | None = None
    version: int = 0
    updated: str | None = None


@dataclass
class ReviewEvent:
    id: int
    clip_id: int
    annotator: str | None
    action: str
    before: dict
    after: dict
    created: str


@dataclass
class Annotation:
    """One person's decision on a clip in overlap review; append-only, the newest per person counts."""
    id: int
    clip_id: int
    annotator: str
    status: str
    caption_id: int | None
    reason: str | None
    action: str
    created: str


@dataclass
class ClipRow:
    """A clip joined with what the tables show next to it."""
    clip: Clip
    recording: Recording
    caption: Caption | None
    review: Review


# SQL for a clip's caption id, given the clip `c` and its review `rv` (LEFT JOINed):
# current: the one the review chose, else the newest;
CURRENT_CAPTION = "COALESCE(rv.caption_id, (SELECT MAX(id) FROM captions WHERE clip_id = c.id))"
# published (core/auth/published.py): the review's choice once accepted or edited, nothing once rejected, else the
# newest caption that no annotator wrote (an annotator's text is published only by a decided review).
_NEWEST_TEACHER = "(SELECT MAX(id) FROM captions WHERE clip_id = c.id AND origin != 'annotator')"
PUBLISHED_CAPTION = f"""(CASE WHEN rv.status IN ('accepted', 'edited') THEN COALESCE(rv.caption_id, {_NEWEST_TEACHER})
    WHEN rv.status = 'rejected' THEN NULL ELSE {_NEWEST_TEACHER} END)"""


@dataclass
class ClipQuery:
    text: str = ""                      # substring of file name or caption
    source: str | None = None
    status: str | None = None           # a review status, or "uncaptioned"
    recording_id: int | None = None
    limit: int = 50
    offset: int = 0
    published: bool = False             # caption = the published one (what visitors read), not the current one


@dataclass
class ModelRecord:
    id: str
    path: str
    kind: str = "student"
    run_id: int | None = None
    metrics: dict = field(default_factory=dict)
    active: bool = False
    created: str = ""


@dataclass
class Run:
    id: int
    status: str
    config: dict
    dir: str
    pid: int | None
    model_id: str | None
    error: str | None
    created: str
    updated: str


@dataclass
class Evaluation:
    id: int
    model: str
    data: str
    fingerprint: str
    metrics: dict
    created: str


@dataclass
class Stats:
    recordings: int
    clips: int
    hours: float
    captioned: int
    reviewed: int
    by_status: dict


def _recording(r: sqlite3.Row) -> Recording:
    return Recording(r["id"], r["sha256"], r["original_name"], r["source"], r["duration"],
                     r["sample_rate"], json.loads(r["meta"]), r["file_sha256"], r["created"])


def _clip(r: sqlite3.Row) -> Clip:
    return Clip(r["id"], r["recording_id"], r["start"], r["end"])


def _caption(r: sqlite3.Row) -> Caption:
    return Caption(r["id"], r["clip_id"], r["text"], r["origin"], r["teacher"], r["model"], r["prompt"],
                   r["annotator"], json.loads(r["tags"]), r["confidence"], r["cache_key"], r["created"])


def _review(r: sqlite3.Row | None, clip_id: int) -> Review:
    if r is None:
        return Review(clip_id)
    return Review(r["clip_id"], r["status"], r["caption_id"], r["annotator"], r["reason"], r["version"], r["updated"])


def _annotation(r: sqlite3.Row) -> Annotation:
    return Annotation(r["id"], r["clip_id"], r["annotator"], r["status"], r["caption_id"], r["reason"],
                      r["action"], r["created"])


def _run(r: sqlite3.Row, root: Path) -> Run:
    return Run(r["id"], r["status"], json.loads(r["config"]), absolute_path(r["dir"], root), r["pid"],
               r["model_id"], r["error"], r["created"], r["updated"])
